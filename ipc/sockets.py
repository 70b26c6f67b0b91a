"""Socket construction: one place that sets the options every voxpipe socket needs.

LINGER bounds how long a closing socket holds undelivered messages; MAXMSGSIZE makes
libzmq drop (and disconnect) a peer that sends an oversized frame before Python ever
sees it; ROUTER_MANDATORY turns a reply to a vanished peer into an error we can count
instead of a silent drop; high-water marks bound every queue.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import zmq

from ipc import codec
from ipc.errors import ProtocolError

LINGER_MS = 200
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # the largest single frame any peer may send
CLIENT_MAX_MESSAGE_BYTES = 2 * 1024 * 1024  # client -> daemon frames are small
HWM = 10_000


def runtime_dir() -> Path:
    """Where the daemon's sockets live: $XDG_RUNTIME_DIR/voxpipe, else /tmp/voxpipe-UID."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    return Path(base) / "voxpipe" if base else Path(f"/tmp/voxpipe-{os.getuid()}")


def default_endpoint() -> str:
    return os.environ.get("VOXPIPE_ENDPOINT") or f"ipc://{runtime_dir() / 'voxpipe.sock'}"


def ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint[len("ipc://"):]) if endpoint.startswith("ipc://") else None


def make_socket(ctx: zmq.Context, kind: int, *, identity: bytes | None = None,
                max_message: int = MAX_MESSAGE_BYTES, hwm: int = HWM) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if kind == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return sock


def send(sock: zmq.Socket, message: Any, *extra: bytes | memoryview, identity: bytes | None = None,
         flags: int = 0) -> None:
    """Send a typed message (after `identity` on a ROUTER), with raw frames after it."""
    frames: list[Any] = [identity] if identity is not None else []
    frames.append(codec.encode(message))
    frames.extend(extra)
    sock.send_multipart(frames, flags=flags, copy=len(frames[-1]) < 65536)


def recv(sock: zmq.Socket, router: bool = False, flags: int = zmq.NOBLOCK) -> tuple[bytes | None, Any, Sequence[bytes]]:
    """Receive (identity, message, extra frames); raises ProtocolError for a bad body and
    zmq.Again when nothing is waiting."""
    frames = sock.recv_multipart(flags=flags, copy=True)
    identity = frames.pop(0) if router else None
    if not frames:
        raise ProtocolError("empty message")
    return identity, codec.decode(frames[0]), frames[1:]
