"""`voxpipe submit`: synthesize every line of a file, N at a time, one audio file each.

The client library loads when the command runs, so `--help` answers at once."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="text file: one text a line (blank lines are skipped)")
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("-d", "--outdir", default="voxpipe-out")
    parser.add_argument("--voice", default="joe")
    parser.add_argument("--format", default="wav", choices=["wav", "flac", "ogg"])
    parser.add_argument("--endpoint")
    parser.add_argument("--timeout", type=float, default=300.0)


async def _submit(args: argparse.Namespace, lines: list[tuple[int, str]], outdir: Path) -> int:
    import asyncio

    from voxpipe.daemon.commands.progress import Progress
    from voxpipe.ipc.client import AsyncClient
    from voxpipe.ipc.errors import VoxpipeError

    progress = Progress(len(lines), "submit")
    gate = asyncio.Semaphore(max(1, args.concurrency))
    failures: list[str] = []
    done = 0

    async with AsyncClient(args.endpoint, timeout=args.timeout) as client:
        async def one(number: int, text: str) -> None:
            nonlocal done
            async with gate:
                try:
                    audio = await client.synthesize(text, args.voice)
                    audio.write(outdir / f"{number:05d}.{args.format}")
                except VoxpipeError as exc:
                    failures.append(f"line {number}: {exc}")
                except (OSError, RuntimeError) as exc:  # the file cannot be written (soundfile: RuntimeError)
                    failures.append(f"line {number}: cannot write: {getattr(exc, 'strerror', None) or exc}")
            done += 1
            progress.update(done, f"{len(failures)} failed" if failures else "")

        await asyncio.gather(*(one(number, text) for number, text in lines))
    progress.close()
    for failure in failures:
        print(f"voxpipe submit: {failure}", file=sys.stderr)
    print(f"{len(lines) - len(failures)} of {len(lines)} written to {outdir}", file=sys.stderr)
    return 1 if failures else 0


def _fail(message: str, code: int) -> int:
    print(f"voxpipe submit: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from voxpipe.daemon.commands.textin import InputError, read_text_file

    try:
        text = read_text_file(args.file)
    except InputError as exc:
        return _fail(str(exc), 2)
    lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        return _fail(f"{args.file}: no text lines in the file", 2)
    outdir = Path(args.outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"{outdir}: cannot create the output directory: {exc.strerror or exc}", 2)
    from voxpipe.ipc.client import run_async
    from voxpipe.ipc.errors import VoxpipeError

    try:
        return run_async(_submit(args, lines, outdir))
    except VoxpipeError as exc:
        return _fail(str(exc), 1)
