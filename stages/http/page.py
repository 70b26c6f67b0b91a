"""The listening page at `/`: plain HTML and a little JavaScript, no build step."""
from __future__ import annotations

import functools
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

PAGE = Path(__file__).with_name("static") / "index.html"


@functools.cache
def _html() -> str:
    return PAGE.read_text(encoding="utf-8")


async def index(request: Request) -> Response:
    return HTMLResponse(_html(), headers={"Cache-Control": "no-cache"})


routes = [Route("/", index, methods=["GET", "HEAD"])]
