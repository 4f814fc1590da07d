"""The registration API writes as the caller, over real HTTP, with the API server answered in
process (what it does with the impersonation is proven in the integration tier)."""

from __future__ import annotations

import json as json_mod
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes import client as k8s_client

from svcreg.discovery.http.app import build_app
from svcreg.discovery.http.auth import Authorizer
from svcreg.discovery.http.discovery import Discovery
from svcreg.discovery.http.roles import Probing
from svcreg.discovery.index import Index
from svcreg.kube.api import KubeApi, Response
from svcreg.telemetry.metrics import Metrics
from tests.unit.test_discovery_units import FakeApi

BODY = {"spec": {"endpoint": "http://a.svc:80"}}


class NoSinks:
    """Heartbeats and reports, which these tests never send."""

    def record(self, *_: Any) -> None:
        raise AssertionError("no heartbeat expected")

    def report(self, *_: Any) -> bool:
        raise AssertionError("no report expected")


def probing(api: KubeApi) -> Probing:
    """The operator's role, writing through ``api``."""
    return Probing(heartbeats=NoSinks(), reports=NoSinks(), last_probes=lambda key: None, api=api)


class WritingApi(KubeApi):
    """The real client's calls over a stand-in transport: reviews as FakeApi ("good" is a
    ServiceAccount, "human" a person); each write recorded with whom it was made as."""

    def __init__(self) -> None:
        super().__init__(k8s_client.Configuration())
        self.reviews = FakeApi()
        self.writes: list[tuple[str, str | None]] = []

    async def request(self, method: str, path: str, *, json: Any = None, **options: Any) -> Response:
        if path.endswith("tokenreviews") and json["spec"]["token"] == "human":
            status = {"authenticated": True, "user": {"username": "alice@example.com", "groups": ["devs"]}}
            return Response(201, json_mod.dumps({"status": status}).encode())
        if "serviceregistrations" in path:
            if method == "GET":
                return Response(404, b'{"kind": "Status", "reason": "NotFound", "code": 404}')
            self.writes.append((method, options.get("impersonate")))
            return Response(201, json_mod.dumps({"metadata": {"generation": 1}}).encode())
        return await self.reviews.request(method, path, json=json, **options)


async def put(impersonate: bool, token: str) -> tuple[int, dict[str, Any], WritingApi]:
    api = WritingApi()
    metrics = Metrics()
    discovery = Discovery(
        Index(), Authorizer(api, metrics=metrics), metrics, role=probing(api), impersonate=impersonate
    )
    app = build_app(metrics, lambda: (True, {}), discovery)
    async with TestClient(TestServer(app)) as client:
        answer = await client.put(
            "/v1/registrations/a/r1", json=BODY, headers={"Authorization": f"Bearer {token}"}
        )
        return answer.status, await answer.json(), api


@pytest.mark.parametrize("impersonate", [True, False])
async def test_a_service_account_caller_is_written_as_itself_unless_turned_off(impersonate: bool) -> None:
    status, _, api = await put(impersonate, "good")
    assert status == 201
    assert api.writes == [("PATCH", "system:serviceaccount:a:r" if impersonate else None)]


async def test_a_caller_that_cannot_be_impersonated_narrowly_is_refused_not_written_as_svcreg() -> None:
    status, answer, api = await put(True, "human")
    assert status == 403 and answer["error"]["code"] == "NotAServiceAccount"
    assert api.writes == []


def test_merge_patch_follows_rfc_7386() -> None:
    from svcreg.core.mergepatch import merge_patch  # noqa: PLC0415

    target = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}
    patched = merge_patch(target, {"a": None, "b": {"c": 5, "d": None}, "e": [3], "f": {"g": None}})
    assert patched == {"b": {"c": 5}, "e": [3], "f": {}}
    assert target == {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}  # unchanged
    assert merge_patch({"a": 1}, [1]) == [1]  # a non-object replaces the whole


@pytest.mark.parametrize(
    ("raw", "parameter"),
    [(b"[]", "body"), (b"not json", "body"), (b'{"metadata": {}}', "metadata"), (b'{"spec": 3}', "spec")],
)
def test_a_bad_patch_body_is_a_400_naming_it(raw: bytes, parameter: str) -> None:
    from svcreg.core.errors import BadParameter  # noqa: PLC0415
    from svcreg.discovery.http.registrations import parse_patch  # noqa: PLC0415

    with pytest.raises(BadParameter) as refused:
        parse_patch(raw)
    assert refused.value.parameter == parameter


class RacingApi(WritingApi):
    """A stored registration whose resourceVersion moves under the first PATCH: by the operator's
    status write (spec unchanged), or by someone else's spec change."""

    def __init__(self, spec_changes: bool) -> None:
        super().__init__()
        self.spec_changes = spec_changes
        self.version = 1
        self.patches = 0

    async def request(self, method: str, path: str, *, json: Any = None, **options: Any) -> Response:
        if "serviceregistrations" not in path:
            return await super().request(method, path, json=json, **options)
        if method == "GET":
            spec = {
                "endpoint": "http://a.svc:80",
                "weight": 5 if self.spec_changes and self.version > 1 else 1,
            }
            body = {"metadata": {"resourceVersion": str(self.version), "generation": 1}, "spec": spec}
            return Response(200, json_mod.dumps(body).encode())
        self.patches += 1
        if self.patches == 1:  # the first PATCH loses the race
            self.version += 1
            return Response(
                409, b'{"kind": "Status", "reason": "Conflict", "code": 409, "message": "modified"}'
            )
        self.writes.append((method, json["metadata"]["resourceVersion"]))
        return Response(200, json_mod.dumps({"metadata": {"generation": 2}}).encode())


@pytest.mark.parametrize("spec_changes", [False, True])
async def test_a_patch_is_made_again_after_a_status_write_but_never_over_a_spec_change(
    spec_changes: bool,
) -> None:
    api = RacingApi(spec_changes)
    metrics = Metrics()
    discovery = Discovery(Index(), Authorizer(api, metrics=metrics), metrics, role=probing(api))
    app = build_app(metrics, lambda: (True, {}), discovery)
    async with TestClient(TestServer(app)) as client:
        answer = await client.patch(
            "/v1/registrations/a/r1", json={"spec": {"weight": 7}}, headers={"Authorization": "Bearer good"}
        )
        if spec_changes:
            assert answer.status == 409 and api.writes == []
        else:
            assert answer.status == 200, await answer.text()
            assert api.writes == [("PATCH", "2")]  # made again on the version the status write left
