"""Time to first audio over HTTP against the ZeroMQ client library, one text, one run each,
one after the other, against a daemon serving both (`voxpipe serve --http HOST:PORT`):

    voxpipe bench firstbyte --http 127.0.0.1:8000 [-f TEXT_FILE] [--endpoint ADDR] [--voice joe]

The text is the benchmark's long form (voxpipe/bench/data/longform_en.txt) unless -f names
another file.

HTTP asks POST /v1/audio/speech for wav (the voice's own rate, no resampling or encoding
in the way); both sides read the whole answer and print first-byte and total seconds as
the client sees them.
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path

from voxpipe.bench.texts import DEFAULT_TEXTS_DIR
from voxpipe.config import parse_bind
from voxpipe.ipc.client import Client


def over_zmq(endpoint: str | None, text: str, voice: str) -> tuple[float, float, int]:
    with Client(endpoint) as client:
        started = time.perf_counter()
        first, samples = None, 0
        for fragment in client.stream(text, voice):
            first = first or time.perf_counter() - started
            samples += len(fragment.samples)
        return first or 0.0, time.perf_counter() - started, 2 * samples


def over_http(host: str, port: int, text: str, voice: str) -> tuple[float, float, int]:
    body = json.dumps({"model": "voxpipe", "input": text, "voice": voice, "response_format": "wav"})
    connection = http.client.HTTPConnection(host, port, timeout=600)
    try:
        started = time.perf_counter()
        connection.request("POST", "/v1/audio/speech", body, {"Content-Type": "application/json"})
        reply = connection.getresponse()
        if reply.status != 200:
            raise SystemExit(f"HTTP {reply.status}: {reply.read().decode(errors='replace')}")
        first, size = None, 0
        while chunk := reply.read1(1 << 16):
            first = first or time.perf_counter() - started
            size += len(chunk)
        return first or 0.0, time.perf_counter() - started, size
    finally:
        connection.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http", required=True, metavar="HOST:PORT", help="the gateway's address")
    parser.add_argument("--endpoint", help="the daemon's ZeroMQ endpoint (default: the default socket)")
    parser.add_argument("-f", "--file", type=Path, default=DEFAULT_TEXTS_DIR / "longform_en.txt",
                        help="text file to speak (default: the benchmark's long form)")
    parser.add_argument("--voice", default="joe")


def run(args: argparse.Namespace) -> int:
    bind = parse_bind(args.http)
    if bind is None:
        print(f"voxpipe bench firstbyte: --http: expected HOST:PORT, got {args.http!r}", file=sys.stderr)
        return 2
    text = args.file.read_text(encoding="utf-8")
    over_zmq(args.endpoint, "Warm up.", args.voice)
    over_http(*bind, "Warm up.", args.voice)
    for name, (first, total, size) in [("zeromq", over_zmq(args.endpoint, text, args.voice)),
                                       ("http", over_http(*bind, text, args.voice))]:
        print(f"{name:7s} first audio {first:7.3f} s   total {total:7.3f} s   {size / 2**20:6.2f} MiB")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxpipe bench firstbyte", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
