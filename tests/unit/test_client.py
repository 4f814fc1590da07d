"""The discovery client's pure parts: parameters, parsing, errors, weighted order, token files."""

from __future__ import annotations

import collections
import json
import os
import random
from pathlib import Path

import httpx
import pytest
from httpx_sse import ServerSentEvent

from svcreg import client
from svcreg.client import Registration, calls, errors, failover


def instance(name: str, weight: int = 100, **extra: object) -> Registration:
    return Registration.model_validate(
        {
            "namespace": "ns",
            "name": name,
            "service": name,
            "endpoint": f"http://{name}:80",
            "capabilities": [{"name": "greet"}],
            "weight": weight,
            "health": "Healthy",
            "ready": True,
            **extra,
        }
    )


def test_query_params_spell_filters_as_the_api_does() -> None:
    params = client.query_params(
        service="orders",
        capability=["a", "b"],
        tag="api",
        version=">=1.2,<2",
        meta={"env": "prod"},
        verified=True,
    )
    assert list(params.multi_items()) == [
        ("service", "orders"),
        ("version", ">=1.2,<2"),
        ("capability", "a"),
        ("capability", "b"),
        ("tag", "api"),
        ("meta.env", "prod"),
        ("verified", "true"),
    ]


def test_weighted_order_follows_weights_and_never_picks_weight_zero() -> None:
    items = [instance("heavy", 300), instance("light", 100), instance("never", 0)]
    rng = random.Random(7)
    firsts = collections.Counter(client.weighted_order(items, rng)[0].name for _ in range(4000))
    assert firsts["never"] == 0
    assert 2.5 < firsts["heavy"] / firsts["light"] < 3.5
    assert {i.name for i in client.weighted_order(items, rng)} == {"heavy", "light"}


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, client.BadRequest), (401, client.Unauthorized), (403, client.Forbidden), (404, client.NotFound)],
)
def test_api_errors_are_typed(status: int, kind: type[client.ApiError]) -> None:
    body = {"error": {"code": "X", "message": "why", "parameter": "tag"}}
    with pytest.raises(kind) as caught:
        errors.raise_for(httpx.Response(status, json=body))
    assert (caught.value.status, caught.value.code, caught.value.message) == (status, "X", "why")
    assert caught.value.parameter == "tag"


def test_token_file_is_reread_when_it_rotates(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    auth = client.ServiceAccountAuth(token_file=path)
    request = next(auth.auth_flow(httpx.Request("GET", "http://svcreg/v1/services")))
    assert request.headers["Authorization"] == "Bearer first"
    path.write_text("second\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert auth.token() == "second"


def test_no_token_means_no_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SVCREG_TOKEN", raising=False)
    auth = client.ServiceAccountAuth(token_file=tmp_path / "missing")
    assert "Authorization" not in next(auth.auth_flow(httpx.Request("GET", "http://svcreg/"))).headers


def test_instance_url_uses_healthy_addresses_for_service_refs() -> None:
    ref = instance(
        "web",
        endpoint=None,
        instances=[
            {"address": "10.0.0.1", "port": 80, "health": "Unhealthy"},
            {"address": "10.0.0.2", "port": 8080, "health": "Healthy"},
        ],
    )
    assert ref.urls() == ["http://10.0.0.2:8080"]
    assert failover.candidate_urls([ref]) == ["http://10.0.0.2:8080"]


def test_watch_events_parse_typed_including_reset() -> None:
    event = calls.watch_event(ServerSentEvent(event="updated", data='{"index": 3}', id="3"))
    assert event is not None and (event.type, event.index, event.registration) == ("updated", 3, None)
    reset = calls.watch_event(ServerSentEvent(event="reset", data='{"type": "reset", "index": 9}'))
    assert reset is not None and (reset.type, reset.index) == ("reset", 9)
    assert calls.watch_event(ServerSentEvent(retry=2000)) is None


def test_failover_plan_retries_only_errors_and_5xx() -> None:
    plan = failover.Attempts(
        "greet", ["http://a", "http://b"], failover.RetryPolicy(attempts=3, base_delay=0)
    )
    assert plan.next_url() == ("http://a", 0.0)
    assert plan.failed(None, httpx.ConnectError("refused"))
    url, _ = plan.next_url() or ("", 0)
    assert url == "http://b"
    assert plan.failed(httpx.Response(503))
    assert plan.next_url() is not None
    assert not plan.failed(httpx.Response(404))
    assert plan.next_url() is None  # three attempts made


def _mock(routes: dict[str, list[httpx.Response] | httpx.Response]) -> httpx.MockTransport:
    calls: dict[str, int] = collections.Counter()

    def handler(request: httpx.Request) -> httpx.Response:
        key = f"{request.url.host}{request.url.path}"
        calls[key] += 1
        answer = routes.get(key)
        if answer is None:
            raise httpx.ConnectError("refused", request=request)
        if isinstance(answer, list):
            return answer[min(calls[key], len(answer)) - 1]
        return answer

    transport = httpx.MockTransport(handler)
    transport.calls = calls  # type: ignore[attr-defined]
    return transport


def _capability_answer(*names: str) -> httpx.Response:
    items = [instance(n).model_dump(mode="json", by_alias=True) for n in names]
    return httpx.Response(200, json={"capability": "greet", "count": len(items), "items": items, "index": 1})


def test_request_fails_over_and_never_retries_4xx() -> None:
    transport = _mock(
        {
            "svcreg/v1/capabilities/greet": _capability_answer("a"),
            "a/hello": [httpx.Response(503), httpx.Response(200, json={"ok": True})],
            "a/missing": httpx.Response(404),
        }
    )
    fast = client.RetryPolicy(attempts=3, base_delay=0.0)
    with client.DiscoveryClient(
        "http://svcreg", "t", http=httpx.Client(transport=transport), retry=fast
    ) as c:
        assert c.request("greet", "GET", "/hello").json() == {"ok": True}
        assert c.request("greet", "GET", "/missing").status_code == 404
    assert transport.calls["a/hello"] == 2  # type: ignore[attr-defined]
    assert transport.calls["a/missing"] == 1  # type: ignore[attr-defined]


def test_unknown_capability_is_named() -> None:
    transport = _mock(
        {
            "svcreg/v1/capabilities/nope": _capability_answer(),
            "svcreg/v1/capabilities": httpx.Response(200, json={"count": 0, "capabilities": [], "index": 1}),
        }
    )
    c = client.DiscoveryClient("http://svcreg", "t", http=httpx.Client(transport=transport))
    with c, pytest.raises(client.UnknownCapability, match="'nope'"):
        c.resolve("nope")


def test_self_registration_from_the_environment() -> None:
    from svcreg.client.selfregister import SelfRegistration  # noqa: PLC0415

    environ = {
        "POD_IP": "10.244.0.7",
        "POD_NAME": "backend-api-7d9f",
        "POD_NAMESPACE": "shop",
        "SVCREG_SERVICE_NAME": "backend-api",
        "SVCREG_SERVICE_PORT": "8000",
        "SVCREG_SERVICE_TAGS": "api, backend,publish",
        "SVCREG_SERVICE_CAPABILITIES": "rest-api",
        "SVCREG_SERVICE_METADATA": "zone=eu-1,tier=web",
        "SVCREG_SERVICE_CHECK_PATH": "/health",
        "SVCREG_SERVICE_DISPLAY_NAME": "Backend API",
    }
    registration = SelfRegistration.from_env(environ, namespace="shop")
    assert registration.name == "backend-api-7d9f"
    assert registration.spec == {
        "endpoint": "http://10.244.0.7:8000",
        "service": "backend-api",
        "displayName": "Backend API",
        "capabilities": ["rest-api"],
        "tags": ["api", "backend", "publish"],
        "metadata": {"zone": "eu-1", "tier": "web"},
        "healthCheck": {"path": "/health"},
    }
    ttl = SelfRegistration.from_env(
        {
            "SVCREG_SERVICE_ENDPOINT": "http://pay:8080",
            "SVCREG_SERVICE_CHECK": "ttl",
            "SVCREG_REGISTRATION_NAME": "pay",
        },
        namespace="shop",
    )
    assert ttl.name == "pay" and ttl.heartbeat_interval == 10.0  # a third of the default 30 s ttl


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({}, "SVCREG_SERVICE_PORT"),
        ({"SVCREG_SERVICE_PORT": "eighty"}, "SVCREG_SERVICE_PORT"),
        ({"SVCREG_SERVICE_PORT": "80", "SVCREG_SERVICE_TAGS": "Not_A_Label"}, "SVCREG_SERVICE_TAGS"),
        ({"SVCREG_SERVICE_PORT": "80", "SVCREG_SERVICE_WEIGHT": "-3"}, "SVCREG_SERVICE_WEIGHT"),
        ({"SVCREG_SERVICE_PORT": "80", "SVCREG_SERVICE_METADATA": "novalue"}, "SVCREG_SERVICE_METADATA"),
        ({"SVCREG_SERVICE_PORT": "80", "SVCREG_SERVICE_CHECK": "carrier-pigeon"}, "SVCREG_SERVICE_CHECK"),
    ],
)
def test_a_bad_environment_names_the_variable(environ: dict[str, str], variable: str) -> None:
    from svcreg.client.fromenv import spec_from_env  # noqa: PLC0415

    with pytest.raises(ValueError, match=variable):
        spec_from_env(environ)


def _reports(transport: httpx.MockTransport, seen: list[dict[str, object]]) -> httpx.MockTransport:
    inner = transport.handler  # type: ignore[attr-defined]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1/report/"):
            seen.append({"path": request.url.path, **json.loads(request.content)})
        return inner(request)  # type: ignore[no-any-return]

    wrapped = httpx.MockTransport(handler)
    wrapped.calls = transport.calls  # type: ignore[attr-defined]
    return wrapped


def test_request_reports_failures_and_the_recovery_it_saw_and_stops_on_403() -> None:
    accepted = httpx.Response(202, json={"namespace": "ns", "name": "a", "accepted": True, "ejected": False})
    seen: list[dict[str, object]] = []
    transport = _reports(
        _mock(
            {
                "svcreg/v1/capabilities/greet": _capability_answer("a"),
                "a/hello": [
                    httpx.Response(503),
                    httpx.Response(200),
                    httpx.Response(200),
                    httpx.Response(503),
                    httpx.Response(200),
                ],
                "svcreg/v1/report/ns/a": [
                    accepted,
                    accepted,
                    httpx.Response(403, json={"error": {"code": "Forbidden", "message": "no"}}),
                ],
            }
        ),
        seen,
    )
    fast = client.RetryPolicy(attempts=3, base_delay=0.0)
    with client.DiscoveryClient(
        "http://svcreg", "t", http=httpx.Client(transport=transport), retry=fast
    ) as c:
        assert c.request("greet", "GET", "/hello").status_code == 200
        # The 503 is reported, and so is the success that withdraws it; a healthy call is not.
        assert [r["outcome"] for r in seen] == ["5xx", "success"]
        assert seen[0]["path"] == "/v1/report/ns/a" and float(seen[0]["latencyMs"]) >= 0  # type: ignore[arg-type]
        assert c.request("greet", "GET", "/hello").status_code == 200
        assert len(seen) == 2
        # A 403 (no RBAC verb report) turns reporting off; the call itself still succeeds.
        assert c.request("greet", "GET", "/hello").status_code == 200
        assert len(seen) == 3 and not c.reporter.enabled
    off = client.DiscoveryClient(
        "http://svcreg", "t", http=httpx.Client(transport=transport), report_outcomes=False
    )
    assert not off.reporter.wants(("ns", "a"), "5xx")


async def test_the_async_client_reports_the_same_way() -> None:
    seen: list[dict[str, object]] = []
    accepted = httpx.Response(202, json={"namespace": "ns", "name": "a", "accepted": True, "ejected": False})
    transport = _reports(
        _mock(
            {
                "svcreg/v1/capabilities/greet": _capability_answer("a"),
                "a/hello": [httpx.Response(502), httpx.Response(200)],
                "svcreg/v1/report/ns/a": accepted,
            }
        ),
        seen,
    )
    fast = client.RetryPolicy(attempts=3, base_delay=0.0)
    async with client.AsyncDiscoveryClient(
        "http://svcreg", "t", http=httpx.AsyncClient(transport=transport), retry=fast
    ) as c:
        assert (await c.request("greet", "GET", "/hello")).status_code == 200
    assert [r["outcome"] for r in seen] == ["5xx", "success"]
