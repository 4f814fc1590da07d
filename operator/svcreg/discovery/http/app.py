"""The aiohttp application: liveness, readiness, Prometheus metrics, OpenAPI, and discovery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from svcreg.discovery.http import discovery, internal, openapi, registrations, ui, writes
from svcreg.discovery.http.front import KEEPALIVE_SECONDS
from svcreg.discovery.http.serving import Serving
from svcreg.telemetry.metrics import Metrics

ReadyCheck = Callable[[], tuple[bool, dict[str, Any]]]
METRICS_KEY = web.AppKey("metrics", Metrics)
READY_KEY = web.AppKey("ready", object)
ALIVE_KEY = web.AppKey("alive", object)


async def healthz(request: web.Request) -> web.Response:
    check: ReadyCheck = request.app[ALIVE_KEY]  # type: ignore[assignment]
    alive, details = check()
    return web.json_response({"status": "ok" if alive else "wedged", **details}, status=200 if alive else 503)


async def readyz(request: web.Request) -> web.Response:
    check: ReadyCheck = request.app[READY_KEY]  # type: ignore[assignment]
    ready, details = check()
    return web.json_response({"ready": ready, **details}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


def build_app(
    metrics_: Metrics,
    ready: ReadyCheck,
    discovery_: discovery.Discovery | None = None,
    *,
    registration_api: bool = True,
    alive: ReadyCheck = lambda: (True, {}),
    access_log: bool = False,
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[METRICS_KEY] = metrics_
    app[READY_KEY] = ready
    app[ALIVE_KEY] = alive
    serving = Serving(metrics_, discovery_.cors_origins if discovery_ is not None else (), access_log)
    serving.add(app, "GET", "/healthz", healthz)
    serving.add(app, "GET", "/readyz", readyz)
    serving.add(app, "GET", "/metrics", metrics)
    serving.add(app, "GET", "/openapi.json", openapi_json)
    if discovery_ is not None:
        discovery.add_routes(app, discovery_, serving)
        writes.add_routes(app, serving)
        internal.add_routes(app, serving)
        if registration_api:
            registrations.add_routes(app, serving)
        ui.add_routes(app, serving)
        serving.add(app, "OPTIONS", "/v1/{tail:.*}", discovery.preflight)
    serving.finish(app)
    return app


def runner(app: web.Application, *, keepalive: float = KEEPALIVE_SECONDS) -> web.AppRunner:
    """The runner that serves ``app`` behind the front: a caller that hangs up ends its handler
    (a departed watcher or long poll frees its slot at once instead of at its next keep-alive),
    and a connection handed to aiohttp keeps the front's keep-alive (aiohttp's own default is
    an hour)."""
    return web.AppRunner(app, access_log=None, handler_cancellation=True, keepalive_timeout=keepalive)
