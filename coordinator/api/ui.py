"""The dashboard's static files (``coordinator/ui/``), served open; its data comes from /v1."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from aiohttp import web

from shared.errors import NotFound

routes = web.RouteTableDef()

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
TEXT_SUFFIXES = {".html", ".js", ".css", ".svg", ".json"}

# One plain file name per path segment: no "..", no hidden files, no backslashes or colons.
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

# The files are small and ship with the package; browsers revalidate them (ETag) on every
# load, so an upgraded coordinator never serves a stale mix of old and new modules.
_SECURITY_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def resolve_asset(relative: str) -> Path | None:
    """The file under ``UI_DIR`` that ``relative`` names, or None when it is not a servable one."""
    parts = relative.split("/")
    if not all(_SEGMENT.fullmatch(p) and ".." not in p for p in parts):
        return None
    path = UI_DIR.joinpath(*parts).resolve()
    if not path.is_relative_to(UI_DIR) or not path.is_file():
        return None
    if path.suffix not in CONTENT_TYPES:
        return None
    return path


def _serve(request: web.Request, path: Path) -> web.Response:
    body = path.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, **_SECURITY_HEADERS}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    content_type = CONTENT_TYPES[path.suffix]
    charset = "utf-8" if path.suffix in TEXT_SUFFIXES else None
    return web.Response(body=body, content_type=content_type, charset=charset, headers=headers)


@routes.get("/ui")
async def handle_ui_redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


@routes.get("/ui/")
async def handle_ui_index(request: web.Request) -> web.Response:
    return _serve(request, UI_DIR / "index.html")


@routes.get("/ui/{path:.+}")
async def handle_ui_asset(request: web.Request) -> web.Response:
    relative = request.match_info["path"]
    path = resolve_asset(relative)
    if path is None:
        raise NotFound(f"no such dashboard file: {relative}", {"path": relative})
    return _serve(request, path)
