"""Open endpoints for API documentation: ``/openapi.json`` and the ``/docs`` page with its assets.

The page and its assets ship in the package (``coordinator/docs_assets``) and load nothing from
elsewhere, so the reference works on a host without internet access.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
from importlib.resources import files
from typing import Any

from aiohttp import hdrs, web

from coordinator.access import ROLE_RIGHTS, RULES
from coordinator.api.catalog import ROUTE_DOCS, TAGS
from coordinator.openapi import Access, LiveRoute, build_openapi
from shared.errors import NotFound

routes = web.RouteTableDef()

ASSETS = files("coordinator") / "docs_assets"
PAGE = "index.html"
_CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript"}

# The browser enforces "nothing from elsewhere": every fetch, script and style is same-origin.
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
}


def live_routes(app: web.Application) -> tuple[LiveRoute, ...]:
    """The app's routes; the HEAD that aiohttp adds beside every GET is implied, not listed."""
    found: set[LiveRoute] = set()
    for route in app.router.routes():
        if route.resource is None:
            continue
        handler = getattr(route.handler, "__name__", "")
        found.add(LiveRoute(route.method, route.resource.canonical, handler))
    gets = {r.path for r in found if r.method == hdrs.METH_GET}
    return tuple(sorted(r for r in found if not (r.method == hdrs.METH_HEAD and r.path in gets)))


def _version() -> str:
    try:
        return importlib.metadata.version("fleetwave")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


ACCESS = Access(
    rights={key: rule.right.value for key, rule in RULES.items()},
    roles={role.value: sorted(r.value for r in rights) for role, rights in ROLE_RIGHTS.items()},
    scoped=frozenset(rule.right.value for rule in RULES.values() if rule.job_param),
)
"""coordinator/access.py as the document states it."""


@functools.lru_cache(maxsize=4)
def _document_text(live: tuple[LiveRoute, ...]) -> str:
    return json.dumps(build_openapi(live, ROUTE_DOCS, TAGS, _version(), ACCESS), indent=1)


def openapi_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of ``app`` as a dict (a fresh copy)."""
    loaded: dict[str, Any] = json.loads(_document_text(live_routes(app)))
    return loaded


@routes.get("/openapi.json")
async def handle_openapi(request: web.Request) -> web.Response:
    text = _document_text(live_routes(request.app))
    return web.Response(text=text, content_type="application/json")


@routes.get("/docs")
async def handle_docs_page(request: web.Request) -> web.Response:
    return web.Response(
        text=ASSETS.joinpath(PAGE).read_text("utf-8"),
        content_type="text/html",
        charset="utf-8",
        headers=_HEADERS,
    )


@routes.get("/docs/assets/{name}")
async def handle_docs_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    # Only files listed in the package's asset folder: a name is never joined onto a path blindly.
    if suffix not in _CONTENT_TYPES or name not in {f.name for f in ASSETS.iterdir()}:
        raise NotFound(f"no such documentation asset: {name!r}", {"asset": name})
    return web.Response(
        body=ASSETS.joinpath(name).read_bytes(),
        content_type=_CONTENT_TYPES[suffix],
        charset="utf-8",
        headers=_HEADERS,
    )
