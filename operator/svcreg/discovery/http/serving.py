"""How every HTTP route is served: JSON errors, request metrics by route template, and CORS.

Each handler is wrapped as its route is added (not an aiohttp middleware; see
docs/performance.md). Paths no route matches get the same JSON errors from a catch-all route
added last: 404, or 405 with ``Allow``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from svcreg.core.errors import BadParameter
from svcreg.core.refusals import Refusal
from svcreg.discovery.index import dumps
from svcreg.telemetry.metrics import Metrics

logger = logging.getLogger(__name__)
access = logging.getLogger("svcreg.access")

CALLER = web.RequestKey("caller", str)  # the authenticated caller's username, for the access log
# An incoming X-Request-Id is echoed and logged only when it is a plain token (no spaces or
# control characters to forge log lines with); otherwise a fresh one is made.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNMATCHED = "unmatched"  # the route label of answers to paths no route serves
# Every method a browser may send cross-origin: discovery's reads, heartbeats and the
# registration API's writes.
ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    body = {"error": {"code": code, "message": message, **extra}}
    return web.Response(status=status, body=dumps(body), content_type="application/json")


def error_for(request: web.Request, error: Exception) -> web.Response:
    """The JSON answer for an exception a handler raised; unexpected ones are logged as 500s."""
    if isinstance(error, Refusal):
        extra = {"parameter": error.parameter} if error.parameter is not None else {}
        response = error_response(error.status, error.code, error.message, **extra)
        if error.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, round(error.retry_after)))
        return response
    if isinstance(error, BadParameter):
        return error_response(400, "BadParameter", str(error), parameter=error.parameter)
    if isinstance(error, web.HTTPException):
        response = error_response(error.status, error.reason.replace(" ", ""), error.text or error.reason)
        if hdrs.ALLOW in error.headers:
            response.headers[hdrs.ALLOW] = error.headers[hdrs.ALLOW]
        return response
    logger.error("%s %s failed", request.method, request.path, exc_info=error)
    return error_response(500, "InternalError", "internal error; see the svcreg log")


def add_cors(request: web.Request, response: web.StreamResponse, origins: tuple[str, ...]) -> None:
    origin = request.headers.get("Origin")
    if origin and response.prepared is False and (origin in origins or "*" in origins):
        response.headers["Access-Control-Allow-Origin"] = origin if "*" not in origins else "*"
        response.headers["Access-Control-Allow-Headers"] = (
            "Authorization, Content-Type, If-None-Match, Last-Event-ID, X-Request-Id"
        )
        response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        response.headers["Access-Control-Expose-Headers"] = "ETag, X-Svcreg-Index, X-Request-Id"
        response.headers["Vary"] = "Origin"


@dataclass(frozen=True)
class Serving:
    """Adds routes to an app, each served with JSON errors, metrics and CORS."""

    metrics: Metrics
    cors_origins: tuple[str, ...] = ()
    access_log: bool = False

    def add(self, app: web.Application, method: str, path: str, handler: Handler) -> None:
        if method == hdrs.METH_GET:  # answers HEAD too, as aiohttp's add_get does
            app.router.add_get(path, self.wrap(path, handler))
        else:
            app.router.add_route(method, path, self.wrap(path, handler))

    def wrap(self, route: str, handler: Handler) -> Handler:
        observe = self.metrics.observe_request
        origins = self.cors_origins
        log_requests = self.access_log

        async def served(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except asyncio.CancelledError:
                raise
            except web.HTTPException as error:
                if error.status < 400:
                    raise
                response = error_for(request, error)
            except Exception as error:
                response = error_for(request, error)
            elapsed = time.perf_counter() - started
            observe(route, request.method, response.status, elapsed)
            if origins:
                add_cors(request, response, origins)
            request_id = request.headers.get("X-Request-Id")
            if request_id is not None and not REQUEST_ID.match(request_id):
                request_id = None
            if request_id is None and log_requests:
                request_id = uuid.uuid4().hex
            if request_id is not None and not response.prepared:
                response.headers["X-Request-Id"] = request_id
            if log_requests:
                access.info(
                    "%s %s %d",
                    request.method,
                    request.path,
                    response.status,
                    extra={
                        "request_id": request_id,
                        "method": request.method,
                        "route": route,
                        "path": request.path,
                        "status": response.status,
                        "caller": request.get(CALLER),
                        "latency_ms": round(elapsed * 1000, 3),
                    },
                )
            return response

        served.__name__ = served.__qualname__ = getattr(handler, "__name__", "served")
        return served

    def finish(self, app: web.Application) -> None:
        """Add the catch-all, last: 405 naming the allowed methods when another route has the
        path, else 404, both as JSON. CORS preflight routes do not make a path known."""
        catch_all = app.router.add_resource("/{tail:.*}")

        async def unmatched(request: web.Request) -> web.Response:
            allowed: set[str] = set()
            for resource in app.router.resources():
                if resource is not catch_all:
                    _, methods = await resource.resolve(request)
                    allowed |= methods - {hdrs.METH_OPTIONS}
            if allowed:
                raise web.HTTPMethodNotAllowed(request.method, allowed)
            raise web.HTTPNotFound(text=f"no route for {request.path}")

        catch_all.add_route(hdrs.METH_ANY, self.wrap(UNMATCHED, unmatched))
