"""CURVE encryption and authentication for tcp:// endpoints.

An ipc socket is guarded by file permissions; a tcp socket is reachable by anyone who
can route to it, so voxpipe refuses tcp:// unless CURVE keys are configured. Key
directory layout (`voxpipe keys generate DIR` writes it):

    DIR/server.key, DIR/server.key_secret   the daemon's key pair
    DIR/clients/*.key                       public keys of clients allowed in
    DIR/client.key, DIR/client.key_secret   a client key pair (for the local tools)
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import zmq

if TYPE_CHECKING:  # zmq.auth loads only where keys are used: clients of ipc:// never pay for it
    from zmq.auth.thread import ThreadAuthenticator


class SecurityError(Exception):
    """Keys missing or unusable for an endpoint that needs them."""


def needs_curve(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def generate_keys(directory: Path) -> None:
    import zmq.auth

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    (directory / "clients").mkdir(exist_ok=True, mode=0o700)
    zmq.auth.create_certificates(str(directory), "server")
    zmq.auth.create_certificates(str(directory), "client")
    shutil.copy(directory / "client.key", directory / "clients" / "client.key")


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.is_file():
        raise SecurityError(f"missing CURVE key file {path}")
    try:
        public, private = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise SecurityError(f"unreadable CURVE key file {path}: {exc}") from None
    if secret and not private:
        raise SecurityError(f"{path} holds no secret key")
    return public, private


def secure_server(ctx: zmq.Context, sock: zmq.Socket, keys_dir: Path) -> ThreadAuthenticator:
    """Make `sock` a CURVE server that admits only the keys in keys_dir/clients."""
    public, secret = _load(keys_dir / "server.key_secret", secret=True)
    clients = keys_dir / "clients"
    if not clients.is_dir() or not any(clients.glob("*.key")):
        raise SecurityError(f"no authorized client keys in {clients}")
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(clients))
    sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True
    return auth


def secure_client(sock: zmq.Socket, keys_dir: Path) -> None:
    public, secret = _load(keys_dir / "client.key_secret", secret=True)
    server_public, _ = _load(keys_dir / "server.key", secret=False)
    sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, server_public
