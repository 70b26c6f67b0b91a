"""`voxpipe say`: synthesize text through the daemon to a file or to stdout.

Only argparse is imported at the top: numpy, soundfile and the client library load when
the command runs, so `--help` and argument errors answer at once."""
from __future__ import annotations

import argparse
import sys
import time

from voxpipe.daemon.commands.audio_out import FORMATS


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", help="text to say, or - for stdin")
    parser.add_argument("-f", "--file", help="read the text from a file")
    parser.add_argument("-o", "--output", default=None,
                        help="output file (.wav, .flac, .ogg, .pcm), a device such as /dev/null, or - for "
                             "stdout (default: voxpipe.wav on a terminal, else stdout)")
    parser.add_argument("--format", choices=FORMATS,
                        help="audio format (default: from the file's extension, else wav; raw 16-bit PCM on stdout)")
    parser.add_argument("--voice", default="joe")
    parser.add_argument("--endpoint")
    parser.add_argument("--stream", action="store_true", help="write audio as it arrives")
    parser.add_argument("--engine", help="runtime for the voice (onnx, torch, tensorrt)")
    parser.add_argument("--seed", type=int)
    add_family_options(parser)
    parser.add_argument("--policy", help="text cut policy (punctuation, sentences, length, none, cut0..cut5)")
    parser.add_argument("--ref-audio", metavar="FILE",
                        help="GPT-SoVITS voices: speak from this reference clip (3-10 s; sent to the daemon)")
    parser.add_argument("--prompt-text", help="what the reference clip says (with --ref-audio)")
    parser.add_argument("--prompt-lang", help="the language of --prompt-text (default: the voice's)")
    parser.add_argument("--aux-ref-audio", metavar="FILE", action="append", default=[],
                        help="more clips whose timbre is fused in (v1-v2ProPlus voices; repeatable)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--timeline", action="store_true",
                        help="debug: print where the request's time went (frontend plan, queue, engine windows, "
                             "merger, hand-offs, socket)")
    parser.add_argument("--words", metavar="FILE.json",
                        help='also write each word\'s timing: [{"word", "start", "end"}, ...] in seconds')


def read_text(args: argparse.Namespace) -> str:
    from voxpipe.daemon.commands.textin import read_stdin, read_text_file

    if args.file:
        return read_text_file(args.file)
    if args.text in (None, "-"):
        return read_stdin()
    return args.text


FLAG_ALIASES = {"speaker_id": ("--speaker",)}  # older spellings kept working
FAMILY_DEST = "family_option_"  # argparse dests of the families' options: no clash with the command's own


def add_family_options(parser: argparse.ArgumentParser) -> None:
    """A flag per request option the model families declare (stages/families/*/options.py),
    typed, with its choices and help: a family's new option is a flag here with no edit."""
    from voxpipe.stages import families

    group = parser.add_argument_group("voice options (each voice's family takes its own)")
    for name, (spec, takers) in families.declared_options().items():
        flags = (f"--{name.replace('_', '-')}", *FLAG_ALIASES.get(name, ()))
        kind = {bool: _bool, int: int, float: float}.get(spec.kind, str)
        where = "" if len(takers) == len(families.names()) else f"{', '.join(takers)} voices: "
        bounds = f" [{spec.low}, {spec.high}]" if spec.low is not None or spec.high is not None else ""
        group.add_argument(*flags, dest=FAMILY_DEST + name, type=kind, choices=spec.choices, default=None,
                           metavar=None if spec.choices else name.upper(),
                           help=f"{where}{spec.doc or name}{bounds}".replace("%", "%%"))


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def options(args: argparse.Namespace) -> dict:
    """Options as given; those left out (None) take the voice's defaults, and each voice's
    family checks the ones it takes (a Piper option sent to a GPT-SoVITS voice: bad_option)."""
    given = {k[len(FAMILY_DEST):]: v for k, v in vars(args).items() if k.startswith(FAMILY_DEST)}
    return {**given, "seed": args.seed, "policy": args.policy, "engine": args.engine, "timeline": args.timeline}


def reference(args: argparse.Namespace):
    """The request's own reference clip (files read by the client library), or None."""
    if not args.ref_audio:
        if args.prompt_text or args.prompt_lang or args.aux_ref_audio:
            raise ValueError("--prompt-text, --prompt-lang and --aux-ref-audio go with --ref-audio")
        return None
    from voxpipe.ipc.client import Reference

    return Reference(args.ref_audio, args.prompt_text or "", args.prompt_lang or "", list(args.aux_ref_audio))


def _fail(message: str, code: int = 1) -> int:
    print(f"voxpipe say: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from voxpipe.daemon.commands.audio_out import OutputError, check_output, pick_format
    from voxpipe.daemon.commands.textin import InputError

    output = args.output or ("-" if not sys.stdout.isatty() else "voxpipe.wav")
    try:
        text = read_text(args)
        fmt = pick_format(output, args.format)
        check_output(output)
    except (InputError, OutputError) as exc:
        return _fail(str(exc), 2)
    from voxpipe.ipc.errors import VoxpipeError

    try:
        result, words, timeline, sent = _synthesize(args, text, output, fmt)
    except ValueError as exc:
        return _fail(str(exc), 2)
    except (VoxpipeError, OutputError) as exc:
        return _fail(str(exc))
    if args.words and result is not None:
        try:
            write_words(args.words, words)
        except OSError as exc:
            return _fail(f"cannot write {args.words}: {exc.strerror or exc}")
    if output != "-" and result is not None:
        timings = result.timings
        print(f"{output}: {result.samples / result.sample_rate:.2f} s of audio, first audio after "
              f"{timings.get('first_audio_s', 0):.3f} s, total {timings.get('total_s', 0):.3f} s, seed {result.seed}",
              file=sys.stderr)
    if args.timeline:
        print(timeline_table(timeline, sent), file=sys.stderr)
    return 0


def timeline_table(events: list, sent: float) -> str:
    """One line a step, in order of its start: when it began and ended after the request
    was sent, how long it took, the stage, and what it did (for which chunk)."""
    lines = ["   start ms     end ms    took ms  stage     step"]
    for e in sorted(events, key=lambda e: (e.start, e.end)):
        chunk = f" (chunk {e.seq})" if e.seq >= 0 else ""
        lines.append(f"{(e.start - sent) * 1000:11.1f}{(e.end - sent) * 1000:11.1f}{(e.end - e.start) * 1000:11.1f}"
                     f"  {e.stage:<8}  {e.what}{chunk}")
    return "\n".join(lines)


def _synthesize(args: argparse.Namespace, text: str, output: str, fmt: str):
    """Stream the request into the output; the final Result (or None) and the word timings."""
    from voxpipe.daemon.commands.audio_out import AudioSink
    from voxpipe.daemon.commands.progress import Progress
    from voxpipe.ipc.client import Client

    sink = AudioSink(output, fmt)
    with Client(args.endpoint, timeout=args.timeout) as client:
        sent = time.monotonic()
        stream = client.stream(text, args.voice, reference=reference(args), **options(args))
        progress = Progress(1, "synthesizing", enabled=sys.stderr.isatty() and len(text) > 200)
        try:
            for fragment in stream:
                sink.write(fragment.samples, fragment.sample_rate, flush=args.stream)
                progress.total = max(progress.total, fragment.chunks)
                progress.update(fragment.chunks_done)
        finally:
            progress.close()
        sink.close()
    return stream.result, stream.words, stream.timeline, sent


def write_words(path: str, words: list) -> None:
    """The request's word timings as JSON, seconds of the audio, rounded to 0.1 ms."""
    import json

    from pathlib import Path

    rows = [{"word": w.text, "start": round(w.start, 4), "end": round(w.end, 4)} for w in words]
    Path(path).write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
