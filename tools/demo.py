"""The README's first command: start the daemon on the bundled voice, stream a sample
into a WAV file, report how long its first audio and the whole took (as the client saw
them, from sending the request), and stop. The daemon reports ready only once its
preloaded voice is warm, so the first request is as fast as any later one."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy  # noqa: F401  the client's audio arrays: imported before any clock starts

from voxpipe.ipc.client import Client
from voxpipe.ipc.errors import VoxpipeError
from voxpipe.ipc.exchange import collect

SAMPLE_TEXT = ("Hello from voxpipe. This sample was synthesized by a pipeline of separate processes: "
               "a text frontend, synthesis workers and a merger, joined by shared memory.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-o", "--output", default="sample.wav")
    parser.add_argument("--text", default=SAMPLE_TEXT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="voxpipe-demo-") as tmp:
        endpoint = f"ipc://{tmp}/voxpipe.sock"
        print(f"starting the daemon on {endpoint} ...", file=sys.stderr)
        daemon = subprocess.Popen([sys.executable, "-m", "voxpipe.daemon.cli", "serve", "--endpoint", endpoint],
                                  env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            started = time.monotonic()
            client = _connect(endpoint, daemon)
            status = client.wait_ready(180)
            print(f"ready after {time.monotonic() - started:.1f} s: "
                  f"{sum(p['role'] == 'worker' for p in status['processes'])} worker(s)", file=sys.stderr)
            sent = time.monotonic()
            stream = client.stream(args.text, "joe")  # streamed: audio comes as it is made
            fragments = list(stream)
            client.close()
            assert stream.result is not None
            audio = collect(stream.request_id, fragments, stream.result)
            audio.write(args.output)
            first = fragments[0].received_at - sent if fragments else float("nan")
            print(f"wrote {Path(args.output).resolve()}: {audio.duration:.2f} s at {audio.sample_rate} Hz in "
                  f"{audio.chunks} chunks, {len(fragments)} fragments; first audio {first:.3f} s, "
                  f"total {time.monotonic() - sent:.3f} s")
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
    return 0


def _connect(endpoint: str, daemon: subprocess.Popen) -> Client:
    deadline = time.monotonic() + 120
    while True:
        if daemon.poll() is not None:
            sys.exit(f"the daemon exited with code {daemon.returncode}")
        try:
            return Client(endpoint, connect_timeout=1.0)
        except VoxpipeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
