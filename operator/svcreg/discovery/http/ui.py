"""The read-only dashboard at ``/ui``: static files shipped in the package, served with a strict
Content-Security-Policy.

The page holds no data of its own and no token in any URL: it calls the same ``/v1`` routes any
client calls, with the viewer's token in an ``Authorization`` header (kept in the tab's
``sessionStorage``), so it shows exactly what that identity may list. The files are read once
at start-up from a fixed list (nothing a request names is opened), and every answer forbids
inline scripts, foreign origins, framing and referrers: what a tenant writes into a
registration is rendered as text by the page and can never run in a viewer's session.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from svcreg.discovery.http.serving import Serving

# Everything the page loads; nothing else is served under /ui.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
UI_FILES = web.AppKey("ui_files", dict)


def load() -> dict[str, bytes]:
    """The page's files, from the installed package."""
    folder = resources.files("svcreg.discovery") / "ui"
    return {name: (folder / name).read_bytes() for name in FILES}


async def _index_redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


async def _file(request: web.Request) -> web.Response:
    name = request.match_info.get("file") or "index.html"
    files: dict[str, bytes] = request.app[UI_FILES]
    if name not in files:
        raise web.HTTPNotFound(text=f"no dashboard file {name}")
    return web.Response(body=files[name], headers={"Content-Type": FILES[name], **SECURITY_HEADERS})


def add_routes(app: web.Application, serving: Serving) -> None:
    app[UI_FILES] = load()
    serving.add(app, "GET", "/ui", _index_redirect)
    serving.add(app, "GET", "/ui/", _file)
    serving.add(app, "GET", "/ui/{file}", _file)
