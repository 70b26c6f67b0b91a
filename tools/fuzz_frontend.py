"""Coverage-guided fuzzing of what a client can send (atheris). Two targets:

    decode  the message decoder alone, in process: anything but a ProtocolError or a
            well-formed message is a finding
    daemon  frames sent at a running daemon's client endpoint; after each batch the
            daemon must still answer a ping

    pip install atheris
    python tools/fuzz_frontend.py decode -atheris_runs=1000000
    voxpipe serve --endpoint ipc:///tmp/fuzz.sock &
    python tools/fuzz_frontend.py daemon --endpoint ipc:///tmp/fuzz.sock -atheris_runs=1000000

The test suite runs the same checks with hypothesis (tests/test_hardening.py,
tests/test_codec.py) on every change.
"""
from __future__ import annotations

import sys


def decode_target(data: bytes) -> None:
    from voxpipe.ipc import codec
    from voxpipe.ipc.errors import ProtocolError

    try:
        codec.decode(data)
    except ProtocolError:
        pass


def daemon_target_factory(endpoint: str):
    import atheris
    import zmq

    from voxpipe.ipc.client import Client

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(endpoint)
    probe = Client(endpoint)
    sent = 0

    def target(data: bytes) -> None:
        nonlocal sent
        provider = atheris.FuzzedDataProvider(data)
        frames = [provider.ConsumeBytes(provider.ConsumeIntInRange(0, 512)) for _ in range(provider.ConsumeIntInRange(1, 4))]
        sock.send_multipart(frames)
        while sock.poll(0):
            sock.recv_multipart()  # replies to our garbage: drop them
        sent += 1
        if sent % 1000 == 0:
            probe.ping(timeout=10.0)  # raises if the daemon stopped answering
    return target


def main() -> None:
    import atheris

    with atheris.instrument_imports():  # coverage feedback from our decoder and the frames it parses
        import voxpipe.ipc.codec  # noqa: F401
        import voxpipe.ipc.messages  # noqa: F401
    args = sys.argv[1:]
    if not args or args[0] not in ("decode", "daemon"):
        sys.exit(__doc__)
    target_name, rest = args[0], args[1:]
    if target_name == "daemon":
        if "--endpoint" not in rest:
            sys.exit("daemon: --endpoint ADDR is required")
        index = rest.index("--endpoint")
        endpoint = rest[index + 1]
        rest = rest[:index] + rest[index + 2:]
        target = daemon_target_factory(endpoint)
    else:
        target = decode_target
    atheris.Setup([sys.argv[0], *rest], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
