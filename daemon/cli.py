"""The `voxpipe` command: serve, say, submit, status, split, voice, keys, bench, cluster, config check|sample."""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from pathlib import Path
from typing import Callable

from voxpipe import __version__


def _serve(args: argparse.Namespace) -> int:
    from voxpipe.config import ConfigError, load_config, validate
    from voxpipe.daemon.supervisor import run_supervisor

    try:
        config = load_config(Path(args.config) if args.config else None)
        if args.endpoint:
            config.endpoint = args.endpoint
        if args.engine:
            config.worker.engine = args.engine
        if args.precision:
            config.worker.precision = args.precision
        if args.workers is not None:
            config.worker.count = args.workers
        if args.voices_dir:
            config.voices_dir = args.voices_dir
        if args.http is not None:
            config.http.bind = args.http
        if args.metrics_port is not None:
            config.metrics_port = args.metrics_port
        validate(config)
    except ConfigError as exc:
        print(f"voxpipe serve: config: {exc}", file=sys.stderr)
        return 2
    return run_supervisor(config)


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    from voxpipe.config import PRECISIONS

    parser.add_argument("--config", help="TOML config file")
    parser.add_argument("--endpoint", help="client endpoint (ipc://PATH or tcp://HOST:PORT)")
    parser.add_argument("--engine", choices=["onnx", "torch", "tensorrt", "null"])
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="engine precision (default fp32); int8: the onnx engine runs an int8 vocoder, "
                             "whose error can be audible (docs/int8.md)")
    parser.add_argument("--workers", type=int, help="synthesis workers on CPU (default: cores / threads)")
    parser.add_argument("--voices-dir", help="directory of extra voices (overrides the config)")
    parser.add_argument("--http", metavar="HOST:PORT",
                        help="serve the HTTP gateway (OpenAI speech API, GPT-SoVITS /tts, a page at /) "
                             "on HOST:PORT; PORT alone binds 127.0.0.1; '' turns it off")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics (0 = off; "
                             "the config's metrics_address picks another address)")


def _config_check(args: argparse.Namespace) -> int:
    from voxpipe.config import ConfigError, load_config

    try:
        load_config(Path(args.file))
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # the message starts with the file's name
        return 1
    print(f"{args.file}: ok")
    return 0


def _config_sample(args: argparse.Namespace) -> int:
    from voxpipe.config_sample import SAMPLE

    sys.stdout.write(SAMPLE)
    return 0


def _lazy(module: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    """A command whose module is imported only when it is the one run."""
    def configure(parser: argparse.ArgumentParser) -> None:
        importlib.import_module(module).configure_parser(parser)

    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(module).run(args)
    return configure, run


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only the `selected` command's module is imported (start-up stays
    fast and one command's optional dependencies never break another)."""
    parser = argparse.ArgumentParser(prog="voxpipe", description="Text-to-speech serving daemon.")
    parser.add_argument("--version", action="version", version=f"voxpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[str, Callable, Callable]] = {
        "serve": ("run the daemon", _configure_serve, _serve),
        "say": ("synthesize text through the daemon", *_lazy("voxpipe.daemon.commands.say")),
        "submit": ("synthesize every line of a file", *_lazy("voxpipe.daemon.commands.submit")),
        "status": ("show the daemon's processes, queues and voices", *_lazy("voxpipe.daemon.commands.status")),
        "split": ("show the chunks the frontend would make", *_lazy("voxpipe.daemon.commands.split")),
        "voice": ("voice helpers: write a random-weight test voice", *_lazy("voxpipe.daemon.commands.voice")),
        "keys": ("CURVE keys for tcp:// endpoints", *_lazy("voxpipe.daemon.commands.keys")),
        "bench": ("benchmark the daemon against piper in one run; bench gsv|soak|overload|firstbyte: the others",
                  *_lazy("voxpipe.bench.run")),
        "cluster": ("a fleet of daemons on Ray Serve: a local fleet, its benchmark", *_lazy("voxpipe.daemon.cluster.cli")),
    }
    for name, (help_text, configure, run) in commands.items():
        command = sub.add_parser(name, help=help_text)
        if name == selected:
            configure(command)
        command.set_defaults(handler=run)
    config = sub.add_parser("config", help="configuration helpers")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file")
    check.set_defaults(handler=_config_check)
    sample = config_sub.add_parser("sample", help="print a commented config with every key at its default")
    sample.set_defaults(handler=_config_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    selected = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(selected).parse_args(argv)
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # here, so that a reader that went away is caught below
    except BrokenPipeError:
        # The reader of stdout stopped (`| head`): end quietly, as Unix tools do.
        _silence_stdout()
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 128 + signal.SIGINT
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
