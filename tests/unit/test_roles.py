"""A process's role decides what it does with writes and member questions, over real HTTP."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from svcreg.core import wire
from svcreg.core.keys import Key
from svcreg.discovery.http.app import build_app
from svcreg.discovery.http.auth import Authorizer
from svcreg.discovery.http.discovery import Discovery
from svcreg.discovery.http.roles import Group, Probing, Relaying, Role
from svcreg.discovery.index import Index
from svcreg.telemetry.metrics import Metrics
from tests.unit.test_discovery_units import FakeApi, body

GOOD = {"Authorization": "Bearer good"}


class Sinks:
    def __init__(self) -> None:
        self.heartbeats: list[tuple[Key, str]] = []

    def record(self, key: Key, status: wire.HeartbeatStatus, note: str) -> None:
        self.heartbeats.append((key, status))

    def report(self, key: Key, caller: str, outcome: str) -> bool:
        return False


def discovery(role: Role) -> Discovery:
    index = Index()
    index.observe("ADDED", body("r1", namespace="ns", healthCheck={"type": "ttl"}))
    index.synced = True
    metrics = Metrics()
    return Discovery(index, Authorizer(FakeApi(), metrics=metrics), metrics, role=role)  # type: ignore[arg-type]


async def post(role: Role, path: str) -> tuple[int, dict[str, Any]]:
    served = discovery(role)
    async with TestClient(TestServer(build_app(served.metrics, lambda: (True, {}), served))) as client:
        answer = await client.post(path, json={}, headers=GOOD)
        return answer.status, await answer.json()


async def test_a_replica_with_no_operator_refuses_a_heartbeat_saying_where_to_send_it() -> None:
    status, answer = await post(Relaying(), "/v1/heartbeat/ns/r1")
    assert status == 503 and answer["error"]["code"] == "NotProber"


async def test_the_prober_keeps_a_heartbeat() -> None:
    sinks = Sinks()
    role = Probing(heartbeats=sinks, reports=sinks, last_probes=lambda key: None, api=None)  # type: ignore[arg-type]
    status, _ = await post(role, "/v1/heartbeat/ns/r1")
    assert status == 200 and sinks.heartbeats == [(("ns", "r1"), "passing")]


async def test_only_a_member_of_a_prober_group_answers_vantage_questions() -> None:
    sinks = Sinks()
    alone = Probing(heartbeats=sinks, reports=sinks, last_probes=lambda key: None, api=None)  # type: ignore[arg-type]
    status, answer = await post(alone, "/internal/v1/vantage/ns/r1")
    assert status == 404 and answer["error"]["code"] == "NotAMember"
    status, answer = await post(Relaying("http://operator"), "/internal/v1/vantage/ns/r1")
    assert status == 404 and answer["error"]["code"] == "NotAMember"


async def test_a_member_refuses_vantage_questions_from_anyone_but_the_members() -> None:
    sinks = Sinks()

    async def vantage(key: Key) -> dict[str, bool]:
        return {"http://a": True}

    group = Group(owner_url=lambda key: None, vantage=vantage, auth=None, username="system:svcreg")  # type: ignore[arg-type]
    role = Probing(heartbeats=sinks, reports=sinks, last_probes=lambda key: None, api=None, group=group)  # type: ignore[arg-type]
    served = discovery(role)
    object.__setattr__(group, "auth", served.auth)
    async with TestClient(TestServer(build_app(served.metrics, lambda: (True, {}), served))) as client:
        answer = await client.post("/internal/v1/vantage/ns/r1", headers=GOOD)
        assert answer.status == 403 and (await answer.json())["error"]["code"] == "NotAMember"
