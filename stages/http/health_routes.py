"""Probes and monitoring: /health (the gateway is alive), /ready (every stage up and
preloading done, from the daemon's own `ready`), /metrics (the supervisor's Prometheus
exporter, relayed, when metrics are on)."""
from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from voxpipe.config import Config
from voxpipe.stages.http.errors import HttpError
from voxpipe.stages.http.gateway import Gateway


def metrics_url(config: Config) -> str | None:
    """Where the supervisor serves metrics, or None when they are off."""
    port = config.metrics_port
    if not port:
        return None
    address = config.metrics_address
    if address in ("0.0.0.0", "::"):
        address = "127.0.0.1"
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/metrics"


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        status = await gateway.status()
    except HttpError as err:
        return JSONResponse({"ready": False, "reason": err.message}, status_code=503)
    draining = bool(status.get("draining")) or gateway.draining
    is_ready = bool(status.get("ready")) and not draining
    reason = "" if is_ready else "draining" if draining else "stages starting or restarting"
    body = {"ready": is_ready, "reason": reason, "active_requests": status.get("active_requests", 0),
            "voices": status.get("voices", [])}
    return JSONResponse(body, status_code=200 if is_ready else 503)


def _fetch(url: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=5.0) as reply:  # noqa: S310 (our own exporter)
        return reply.read(), reply.headers.get("Content-Type", "text/plain; version=0.0.4")


async def metrics(request: Request) -> Response:
    url = request.app.state.metrics_url
    if url is None:
        return JSONResponse({"error": {"message": "metrics are off: set metrics_port in the daemon's config",
                                       "type": "invalid_request_error", "param": None, "code": "metrics_off"}},
                            status_code=404)
    try:
        body, content_type = await asyncio.to_thread(_fetch, url)
    except (OSError, urllib.error.URLError) as exc:
        return PlainTextResponse(f"metrics exporter at {url} did not answer: {exc}\n", status_code=503)
    return Response(body, media_type=content_type)


routes = [
    Route("/health", health, methods=["GET", "HEAD"]),
    Route("/ready", ready, methods=["GET", "HEAD"]),
    Route("/metrics", metrics, methods=["GET"]),
]
