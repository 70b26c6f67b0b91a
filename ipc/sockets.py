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

from voxpipe.ipc import codec
from voxpipe.ipc.errors import ProtocolError

LINGER_MS = 200
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # the largest single frame any peer may send
CLIENT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # client -> daemon frames: a request of 1,000,000 characters fits
HWM = 10_000


SYSTEM_SOCKET = Path("/run/voxpipe/voxpipe.sock")  # the systemd service's (RuntimeDirectory=voxpipe)


def runtime_dir() -> Path:
    """Where the daemon's sockets live: systemd's RuntimeDirectory for the service, else
    $XDG_RUNTIME_DIR/voxpipe, else /tmp/voxpipe-UID."""
    if os.environ.get("RUNTIME_DIRECTORY"):
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_RUNTIME_DIR")
    return Path(base) / "voxpipe" if base else Path(f"/tmp/voxpipe-{os.getuid()}")


def default_endpoint() -> str:
    """$VOXPIPE_ENDPOINT, else the user's own daemon's socket, else the system service's."""
    if os.environ.get("VOXPIPE_ENDPOINT"):
        return os.environ["VOXPIPE_ENDPOINT"]
    own = runtime_dir() / "voxpipe.sock"
    if not own.exists() and SYSTEM_SOCKET.exists():
        return f"ipc://{SYSTEM_SOCKET}"
    return f"ipc://{own}"


def ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint[len("ipc://"):]) if endpoint.startswith("ipc://") else None


def share_with_group(endpoint: str, group: str) -> None:
    """Let members of `group` connect to a bound ipc endpoint: the socket file gets that
    group and mode 0660 (connecting needs write permission). No-op for tcp or no group."""
    path = ipc_path(endpoint)
    if path is None or not group:
        return
    import grp

    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise PermissionError(f"socket_group: no group named {group!r}") from None
    try:
        os.chown(path, -1, gid)
        os.chmod(path, 0o660)
    except PermissionError as exc:
        raise PermissionError(f"cannot give {path} to group {group!r} (is the daemon's user a member?): "
                              f"{exc.strerror}") from None


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
