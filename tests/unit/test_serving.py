"""Per-route serving: JSON errors, request metrics, CORS and the catch-all, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from svcreg.core.errors import BadParameter
from svcreg.core.refusals import Unauthenticated
from svcreg.discovery.http.serving import UNMATCHED, Serving
from svcreg.telemetry.metrics import Metrics


async def fine(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def bad_query(request: web.Request) -> web.Response:
    raise BadParameter("limit", "must be a number")


async def unauthenticated(request: web.Request) -> web.Response:
    raise Unauthenticated("Unauthenticated", "missing token")


async def broken(request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204)


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Metrics]]:
    metrics = Metrics()
    serving = Serving(metrics, cors_origins=("https://ui.example",))
    app = web.Application()
    serving.add(app, "GET", "/fine", fine)
    serving.add(app, "GET", "/things/{name}", bad_query)
    serving.add(app, "GET", "/who", unauthenticated)
    serving.add(app, "GET", "/broken", broken)
    serving.add(app, "OPTIONS", "/v1/{tail:.*}", preflight)
    serving.finish(app)
    async with TestClient(TestServer(app)) as client:
        yield client, metrics


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


@pytest.mark.asyncio
async def test_errors_are_json_and_name_what_went_wrong(
    served: tuple[TestClient[web.Request, web.Application], Metrics], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = served
    answer = await client.get("/things/x")
    assert answer.status == 400
    assert (await answer.json())["error"] == {
        "code": "BadParameter",
        "message": "limit: must be a number",
        "parameter": "limit",
    }
    answer = await client.get("/who")
    assert answer.status == 401 and (await answer.json())["error"]["code"] == "Unauthenticated"
    answer = await client.get("/broken")
    assert answer.status == 500 and (await answer.json())["error"]["code"] == "InternalError"
    assert "a bug" not in await answer.text()  # the cause goes to the log, not the caller
    assert any("GET /broken failed" in r.getMessage() and r.exc_info for r in caplog.records)


@pytest.mark.asyncio
async def test_paths_no_route_serves_get_json_404_and_wrong_methods_405(
    served: tuple[TestClient[web.Request, web.Application], Metrics],
) -> None:
    client, metrics = served
    missing = await client.get("/nowhere")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "NotFound"
    wrong = await client.post("/fine")
    assert wrong.status == 405
    assert (await wrong.json())["error"]["code"] == "MethodNotAllowed"
    assert set(wrong.headers["Allow"].split(",")) == {"GET", "HEAD"}
    # A path only the CORS preflight route matches is not a known path.
    assert (await client.get("/v1/nothing-here")).status == 404
    assert (await client.options("/v1/anything")).status == 204
    text = exposition(metrics)
    assert f'svcreg_http_requests_total{{code="404",method="GET",route="{UNMATCHED}"}} 2.0' in text
    assert f'svcreg_http_requests_total{{code="405",method="POST",route="{UNMATCHED}"}} 1.0' in text


@pytest.mark.asyncio
async def test_requests_are_counted_and_timed_by_route_template(
    served: tuple[TestClient[web.Request, web.Application], Metrics],
) -> None:
    client, metrics = served
    for _ in range(3):
        assert (await client.get("/fine")).status == 200
    await client.get("/things/a")
    await client.get("/things/b")
    text = exposition(metrics)
    assert 'svcreg_http_requests_total{code="200",method="GET",route="/fine"} 3.0' in text
    assert 'svcreg_http_requests_total{code="400",method="GET",route="/things/{name}"} 2.0' in text
    assert 'svcreg_http_request_duration_seconds_bucket{le="+Inf",route="/fine"} 3.0' in text
    assert 'svcreg_http_request_duration_seconds_count{route="/fine"} 3.0' in text
    assert "# TYPE svcreg_http_requests_total counter" in text


@pytest.mark.asyncio
async def test_cors_headers_only_for_allowed_origins(
    served: tuple[TestClient[web.Request, web.Application], Metrics],
) -> None:
    client, _ = served
    allowed = await client.get("/fine", headers={"Origin": "https://ui.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    other = await client.get("/fine", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_loop_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    metrics = Metrics()
    for seconds in (0.0005, 0.0006, 0.002, 400.0):
        metrics.http_latency.observe(("/r",), seconds)
    text = exposition(metrics)
    assert 'svcreg_http_request_duration_seconds_bucket{le="0.0005",route="/r"} 1.0' in text
    assert 'svcreg_http_request_duration_seconds_bucket{le="0.001",route="/r"} 2.0' in text
    assert 'svcreg_http_request_duration_seconds_bucket{le="0.0025",route="/r"} 3.0' in text
    assert 'svcreg_http_request_duration_seconds_bucket{le="300.0",route="/r"} 3.0' in text
    assert 'svcreg_http_request_duration_seconds_bucket{le="+Inf",route="/r"} 4.0' in text
    assert 'svcreg_http_request_duration_seconds_sum{route="/r"} 400.0031' in text


@pytest.mark.asyncio
async def test_the_access_log_carries_the_request_id_route_status_and_latency(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import json  # noqa: PLC0415
    import logging  # noqa: PLC0415

    from svcreg.telemetry.logformat import JsonFormatter  # noqa: PLC0415

    app = web.Application()
    serving = Serving(Metrics(), access_log=True)
    serving.add(app, "GET", "/things/{name}", bad_query)
    serving.add(app, "GET", "/fine", fine)
    serving.finish(app)
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.INFO, logger="svcreg.access"):
            echoed = await client.get("/fine", headers={"X-Request-Id": "req-42"})
            forged = await client.get("/things/x", headers={"X-Request-Id": "a b INFO fake"})
    assert echoed.headers["X-Request-Id"] == "req-42"
    # A value that could forge log lines is not echoed or logged: a fresh id replaces it.
    assert forged.headers["X-Request-Id"] != "a b INFO fake" and " " not in forged.headers["X-Request-Id"]
    first, second = (json.loads(JsonFormatter().format(r)) for r in caplog.records)
    assert first["request_id"] == "req-42" and first["route"] == "/fine" and first["status"] == 200
    assert first["method"] == "GET" and first["latency_ms"] >= 0 and first["logger"] == "svcreg.access"
    assert second["route"] == "/things/{name}" and second["status"] == 400
    assert second["request_id"] == forged.headers["X-Request-Id"]


@pytest.mark.asyncio
async def test_no_access_log_and_no_made_up_ids_by_default(caplog: pytest.LogCaptureFixture) -> None:
    import logging  # noqa: PLC0415

    app = web.Application()
    serving = Serving(Metrics())
    serving.add(app, "GET", "/fine", fine)
    serving.finish(app)
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.INFO, logger="svcreg.access"):
            plain = await client.get("/fine")
            echoed = await client.get("/fine", headers={"X-Request-Id": "keep-me"})
    assert "X-Request-Id" not in plain.headers and echoed.headers["X-Request-Id"] == "keep-me"
    assert not caplog.records
