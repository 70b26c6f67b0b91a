"""The http stage: the gateway app on uvicorn (on uvloop where installed), spawned by the
supervisor when `[http] bind` (or `voxpipe serve --http`) is set. It heartbeats like
every stage, reaches the pipeline through one AsyncClient, and of the supervisor's
control messages acts on "stop" (shut the server down) and "drain" (refuse new work)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

import uvicorn
import zmq

from voxpipe.config import parse_bind
from voxpipe.ipc import sockets
from voxpipe.ipc.client import run_async
from voxpipe.ipc.errors import ProtocolError
from voxpipe.ipc.messages import Drain, Stop
from voxpipe.stages.http.app import build_app
from voxpipe.stages.http.encoders import available
from voxpipe.stages.http.gateway import Gateway, Limits
from voxpipe.stages.http.health_routes import metrics_url
from voxpipe.stages.runtime import StageArgs, StageRuntime

CONTROL_POLL_S = 0.1
log = logging.getLogger("voxpipe.http")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals belong to the supervisor; this stage stops on its "stop" message


async def _control_loop(runtime: StageRuntime, server: uvicorn.Server, gateway: Gateway) -> None:
    while not server.should_exit:
        # The loop is alive if this line runs: report the time since it last did as
        # `busy_for`, so a stuck event loop looks hung to the supervisor.
        runtime.busy_since = time.monotonic()
        runtime.stats = gateway.stats()
        while True:
            try:
                _, message, _ = sockets.recv(runtime.control)
            except zmq.Again:
                break
            except ProtocolError:
                continue
            if isinstance(message, Stop):
                server.should_exit = True
            elif isinstance(message, Drain):
                gateway.draining = True  # /ready answers 503 while accepted requests finish
        await asyncio.sleep(CONTROL_POLL_S)


class BindError(Exception):
    """The HTTP address cannot be listened on (in use, not ours, not resolvable)."""


def listen(host: str, port: int) -> socket.socket:
    """A bound socket for uvicorn: binding here turns a busy port into one clear line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise BindError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}") from None
    return sock


async def serve(args: StageArgs, runtime: StageRuntime) -> None:
    config = args.config
    bind = parse_bind(config.http.bind)
    assert bind is not None, "validated with the config"
    sock = listen(*bind)
    gateway = Gateway(args.layout.client_endpoint, Limits.from_config(config),
                      config.curve_keys_dir or None, config.http.voice_aliases)
    await gateway.connect()
    formats = available()  # probe the codecs once, before the first request
    missing = {name: why for name, why in formats.items() if why}
    if missing:
        log.warning("audio formats unavailable here: %s", "; ".join(f"{k} ({v})" for k, v in missing.items()))
    app = build_app(gateway, config.voices_path(), metrics_url(config),
                    [Path(d).expanduser() for d in config.http.reference_dirs], config.http.gsv_default_voice)
    server = _Server(uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning",
                                    timeout_graceful_shutdown=2, server_header=False))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    control = asyncio.create_task(_control_loop(runtime, server, gateway))
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if server.started:
            runtime.ready = True
        await serving
    finally:
        control.cancel()
        await gateway.close()


def main(args: StageArgs) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="voxpipe http: %(message)s")
    runtime = StageRuntime(args)
    try:
        run_async(serve(args, runtime))
    except BindError as exc:
        log.error("%s", exc)
        sys.exit(2)
    finally:
        runtime.close()
