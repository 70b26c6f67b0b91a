"""`voxpipe submit`: synthesize every line of a file, N at a time, one audio file each."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from voxpipe.ipc.client import AsyncClient, run_async
from voxpipe.ipc.errors import VoxpipeError
from voxpipe.daemon.commands.progress import Progress


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="text file: one text a line (blank lines are skipped)")
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("-d", "--outdir", default="voxpipe-out")
    parser.add_argument("--voice", default="joe")
    parser.add_argument("--format", default="wav", choices=["wav", "flac", "ogg"])
    parser.add_argument("--endpoint")
    parser.add_argument("--timeout", type=float, default=300.0)


async def _submit(args: argparse.Namespace, lines: list[tuple[int, str]]) -> int:
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
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
            done += 1
            progress.update(done, f"{len(failures)} failed" if failures else "")

        await asyncio.gather(*(one(number, text) for number, text in lines))
    progress.close()
    for failure in failures:
        print(f"voxpipe submit: {failure}", file=sys.stderr)
    print(f"{len(lines) - len(failures)} of {len(lines)} written to {outdir}", file=sys.stderr)
    return 1 if failures else 0


def run(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"voxpipe submit: {exc}", file=sys.stderr)
        return 2
    lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        print("voxpipe submit: no text lines in the file", file=sys.stderr)
        return 2
    try:
        return run_async(_submit(args, lines))
    except VoxpipeError as exc:
        print(f"voxpipe submit: {exc}", file=sys.stderr)
        return 1
