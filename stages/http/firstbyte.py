"""Time to first audio over HTTP against the ZeroMQ client library, one text, one run each,
one after the other, against a daemon serving both (`voxpipe serve --http HOST:PORT`):

    python -m voxpipe.stages.http.firstbyte --http 127.0.0.1:8000 -f ../shared/bench/longform_en.txt

HTTP asks POST /v1/audio/speech for wav (the voice's own rate, no resampling or encoding
in the way); both sides read the whole answer and print first-byte and total seconds as
the client sees them.
"""
from __future__ import annotations

import argparse
import http.client
import json
import time

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", required=True, metavar="HOST:PORT", help="the gateway's address")
    parser.add_argument("--endpoint", help="the daemon's ZeroMQ endpoint (default: the default socket)")
    parser.add_argument("-f", "--file", required=True, help="text file to speak")
    parser.add_argument("--voice", default="joe")
    args = parser.parse_args(argv)
    bind = parse_bind(args.http)
    if bind is None:
        parser.error(f"--http: expected HOST:PORT, got {args.http!r}")
    text = open(args.file, encoding="utf-8").read()
    over_zmq(args.endpoint, "Warm up.", args.voice)
    over_http(*bind, "Warm up.", args.voice)
    for name, (first, total, size) in [("zeromq", over_zmq(args.endpoint, text, args.voice)),
                                       ("http", over_http(*bind, text, args.voice))]:
        print(f"{name:7s} first audio {first:7.3f} s   total {total:7.3f} s   {size / 2**20:6.2f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
