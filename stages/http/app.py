"""The ASGI app: every route family, and JSON errors (OpenAI's shape) for paths and
methods that do not exist and for anything unexpected."""
from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from voxpipe.stages import families
from voxpipe.stages.http import caption_routes, health_routes, openai_routes, page
from voxpipe.stages.http.errors import HttpError
from voxpipe.stages.http.gateway import Gateway
from voxpipe.stages.http.openai_routes import openai_error

log = logging.getLogger("voxpipe.http")


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return openai_error(HttpError(code, f"{request.method} {request.url.path}: {exc.detail}", status=exc.status_code))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error serving %s %s", request.method, request.url.path)
    return openai_error(HttpError("internal", f"internal error: {type(exc).__name__}"))


def family_routes() -> list[BaseRoute]:
    """The routes of every model family's own HTTP API (GPT-SoVITS's `/tts`, ...)."""
    routes: list[BaseRoute] = []
    for name in families.names():
        try:
            routes += families.get(name).http_routes()
        except families.FamilyError as exc:  # its voices are unavailable too; the rest is served
            log.error("%s", exc)
    return routes


def build_app(gateway: Gateway, voices_dir: Path | None = None, metrics_url: str | None = None,
              reference_dirs: list[Path] | None = None, gsv_default_voice: str = "") -> Starlette:
    app = Starlette(routes=[*openai_routes.routes, *caption_routes.routes, *family_routes(), *health_routes.routes,
                            *page.routes],
                    exception_handlers={HTTPException: _http_exception, Exception: _unexpected})
    app.state.gateway = gateway
    app.state.voices_dir = voices_dir
    app.state.metrics_url = metrics_url
    app.state.reference_dirs = list(reference_dirs or [])  # http.reference_dirs: clips api_v2 may name
    app.state.gsv_default_voice = gsv_default_voice  # http.gsv_default_voice
    return app
