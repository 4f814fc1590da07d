"""The discovery endpoint with real ServiceAccount tokens, RBAC, and a real API server."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from svcreg.devtools.controlplane.cluster import Cluster
from tests.targets import HttpTarget, free_port

from .kubehelpers import Kube, expired_token, registration
from .operator_process import OperatorProcess

AUDIENCE = "svcreg"


@dataclass
class World:
    operator: OperatorProcess
    ns: str
    other_ns: str
    tokens: dict[str, str]
    target: HttpTarget

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.operator.port}"

    def get(self, path: str, who: str | None = "reader", **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        return httpx.get(self.url + path, headers=headers, **{"timeout": 60, **kwargs})

    def names(self, path: str, who: str = "reader", **params: Any) -> list[str]:
        answer = self.get(path, who, params=params)
        assert answer.status_code == 200, answer.text
        return [i["name"] for i in answer.json()["items"]]


@pytest.fixture(scope="module")
def world(k8s: Kube, control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ns, other = k8s.create_namespace("d"), k8s.create_namespace("d")
    for sa in ("reader", "stranger", "beater", "revocable"):
        k8s.create_service_account(ns, sa)
    k8s.create_service_account(other, "other")
    k8s.grant(ns, "reader", ["get", "list", "watch"])
    k8s.grant(other, "other", ["get", "list", "watch"])
    k8s.grant(ns, "beater", ["list", "heartbeat"])
    k8s.grant(ns, "revocable", ["get", "list", "watch"])
    target = HttpTarget()
    check = {"intervalSeconds": 1, "timeoutSeconds": 0.5, "failureThreshold": 1}
    manifests = {
        "r1": {
            "service": "orders",
            "version": "1.0.0",
            "capabilities": ["greet"],
            "tags": ["api"],
            "metadata": {"env": "prod"},
            "weight": 100,
        },
        "r2": {
            "displayName": "Orders (canary)",
            "service": "orders",
            "version": "2.1.0",
            "capabilities": [
                "greet",
                {
                    "name": "farewell",
                    "version": "1.4.0",
                    "inputSchema": {"type": "object", "required": ["who"]},
                },
            ],
            "tags": ["api", "canary"],
            "metadata": {"env": "staging"},
            "weight": 300,
        },
        "r3": {"service": "billing", "version": "1.5.0", "capabilities": ["greet"], "weight": 0},
        "r4": {"service": "billing", "version": "1.6.0", "capabilities": ["greet"], "maintenance": True},
    }
    for name, spec in manifests.items():
        k8s.apply(registration(name, {"endpoint": target.url, "healthCheck": check, **spec}), ns)
    k8s.apply(
        registration(
            "dead",
            {
                "service": "orders",
                "endpoint": f"http://127.0.0.1:{free_port()}",
                "capabilities": ["greet"],
                "healthCheck": check,
            },
        ),
        ns,
    )
    k8s.apply(
        registration(
            "beat",
            {
                "service": "pay",
                "endpoint": "http://10.0.0.5:80",
                "healthCheck": {"type": "ttl", "ttlSeconds": 60, "intervalSeconds": 1, "timeoutSeconds": 0.5},
            },
        ),
        ns,
    )
    k8s.apply(
        registration(
            "elsewhere",
            {"service": "orders", "endpoint": target.url, "capabilities": ["greet"], "healthCheck": check},
        ),
        other,
    )
    log = tmp_path_factory.mktemp("discovery") / "operator.log"
    operator = OperatorProcess(
        control_plane,
        log,
        "--namespace",
        "d-*",
        "--probe-allow",
        "127.0.0.0/8",
        "--token-audience",
        AUDIENCE,
        "--review-cache-seconds",
        "5",
        "--max-watchers",
        "3",
        "--max-watchers-per-identity",
        "3",
    ).start()
    tokens = {
        "reader": k8s.token(ns, "reader", [AUDIENCE]),
        "stranger": k8s.token(ns, "stranger", [AUDIENCE]),
        "beater": k8s.token(ns, "beater", [AUDIENCE]),
        "revocable": k8s.token(ns, "revocable", [AUDIENCE]),
        "other": k8s.token(other, "other", [AUDIENCE]),
        "wrong-audience": k8s.token(ns, "reader", ["someone-else"]),
        "expired": expired_token(k8s, ns, "reader", [AUDIENCE]),
    }
    w = World(operator, ns, other, tokens, target)
    for name in ("r1", "r2", "r3", "dead"):
        k8s.kubectl(
            "wait",
            "--for=jsonpath={.status.health}=" + ("Unhealthy" if name == "dead" else "Healthy"),
            f"svcreg/{name}",
            "-n",
            ns,
            "--timeout=60s",
        )
    k8s.kubectl("wait", "--for=jsonpath={.status.health}=Maintenance", "svcreg/r4", "-n", ns, "--timeout=60s")
    k8s.kubectl(
        "wait", "--for=jsonpath={.status.health}=Healthy", "svcreg/elsewhere", "-n", other, "--timeout=60s"
    )
    operator.wait_until(
        lambda: len(w.names("/v1/services", service="orders")) == 2, "discovery to see the probes"
    )
    yield w
    operator.stop()
    target.close()
    assert "Traceback" not in operator.log_text(), operator.log_text()[-4000:]


def test_tokens_are_required_and_checked(world: World) -> None:
    for who, headers in (
        (None, {}),
        (None, {"Authorization": "Basic abc"}),
        (None, {"Authorization": "Bearer garbage"}),
    ):
        answer = world.get("/v1/services", who, headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "Unauthenticated"
    wrong = world.get("/v1/services", "wrong-audience")
    assert wrong.status_code == 401 and "token rejected" in wrong.json()["error"]["message"]
    expired = world.get("/v1/services", "expired")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    forbidden = world.get("/v1/services", "stranger")
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "Forbidden"


def test_answers_are_limited_to_readable_namespaces(world: World) -> None:
    assert set(world.names("/v1/services", "reader", health="any")) == {
        "r1",
        "r2",
        "r3",
        "r4",
        "dead",
        "beat",
    }
    assert world.names("/v1/services", "other") == ["elsewhere"]
    assert world.get("/v1/services", "reader", params={"namespace": world.other_ns}).status_code == 403
    one = world.get(f"/v1/services/{world.ns}/r1")
    assert one.status_code == 200 and one.json()["name"] == "r1" and one.json()["health"] == "Healthy"
    assert world.get(f"/v1/services/{world.other_ns}/elsewhere").status_code == 403
    assert world.get(f"/v1/services/{world.ns}/nope").status_code == 404


def test_filters(world: World) -> None:
    assert world.names("/v1/services") == ["r1", "r2", "r3"]  # default: Healthy and Degraded
    assert world.names("/v1/services", service="orders") == ["r1", "r2"]
    assert world.names("/v1/services", capability=["greet", "farewell"]) == ["r2"]
    assert world.names("/v1/services", tag=["api", "canary"]) == ["r2"]
    assert world.names("/v1/services", version=">=1.2,<2") == ["r3"]
    assert world.names("/v1/services", **{"meta.env": "prod"}) == ["r1"]
    assert world.names("/v1/services", health="Unhealthy") == ["dead"]
    assert world.names("/v1/services", health="Maintenance") == ["r4"]
    assert set(world.names("/v1/services", health="any", service="billing")) == {"r3", "r4"}
    assert world.names("/v1/services", namespace=world.ns, service="orders") == ["r1", "r2"]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"health": "Sick"}, "health"),
        ({"version": ">=banana"}, "version"),
        ({"capability": "Bad_Cap"}, "capability"),
        ({"wait": "soon"}, "wait"),
        ({"index": "-1"}, "index"),
        ({"colour": "blue"}, "colour"),
        ({"index": "1", "wait": "9h"}, "wait"),
    ],
)
def test_bad_parameters_are_400s_naming_the_parameter(
    world: World, params: dict[str, str], parameter: str
) -> None:
    answer = world.get("/v1/services", params=params)
    assert answer.status_code == 400
    assert answer.json()["error"]["parameter"] == parameter
    assert answer.json()["error"]["message"].startswith(parameter)


def test_capabilities_and_stats(world: World) -> None:
    listed = {c["name"]: c for c in world.get("/v1/capabilities").json()["capabilities"]}
    assert listed["farewell"]["versions"] == ["1.4.0"]
    # A capability contract is served with the capability (seed 003's inputs and outputs).
    farewell = world.get("/v1/capabilities/farewell").json()["items"][0]["capabilities"][1]
    assert farewell["inputSchema"] == {"type": "object", "required": ["who"]}
    assert listed["greet"]["instances"] == {"Healthy": 3, "Maintenance": 1, "Unhealthy": 1}
    providers = world.get("/v1/capabilities/farewell", params={"version": "^1.4"}).json()
    assert [i["name"] for i in providers["items"]] == ["r2"]
    assert world.get("/v1/capabilities/farewell", params={"version": ">=2"}).json()["count"] == 0
    stats = world.get("/v1/stats").json()
    assert stats["total"] == 6 and stats["byHealth"]["Healthy"] == 3 and stats["uniqueCapabilities"] == 2
    assert stats["capabilitiesPerService"]["orders"] == 2


def test_select_one_is_weighted_and_never_picks_weight_zero(world: World) -> None:
    picks = collections.Counter(
        world.get("/v1/capabilities/greet", params={"select": "one"}).json()["selected"]["name"]
        for _ in range(400)
    )
    assert set(picks) == {"r1", "r2"}  # r3 has weight 0
    assert 2.0 < picks["r2"] / picks["r1"] < 4.5  # weights 300:100
    missing = world.get("/v1/capabilities/nothing-here", params={"select": "one"})
    assert missing.status_code == 404


def test_what_seed_users_write_finds_the_same_things(world: World, k8s: Kube) -> None:
    """Service name patterns, comma lists of tags, health in any case, one instance of a service
    by weight, the catalog, the average of capabilities, a display name and registeredAt."""
    assert world.names("/v1/services", service="ord*") == ["r1", "r2"]
    assert world.names("/v1/services", service="b?lling", health="any") == ["r3", "r4"]
    assert world.names("/v1/services", tag="api,canary") == ["r2"]  # both, as tag=api&tag=canary
    assert world.names("/v1/services", health="unhealthy") == ["dead"]
    assert world.names("/v1/services", health="HEALTHY,maintenance", service="billing") == ["r3", "r4"]
    assert world.get("/v1/services", params={"service": "Pay*"}).json()["error"]["parameter"] == "service"
    picks = {
        world.get("/v1/services", params={"service": "orders", "select": "one"}).json()["selected"]["name"]
        for _ in range(60)
    }
    assert picks == {"r1", "r2"}
    none = world.get("/v1/services", params={"service": "billing", "select": "one"})
    assert none.status_code == 404  # r3 has weight 0, r4 is in maintenance
    catalog = {s["service"]: s for s in world.get("/v1/catalog").json()["services"]}
    assert catalog["orders"]["tags"] == ["api", "canary"]
    assert catalog["orders"]["versions"] == ["1.0.0", "2.1.0"]
    assert catalog["orders"]["instances"] == {"Healthy": 2, "Unhealthy": 1}
    assert catalog["billing"]["instances"] == {"Healthy": 1, "Maintenance": 1}
    assert "orders" not in {
        s["service"] for s in world.get("/v1/catalog", "stranger").json().get("services", [])
    }
    stats = world.get("/v1/stats").json()
    assert stats["averageCapabilitiesPerService"] == round(
        sum(stats["capabilitiesPerService"].values()) / 3, 2
    )
    r2 = world.get(f"/v1/services/{world.ns}/r2").json()
    assert r2["displayName"] == "Orders (canary)"
    # The last probe of each instance, from the prober's memory.
    [probe] = r2["lastProbes"]
    assert probe["passed"] is True and probe["reason"] == "ProbeSucceeded" and probe["latencyMs"] >= 0
    assert probe["at"].endswith("+00:00") and probe["instance"] == ""  # the endpoint itself
    [dead] = world.get(f"/v1/services/{world.ns}/dead").json()["lastProbes"]
    assert dead["passed"] is False and dead["reason"] == "ConnectionRefused" and dead["message"]
    created = k8s.get_registration(world.ns, "r2")["metadata"]["creationTimestamp"]
    assert r2["registeredAt"] == created
    wide = k8s.kubectl("get", "svcreg", "r2", "-n", world.ns, "-o", "wide").stdout
    assert "Orders (canary)" in wide and "DISPLAY" in wide


def test_explain_says_why_each_candidate_is_in_or_out(world: World) -> None:
    """/v1/explain and svcreg explain: every provider of a capability, in or out and why, with
    the last probe of a failing one; the other namespace's provider is neither named nor counted."""
    answer = world.get("/v1/explain", params={"capability": "greet", "version": ">=1.0,<2"}).json()
    by_name = {c["name"]: c for c in answer["candidates"]}
    assert set(by_name) == {"r1", "r2", "r3", "r4", "dead"} and "unreadable" not in answer
    assert by_name["r1"]["included"] and by_name["r3"]["included"]
    assert by_name["r2"]["reasons"] == ["version 2.1.0 is outside >=1.0,<2"]
    assert by_name["r4"]["reasons"] == ["in maintenance (asked for health=Maintenance or any to see it)"]
    assert any("weight 0" in n for n in by_name["r3"]["notes"])
    dead = by_name["dead"]
    assert (
        dead["reasons"][0].startswith("health is Unhealthy")
        and dead["lastProbes"][0]["reason"] == "ConnectionRefused"
    )
    # The included ones are exactly what the same query answers.
    same = world.names("/v1/services", capability="greet", version=">=1.0,<2")
    assert sorted(n for n, c in by_name.items() if c["included"]) == same
    assert world.get("/v1/explain", "stranger", params={"capability": "greet"}).status_code == 403
    shown = subprocess.run(
        [sys.executable, "-m", "svcreg.cli", "explain", "--capability", "greet"],
        env=os.environ | {"SVCREG_URL": world.url, "SVCREG_TOKEN": world.tokens["reader"]},
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    dead_row = next(line for line in shown.splitlines() if " dead " in line)
    assert " no " in dead_row and "ConnectionRefused" in dead_row
    assert "namespaces you may not read" not in shown
    # svcreg discover, the same client from the shell: a table, or JSON.
    env = os.environ | {"SVCREG_URL": world.url, "SVCREG_TOKEN": world.tokens["reader"]}
    listed = subprocess.run(
        [sys.executable, "-m", "svcreg.cli", "discover", "--service", "orders"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert listed[0].split()[:5] == ["NAMESPACE", "NAME", "SERVICE", "VERSION", "HEALTH"]
    assert sorted(line.split()[1] for line in listed[1:]) == ["r1", "r2"]
    as_json = subprocess.run(
        [sys.executable, "-m", "svcreg.cli", "discover", "--capability", "greet", "-o", "json"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert sorted(i["name"] for i in json.loads(as_json)["items"]) == ["r1", "r2", "r3"]
    refused = subprocess.run(
        [sys.executable, "-m", "svcreg.cli", "discover", "--health", "sometimes"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 1 and "health" in refused.stderr


def test_consumers_shows_who_asks_for_a_capability_to_its_owners(world: World) -> None:
    """/v1/consumers: the reader asked for farewell; a reader of every namespace holding it sees
    that; a caller who cannot read them all (stranger; other, for greet held in two namespaces)
    gets 403."""
    for _ in range(3):
        assert world.get("/v1/capabilities/farewell").status_code == 200
    answer = world.get("/v1/consumers", params={"capability": "farewell"})
    assert answer.status_code == 200, answer.text
    [reader] = [c for c in answer.json()["consumers"] if c["identity"].endswith(":reader")]
    assert reader["requests"] >= 3 and reader["lastSeen"] >= reader["firstSeen"]
    assert world.get("/v1/consumers", "stranger", params={"capability": "farewell"}).status_code == 403
    assert world.get("/v1/consumers", "other", params={"capability": "greet"}).status_code == 403
    both = world.get("/v1/consumers", params={"capability": "greet", "service": "orders"})
    assert both.status_code == 400 and both.json()["error"]["parameter"] == "service"


def test_etag_and_304(world: World) -> None:
    first = world.get("/v1/services", params={"service": "orders"})
    again = world.get(
        "/v1/services", params={"service": "orders"}, headers={"If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304 and again.content == b""


def test_long_poll_wakes_on_a_change(world: World, k8s: Kube) -> None:
    index = world.get("/v1/services").json()["index"]
    result: dict[str, Any] = {}

    def poll() -> None:
        params = {"index": str(index), "wait": "60s", "health": "any"}
        result["answer"] = world.get("/v1/services", params=params)

    thread = threading.Thread(target=poll)
    thread.start()
    k8s.kubectl(
        "patch", "svcreg", "r1", "-n", world.ns, "--type=merge", "-p", json.dumps({"spec": {"weight": 150}})
    )
    thread.join(60)
    answer = result["answer"]
    assert answer.status_code == 200 and answer.json()["index"] > index
    r1 = next(i for i in answer.json()["items"] if i["name"] == "r1")
    assert r1["weight"] == 150
    # Until the operator has observed the edited spec, its old health is not served.
    assert r1["health"] == "Unknown" or r1["generation"] == 2


def _events(
    world: World, who: str, count: int, headers: dict[str, str] | None = None, **params: str
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    with httpx.stream(
        "GET",
        world.url + "/v1/watch",
        params=params,
        timeout=60,
        headers={"Authorization": f"Bearer {world.tokens[who]}", **(headers or {})},
    ) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        event: dict[str, Any] = {}
        for line in stream.iter_lines():
            if line.startswith("id: "):
                event["id"] = int(line[4:])
            elif line.startswith("event: "):
                event["event"] = line[7:]
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line == "" and event:
                found.append(event)
                event = {}
                if len(found) >= count:
                    return found
    return found


def test_watch_streams_events_and_resumes(world: World, k8s: Kube) -> None:
    start = world.get("/v1/services").json()["index"]
    k8s.apply(
        registration(
            "fresh",
            {
                "service": "fresh",
                "endpoint": world.target.url,
                "healthCheck": {"intervalSeconds": 1, "timeoutSeconds": 0.5},
            },
        ),
        world.ns,
    )
    events = _events(world, "reader", 2, headers={"Last-Event-ID": str(start)}, service="fresh")
    assert [e["event"] for e in events] == ["registered", "health-changed"]
    assert events[1]["data"]["registration"]["health"] == "Healthy"
    # Before and after: the health it changed from rides along.
    assert events[1]["data"]["previousHealth"] == "Unknown" and "previousHealth" not in events[0]["data"]
    k8s.kubectl("delete", "svcreg", "fresh", "-n", world.ns)
    resumed = _events(world, "reader", 1, headers={"Last-Event-ID": str(events[-1]["id"])}, service="fresh")
    assert resumed[0]["event"] == "deleted" and resumed[0]["id"] > events[-1]["id"]
    # A caller who may not read the namespace sees nothing of it.
    assert world.get("/v1/watch", "stranger").status_code == 403


def _heartbeat_counts(world: World) -> dict[str, float]:
    text = httpx.get(world.url + "/metrics").text
    found = re.findall(r'^svcreg_heartbeats_total\{result="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {result: float(value) for result, value in found}


def test_heartbeat_needs_its_rbac_verb_and_feeds_the_ttl_check(world: World, k8s: Kube) -> None:
    before = _heartbeat_counts(world)
    path = f"/v1/heartbeat/{world.ns}/beat"
    headers = {"Authorization": f"Bearer {world.tokens['reader']}"}
    assert httpx.post(world.url + path, headers=headers).status_code == 403
    beater = {"Authorization": f"Bearer {world.tokens['beater']}"}
    bad = httpx.post(world.url + path, headers=beater, json={"status": "fine"})
    assert bad.status_code == 400 and bad.json()["error"]["parameter"] == "status"
    ok = httpx.post(world.url + path, headers=beater, json={"status": "warning", "note": "disk 91%"})
    assert ok.status_code == 200 and ok.json()["accepted"] is True
    k8s.kubectl(
        "wait", "--for=jsonpath={.status.health}=Degraded", "svcreg/beat", "-n", world.ns, "--timeout=30s"
    )
    assert httpx.post(world.url + path, headers=beater, json={}).status_code == 200
    k8s.kubectl(
        "wait", "--for=jsonpath={.status.health}=Healthy", "svcreg/beat", "-n", world.ns, "--timeout=30s"
    )
    assert httpx.post(world.url + f"/v1/heartbeat/{world.ns}/nope", headers=beater).status_code in (403, 404)
    # Counted: two accepted; refused were the reader's, the bad status and the unknown name.
    after = _heartbeat_counts(world)
    assert after["accepted"] - before.get("accepted", 0) == 2
    assert after["refused"] - before.get("refused", 0) == 3


def test_a_heartbeat_to_a_registration_that_is_not_ttl_is_refused(world: World) -> None:
    beater = {"Authorization": f"Bearer {world.tokens['beater']}"}
    refused = httpx.post(world.url + f"/v1/heartbeat/{world.ns}/r1", headers=beater)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "NotTtl" and "not ttl" in refused.json()["error"]["message"]


def test_a_filtered_watch_hears_an_item_leave_its_filter(world: World, k8s: Kube) -> None:
    spec = {
        "service": "leaving",
        "endpoint": world.target.url,
        "tags": ["blue"],
        "healthCheck": {"type": "none"},
    }
    k8s.apply(registration("leaver", spec), world.ns)
    world.operator.wait_until(lambda: world.names("/v1/services", service="leaving") == ["leaver"], "leaver")
    start = world.get("/v1/services").json()["index"]
    k8s.kubectl("patch", "svcreg/leaver", "-n", world.ns, "--type=merge", "-p", '{"spec":{"tags":["green"]}}')
    events = _events(world, "reader", 1, headers={"Last-Event-ID": str(start)}, tag="blue")
    assert events[0]["event"] == "deleted" and events[0]["data"]["registration"]["name"] == "leaver"
    k8s.kubectl("delete", "svcreg", "leaver", "-n", world.ns)


def test_open_watches_are_capped(world: World) -> None:
    headers = {"Authorization": f"Bearer {world.tokens['reader']}"}
    with contextlib.ExitStack() as stack:
        open_lines = []  # kept: a discarded line iterator closes its response
        for _ in range(3):
            stream = stack.enter_context(
                httpx.stream("GET", world.url + "/v1/watch", headers=headers, timeout=30)
            )
            assert stream.status_code == 200
            lines = stream.iter_lines()
            next(lines)  # the stream is open on the server
            open_lines.append(lines)
        over = world.get("/v1/watch", timeout=10)
        assert over.status_code == 429 and over.headers["Retry-After"] == "5"
        assert over.json()["error"]["code"] == "TooManyWatchers"

    def slot_free() -> bool:
        with httpx.stream("GET", world.url + "/v1/watch", headers=headers, timeout=30) as stream:
            return stream.status_code == 200

    world.operator.wait_until(slot_free, "the closed watches to free their slots")


def _quiet_index(world: World, who: str) -> int:
    """An index no change has passed for a second: a long poll from it really waits."""

    def settled() -> bool:
        start = world.get("/v1/services", who).json()["index"]
        answer = world.get("/v1/services", who, params={"index": start, "wait": "1s"}).json()
        found.append(start)
        return bool(answer["index"] == start)

    found: list[int] = []
    world.operator.wait_until(settled, "the index to be quiet")
    return found[-1]


def test_long_lived_answers_follow_revoked_rights(world: World, k8s: Kube) -> None:
    """An open watch ends, and a long poll answers 403, once the caller's RBAC is revoked:
    within the review cache lifetime (5 s here) plus one re-check."""
    headers = {"Authorization": f"Bearer {world.tokens['revocable']}"}
    poll: dict[str, httpx.Response] = {}
    with httpx.stream("GET", world.url + "/v1/watch", headers=headers, timeout=90) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        next(lines)
        index = _quiet_index(world, "revocable")

        def long_poll() -> None:
            params = {"index": index, "wait": "60s"}
            poll["answer"] = world.get("/v1/services", "revocable", params=params, timeout=90)

        poller = threading.Thread(target=long_poll)
        poller.start()
        k8s.revoke(world.ns, "revocable")
        for _ in lines:  # keep-alives until the server ends the stream: the revocation is seen
            pass
    # Wake the long poll with a change, after the revocation has reached the review cache.
    spec = {"endpoint": world.target.url, "healthCheck": {"type": "none"}}
    k8s.apply(registration("wake-up", spec), world.ns)
    poller.join(90)
    assert poll["answer"].status_code == 403, poll["answer"].text
    k8s.kubectl("delete", "svcreg", "wake-up", "-n", world.ns)


def test_openapi_describes_every_route(world: World) -> None:
    document = httpx.get(world.url + "/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    for path in (
        "/v1/services",
        "/v1/services/{namespace}/{name}",
        "/v1/capabilities",
        "/v1/capabilities/{name}",
        "/v1/stats",
        "/v1/watch",
        "/v1/heartbeat/{namespace}/{name}",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in document["paths"]
    required = document["components"]["schemas"]["Registration"]["required"]
    item = world.get("/v1/services").json()["items"][0]
    assert set(required) <= set(item)


def test_metrics_cover_requests_auth_cache_and_index(world: World) -> None:
    world.get("/v1/services")
    text = httpx.get(world.url + "/metrics").text
    assert 'svcreg_http_requests_total{code="200",method="GET",route="/v1/services"}' in text
    assert 'svcreg_auth_cache_lookups_total{cache="tokenreview",result="hit"}' in text
    assert "svcreg_index_registrations 7.0" in text
    registered = re.search(r'^svcreg_registration_changes_total\{kind="registered"\} (\S+)$', text, re.M)
    assert registered is not None and float(registered.group(1)) >= 7


def test_each_identity_has_its_own_request_rate(world: World, control_plane: Cluster, tmp_path: Path) -> None:
    """Over its rate (2/s, bursts of 4 here) a caller gets 429 with Retry-After; another
    identity is not slowed by it."""
    process = OperatorProcess(
        control_plane, tmp_path / "limited.log", "--discovery-only", "--namespace", world.ns,
        "--token-audience", AUDIENCE,
        "--rate-limit", "2", "--log-format", "json", "--access-log",
    ).start()  # fmt: skip
    url = f"http://127.0.0.1:{process.port}/v1/services"
    try:
        ready = f"http://127.0.0.1:{process.port}/readyz"
        process.wait_until(lambda: httpx.get(ready).status_code == 200, "the limited operator to be ready")
        reader = {"Authorization": f"Bearer {world.tokens['reader']}"}
        answers = [httpx.get(url, headers=reader, timeout=10) for _ in range(20)]
        codes = [a.status_code for a in answers]
        assert codes[:4] == [200] * 4 and 429 in codes, codes
        refused = next(a for a in answers if a.status_code == 429)
        assert (
            refused.json()["error"]["code"] == "TooManyRequests" and int(refused.headers["Retry-After"]) >= 1
        )
        other = httpx.get(url, headers={"Authorization": f"Bearer {world.tokens['beater']}"}, timeout=10)
        assert other.status_code == 200
        # The same process logs JSON, one access line per request: id (echoed), route, caller.
        traced = httpx.get(url, headers={**reader, "X-Request-Id": "trace-7"}, timeout=10)
        assert traced.headers["X-Request-Id"] == "trace-7"
        lines = [json.loads(line) for line in process.log_text().splitlines() if line.startswith("{")]
        access = [line for line in lines if line.get("request_id") == "trace-7"]
        assert access and access[0]["route"] == "/v1/services" and access[0]["status"] in (200, 429)
        assert access[0]["caller"].endswith(":reader") and access[0]["logger"] == "svcreg.access"
        assert any(line["level"] == "INFO" and line["logger"] == "svcreg" for line in lines)
    finally:
        process.stop()


def test_discovery_serves_https_and_reloads_a_renewed_certificate(
    world: World, control_plane: Cluster, tmp_path: Path
) -> None:
    """--tls-cert-file/--tls-key-file: HTTPS with the client trusting a private CA; the files
    replaced in place (as the kubelet swaps a renewed Secret) are served without a restart."""
    from svcreg.client import DiscoveryClient  # noqa: PLC0415
    from svcreg.devtools.controlplane import pki  # noqa: PLC0415

    first, second = pki.generate(tmp_path / "first"), pki.generate(tmp_path / "second")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(first.serving_cert.read_bytes())
    key.write_bytes(first.serving_key.read_bytes())
    process = OperatorProcess(
        control_plane, tmp_path / "tls.log", "--discovery-only", "--namespace", world.ns,
        "--token-audience", AUDIENCE,
        "--tls-cert-file", str(cert), "--tls-key-file", str(key), tls_ca=first.ca_cert,
    ).start()  # fmt: skip
    try:
        # Answering is not being ready: until the index has synced nothing is readable yet.
        process.wait_until(lambda: (process.ready() or {}).get("httpStatus") == 200, "/readyz to say ready")
        with DiscoveryClient(process.url, world.tokens["reader"], ca_file=first.ca_cert) as client:
            assert {i.name for i in client.services(service="orders").items or []} == {"r1", "r2"}
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on the TLS port
            httpx.get(f"http://127.0.0.1:{process.port}/readyz", timeout=5)
        # Renewed: a certificate from another CA written over the same files.
        staged = tmp_path / "staged"
        staged.mkdir()
        (staged / "tls.crt").write_bytes(second.serving_cert.read_bytes())
        (staged / "tls.key").write_bytes(second.serving_key.read_bytes())
        (staged / "tls.key").replace(key)
        (staged / "tls.crt").replace(cert)

        def trusted_by_the_new_ca() -> bool:
            try:
                context = ssl.create_default_context(cafile=str(second.ca_cert))
                return httpx.get(f"{process.url}/readyz", verify=context, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        process.wait_until(trusted_by_the_new_ca, "the renewed certificate to be served")
        with pytest.raises(httpx.HTTPError):  # the old CA no longer vouches for what is served
            httpx.get(f"{process.url}/readyz", verify=process.verify, timeout=5)
    finally:
        process.stop()
    assert "TLS certificate" in process.log_text() and "reloaded" in process.log_text()


def test_openapi_holds_against_generated_requests(
    world: World, control_plane: Cluster, tmp_path: Path
) -> None:
    """schemathesis generates requests from /openapi.json: no 5xx, no answer outside the schema.

    /v1/watch is left out: a stream that never ends cannot be checked request by request. The
    operator under test holds long polls at most 1 s, so generated waits finish in time.
    """
    process = OperatorProcess(
        control_plane,
        tmp_path / "schemathesis.log",
        "--namespace",
        world.ns,
        "--token-audience",
        AUDIENCE,
        "--max-wait",
        "1",
        "--probe-allow",
        "127.0.0.0/8",
    ).start()
    try:
        _schemathesis(
            f"http://127.0.0.1:{process.port}", world.tokens["reader"], tmp_path / "schemathesis.out"
        )
    finally:
        process.stop()
    assert "Traceback" not in process.log_text(), process.log_text()[-4000:]


def _schemathesis(url: str, token: str, report: Path) -> None:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(Path(__file__).parent / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "-H",
        f"Authorization: Bearer {token}",
        "--exclude-path",
        "/v1/watch",
        "--max-examples",
        "200",
        "--request-timeout",
        "10",
        "--seed",
        "1",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    output = result.stdout + result.stderr
    report.write_text(output)
    failures = max(output.find("FAILURES"), output.find("Failures"))
    shown = output[failures : failures + 6000] if failures >= 0 else output[-4000:]
    assert result.returncode == 0, f"{shown}\n(the whole report: {report})"
    match = re.search(r"(\d+) generated, (\d+) passed", output)
    assert match is not None, output[-2000:]
    generated, passed = int(match.group(1)), int(match.group(2))
    assert generated >= 1000 and passed == generated, output[-2000:]


def test_a_replica_relays_heartbeats_and_asks_the_operator_for_last_probes(
    world: World, control_plane: Cluster, tmp_path: Path
) -> None:
    """With --operator-url, a discovery-only replica relays heartbeats to the operator with the
    caller's token, and fills lastProbes from the operator's prober (steady state: no writes)."""
    replica = OperatorProcess(
        control_plane, tmp_path / "relay.log", "--discovery-only", "--namespace", world.ns,
        "--token-audience", AUDIENCE, "--operator-url", world.url,
    ).start()  # fmt: skip
    try:
        url = f"http://127.0.0.1:{replica.port}"
        beat = httpx.post(
            f"{url}/v1/heartbeat/{world.ns}/beat",
            headers={"Authorization": f"Bearer {world.tokens['beater']}"},
            timeout=30,
        )
        assert beat.status_code == 200 and beat.json()["accepted"] is True, beat.text
        headers = {"Authorization": f"Bearer {world.tokens['reader']}"}
        replica.wait_until(
            lambda: httpx.get(f"{url}/v1/services/{world.ns}/r1", headers=headers).status_code == 200,
            "the replica to serve r1",
        )
        answer = httpx.get(f"{url}/v1/services/{world.ns}/r1", headers=headers, timeout=30).json()
        [probe] = answer["lastProbes"]
        assert probe["passed"] is True and probe["reason"] == "ProbeSucceeded"
        assert replica.metric("svcreg_status_writes_total") == 0 and replica.probes() == 0
        # A caller the operator refuses gets no probes through the replica either.
        stranger = httpx.get(
            f"{url}/v1/services/{world.ns}/r1",
            headers={"Authorization": f"Bearer {world.tokens['stranger']}"},
            timeout=30,
        )
        assert stranger.status_code == 403
    finally:
        replica.stop()


def test_consumers_are_merged_across_replicas(world: World, control_plane: Cluster, tmp_path: Path) -> None:
    """A process given --consumer-replica answers /v1/consumers for the whole Deployment: its own
    callers plus each replica's, asked with the caller's token; a replica that does not answer is
    counted, not waited on; scope=local is the process's own part."""
    common = ("--discovery-only", "--namespace", world.ns, "--token-audience", AUDIENCE)
    replica = OperatorProcess(control_plane, tmp_path / "replica.log", *common).start()
    dead = f"http://127.0.0.1:{free_port()}"
    merging = OperatorProcess(
        control_plane, tmp_path / "merging.log", *common,
        "--consumer-replica", f"http://127.0.0.1:{replica.port}", "--consumer-replica", dead,
    ).start()  # fmt: skip
    try:
        headers = {"Authorization": f"Bearer {world.tokens['reader']}"}
        for process, times in ((replica, 2), (merging, 1)):
            url = f"http://127.0.0.1:{process.port}/v1/capabilities/farewell"
            process.wait_until(
                lambda url=url: httpx.get(url, headers=headers, timeout=30).status_code == 200,
                "the replica to serve farewell",
            )
            for _ in range(times - 1):
                assert httpx.get(url, headers=headers, timeout=30).status_code == 200
        base = f"http://127.0.0.1:{merging.port}/v1/consumers"
        merged = httpx.get(base, params={"capability": "farewell"}, headers=headers, timeout=30).json()
        [reader] = [c for c in merged["consumers"] if c["identity"].endswith(":reader")]
        assert (reader["requests"], merged["replicasAsked"], merged["replicasAnswered"]) == (3, 2, 1), merged
        local = httpx.get(
            base, params={"capability": "farewell", "scope": "local"}, headers=headers, timeout=30
        ).json()
        assert [c["requests"] for c in local["consumers"]] == [1] and "replicasAsked" not in local
        # The replica authorizes with the caller's own token: a stranger gets nothing from anyone.
        stranger = {"Authorization": f"Bearer {world.tokens['stranger']}"}
        assert httpx.get(base, params={"capability": "farewell"}, headers=stranger).status_code == 403
        bad = httpx.get(base, params={"capability": "farewell", "scope": "everywhere"}, headers=headers)
        assert bad.status_code == 400 and bad.json()["error"]["parameter"] == "scope"
    finally:
        merging.stop()
        replica.stop()


def test_callers_reports_eject_an_outlier_only_when_several_agree(
    world: World, k8s: Kube, control_plane: Cluster, tmp_path: Path
) -> None:
    """POST /v1/report: one identity reporting failures again and again ejects nothing, nor do
    several ServiceAccounts of one tenant (namespace); callers of three distinct tenants (one of
    them through a replica, which relays) eject the instance for a back-off: Ejected condition,
    an Event, out of default answers, said by explain; then it is restored. A caller without
    the verb report is refused."""
    k8s.apply(
        registration(
            "victim",
            {
                "service": "victims",
                "endpoint": world.target.url,
                "healthCheck": {"intervalSeconds": 1, "timeoutSeconds": 0.5},
            },
        ),
        world.ns,
    )
    k8s.kubectl("wait", "--for=condition=Ready", "svcreg/victim", "-n", world.ns, "--timeout=60s")
    tenants = [k8s.create_namespace("reporter") for _ in range(3)]
    reporters = {f"caller-{n}": tenants[n] for n in range(3)}
    # Two more ServiceAccounts of caller-0's tenant: its namespace counts once.
    reporters["caller-0-twin"] = reporters["caller-1-twin"] = tenants[0]
    tokens = {}
    for name, home in reporters.items():
        k8s.create_service_account(home, name)
        k8s.grant(world.ns, name, ["report"], sa_namespace=home)
        tokens[name] = k8s.token(home, name, [AUDIENCE])

    def report(who: str, base: str = world.url, outcome: str = "5xx") -> httpx.Response:
        token = tokens.get(who) or world.tokens[who]
        return httpx.post(
            f"{base}/v1/report/{world.ns}/victim",
            json={"outcome": outcome, "latencyMs": 12.5},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    assert report("reader").status_code == 403  # reading is not reporting
    for _ in range(5):
        answer = report("caller-0")
        assert answer.status_code == 202 and answer.json()["ejected"] is False
    bad = httpx.post(
        f"{world.url}/v1/report/{world.ns}/victim",
        json={"outcome": "meh"},
        headers={"Authorization": f"Bearer {tokens['caller-0']}"},
    )
    assert bad.status_code == 400
    for twin in ("caller-0-twin", "caller-1-twin"):  # three identities, but one tenant
        assert report(twin).json()["ejected"] is False
    assert report("caller-1").json()["ejected"] is False
    replica = OperatorProcess(
        control_plane, tmp_path / "relay.log", "--discovery-only", "--namespace", world.ns,
        "--token-audience", AUDIENCE, "--operator-url", world.url,
    ).start()  # fmt: skip
    try:
        relayed = report("caller-2", f"http://127.0.0.1:{replica.port}")
        assert relayed.status_code == 202 and relayed.json()["ejected"] is True, relayed.text
    finally:
        replica.stop()
    k8s.kubectl("wait", "--for=condition=Ejected", "svcreg/victim", "-n", world.ns, "--timeout=60s")
    world.operator.wait_until(
        lambda: world.names("/v1/services", service="victims") == [], "the victim to leave answers"
    )
    [shown] = world.get("/v1/services", params={"service": "victims", "health": "any"}).json()["items"]
    assert shown["ejected"] is True and shown["health"] == "Healthy"
    [why] = world.get("/v1/explain", params={"service": "victims"}).json()["candidates"]
    assert "ejected as an outlier" in why["reasons"][0]
    listed = k8s.core.list_namespaced_event(world.ns, field_selector="involvedObject.name=victim")
    assert "Ejected" in {e.reason for e in listed.items}
    # The back-off (30 s for a first ejection) ends and the instance is back.
    k8s.kubectl("wait", "--for=condition=Ejected=false", "svcreg/victim", "-n", world.ns, "--timeout=90s")
    world.operator.wait_until(
        lambda: world.names("/v1/services", service="victims") == ["victim"], "the victim to be served again"
    )
    assert world.operator.metric("svcreg_ejections_total", result="ejected") == 1


def test_a_service_policy_panics_below_its_threshold_on_operator_and_replica(
    world: World, k8s: Kube, control_plane: Cluster, tmp_path: Path
) -> None:
    """ServicePolicy panicThresholdPercent: one of four instances served is below 50%, so every
    instance is answered, marked panic, by the operator and a replica alike; the policy's
    status says Panic with counts and an Event; deleting the policy ends it."""
    check = {"intervalSeconds": 1, "timeoutSeconds": 0.5, "failureThreshold": 1}
    endpoints = [world.target.url] + [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
    for n, endpoint in enumerate(endpoints):
        k8s.apply(
            registration(f"surge-{n}", {"service": "surge", "endpoint": endpoint, "healthCheck": check}),
            world.ns,
        )
    for n in range(1, 4):
        k8s.kubectl(
            "wait",
            "--for=jsonpath={.status.health}=Unhealthy",
            f"svcreg/surge-{n}",
            "-n",
            world.ns,
            "--timeout=60s",
        )
    k8s.kubectl(
        "wait", "--for=jsonpath={.status.health}=Healthy", "svcreg/surge-0", "-n", world.ns, "--timeout=60s"
    )
    replica = OperatorProcess(
        control_plane, tmp_path / "policy-replica.log", "--discovery-only", "--namespace", world.ns,
        "--token-audience", AUDIENCE,
    ).start()  # fmt: skip
    try:
        assert world.names("/v1/services", service="surge") == ["surge-0"]
        policy = {
            "apiVersion": "svcreg.io/v1alpha1",
            "kind": "ServicePolicy",
            "metadata": {"name": "surge"},
            "spec": {"service": "surge", "panicThresholdPercent": 50},
        }
        k8s.apply(policy, world.ns)
        k8s.kubectl("wait", "--for=condition=Panic", "servicepolicy/surge", "-n", world.ns, "--timeout=60s")
        status = json.loads(k8s.kubectl("get", "svcpol", "surge", "-n", world.ns, "-o", "json").stdout)[
            "status"
        ]
        assert (status["healthy"], status["total"]) == (1, 4)
        everyone = [f"surge-{n}" for n in range(4)]
        replica_url = f"http://127.0.0.1:{replica.port}"
        headers = {"Authorization": f"Bearer {world.tokens['reader']}"}
        for base in (world.url, replica_url):

            def panicking(base: str = base) -> bool:
                answer = httpx.get(
                    base + "/v1/services", params={"service": "surge"}, headers=headers, timeout=30
                )
                items = answer.json()["items"]
                return sorted(i["name"] for i in items) == everyone and all(i["panic"] for i in items)

            world.operator.wait_until(panicking, f"{base} to answer in panic mode")
        [why] = [
            c
            for c in world.get("/v1/explain", params={"service": "surge"}).json()["candidates"]
            if c["name"] == "surge-3"
        ]
        assert why["included"] and "panic" in why["notes"][-1]
        assert world.operator.metric("svcreg_panic_answers_total") >= 1
        listed = k8s.core.list_namespaced_event(world.ns, field_selector="involvedObject.name=surge")
        assert any(e.reason == "Panic" and e.involved_object.kind == "ServicePolicy" for e in listed.items)
        wide = k8s.kubectl("get", "svcpol", "surge", "-n", world.ns).stdout
        assert "PANIC" in wide and "True" in wide
        k8s.kubectl("delete", "svcpol", "surge", "-n", world.ns)
        for base in (world.url, replica_url):
            world.operator.wait_until(
                lambda base=base: (
                    [
                        i["name"]
                        for i in httpx.get(
                            base + "/v1/services", params={"service": "surge"}, headers=headers
                        ).json()["items"]
                    ]
                    == ["surge-0"]
                ),
                f"{base} to leave panic mode",
            )
    finally:
        replica.stop()
        for n in range(4):
            k8s.kubectl("delete", "svcreg", f"surge-{n}", "-n", world.ns, "--ignore-not-found", check=False)


def test_discovery_only_replica_serves_from_its_watch_and_never_writes(
    world: World, k8s: Kube, control_plane: Cluster, tmp_path: Path
) -> None:
    replica = OperatorProcess(
        control_plane,
        tmp_path / "replica.log",
        "--discovery-only",
        "--namespace",
        world.ns,
        "--token-audience",
        AUDIENCE,
    ).start()
    try:
        ready = replica.ready()
        assert ready is not None and ready["mode"] == "discovery-only" and ready["httpStatus"] == 200
        url = f"http://127.0.0.1:{replica.port}"
        headers = {"Authorization": f"Bearer {world.tokens['reader']}"}
        answer = httpx.get(f"{url}/v1/services", params={"service": "orders"}, headers=headers, timeout=30)
        assert [i["name"] for i in answer.json()["items"]] == ["r1", "r2"]
        beat = httpx.post(
            f"{url}/v1/heartbeat/{world.ns}/beat",
            headers={"Authorization": f"Bearer {world.tokens['beater']}"},
        )
        assert beat.status_code == 503 and beat.json()["error"]["code"] == "NotProber"
        assert replica.metric("svcreg_status_writes_total") == 0 and replica.probes() == 0
        # A change reaches the replica through its own watch.
        k8s.kubectl(
            "patch",
            "svcreg",
            "r2",
            "-n",
            world.ns,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"tags": ["api"]}}),
        )
        replica.wait_until(
            lambda: (
                httpx.get(f"{url}/v1/services", params={"tag": "canary"}, headers=headers).json()["count"]
                == 0
            ),
            "the replica to see the change",
        )
    finally:
        replica.stop()
