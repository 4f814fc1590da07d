"""ServicePolicy's panic threshold: answers in panic mode, explain, and the policy's status."""

from __future__ import annotations

from typing import Any

from multidict import MultiDict

from svcreg.discovery.explain import explain
from svcreg.discovery.index import Index
from svcreg.discovery.query import parse
from svcreg.operator.policies import PolicyState, PolicyStatusWriter, desired
from svcreg.operator.reconcile import EventSpec
from tests.unit.test_discovery_units import body


def policy(name: str, service: str, threshold: int | None = None, namespace: str = "a") -> dict[str, Any]:
    spec: dict[str, Any] = {"service": service}
    if threshold is not None:
        spec["panicThresholdPercent"] = threshold
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"u-{name}", "generation": 1},
        "spec": spec,
    }


def pay(index: Index, healthy: int, unhealthy: int, maintenance: int = 0) -> None:
    for n in range(healthy):
        index.observe("ADDED", body(f"ok-{n}", service="pay"))
    for n in range(unhealthy):
        index.observe("ADDED", body(f"bad-{n}", health="Unhealthy", service="pay"))
    for n in range(maintenance):
        index.observe("ADDED", body(f"mnt-{n}", health="Maintenance", service="pay", maintenance=True))
    index.observe("ADDED", body("other", health="Unhealthy", service="cart"))


SERVED = parse(MultiDict(service="pay"), "services")


def test_below_the_threshold_every_instance_but_maintenance_is_served_marked_panic() -> None:
    index = Index()
    pay(index, healthy=1, unhealthy=3, maintenance=1)
    assert [i.name for i in index.candidates(SERVED, None)] == ["ok-0"]
    index.observe_policy("ADDED", policy("p", "pay"))  # default threshold 50%
    answer = index.candidates(SERVED, None)
    assert [i.name for i in answer] == ["bad-0", "bad-1", "bad-2", "ok-0"]
    assert all(i.panic and i.view["panic"] for i in answer) and index.panic_answers == 1
    assert index.panic_state("a", "pay") == (1, 4, True)
    # Another service, another namespace, and health=any are untouched.
    assert index.candidates(parse(MultiDict(service="cart"), "services"), None) == []
    assert index.candidates(SERVED, frozenset({"elsewhere"})) == []
    assert not any(i.panic for i in index.candidates(parse(MultiDict(health="any"), "services"), None))


def test_at_or_above_the_threshold_and_without_a_policy_there_is_no_panic() -> None:
    index = Index()
    pay(index, healthy=2, unhealthy=2)
    index.observe_policy("ADDED", policy("p", "pay", 50))
    assert [i.name for i in index.candidates(SERVED, None)] == ["ok-0", "ok-1"]  # 50% is not below 50%
    index.observe_policy("MODIFIED", policy("p", "pay", 75))
    assert len(index.candidates(SERVED, None)) == 4
    index.observe_policy("MODIFIED", policy("p", "pay", 0))  # 0: off
    assert len(index.candidates(SERVED, None)) == 2
    index.observe_policy("MODIFIED", policy("p", "pay", 75))
    index.observe_policy("DELETED", policy("p", "pay"))
    assert len(index.candidates(SERVED, None)) == 2 and not index.policies
    before = index.policy_version
    index.replace_policies([policy("q", "pay", 90)])
    assert index.policies == {("a", "pay"): 90} and index.policy_version > before


def test_explain_says_an_instance_is_in_because_of_panic() -> None:
    index = Index()
    pay(index, healthy=1, unhealthy=3)
    index.observe_policy("ADDED", policy("p", "pay"))
    answer = explain(SERVED, index, None)
    bad = next(c for c in answer["candidates"] if c["name"] == "bad-0")
    assert bad["included"] and bad["reasons"] == [] and "panic" in bad["notes"][-1]
    assert answer["included"] == 4


def test_policy_status_moves_its_transition_time_only_when_panic_changes() -> None:
    calm = PolicyState("a", "p", "u", 1, "pay", 50, 3, 4, False)
    first = desired(None, calm, "t1")
    assert first["healthy"] == 3 and first["total"] == 4
    assert first["conditions"][0]["status"] == "False" and first["conditions"][0]["reason"] == "EnoughServed"
    fewer = desired(first, PolicyState("a", "p", "u", 1, "pay", 50, 2, 4, False), "t2")
    assert fewer["conditions"][0]["lastTransitionTime"] == "t1"
    panic = desired(fewer, PolicyState("a", "p", "u", 1, "pay", 50, 1, 4, True), "t3")
    assert panic["conditions"][0]["status"] == "True" and panic["conditions"][0]["lastTransitionTime"] == "t3"


class FakeApi:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        self.patches.append((name, status))
        return {}


class FakeWriter:
    def __init__(self, api: FakeApi) -> None:
        self.api = api
        self.events: list[tuple[str, str, str | None]] = []

    async def write_policy_status(self, key: tuple[str, str], body: dict[str, Any]) -> bool:
        await self.api.patch_status(key[0], key[1], body, plural="servicepolicies")
        return True

    async def post_event(
        self, key: tuple[str, str], uid: str, event: EventSpec, kind: str | None = None
    ) -> None:
        self.events.append((event.type, event.reason, kind))


async def test_the_policy_writer_writes_only_changes_and_posts_panic_events() -> None:
    states = [PolicyState("a", "p", "u", 1, "pay", 50, 3, 4, False)]
    api = FakeApi()
    writer = FakeWriter(api)
    policy_writer = PolicyStatusWriter(writer, lambda: states)  # type: ignore[arg-type]
    await policy_writer.write_changes()
    await policy_writer.write_changes()
    assert len(api.patches) == 1 and writer.events == []
    states[0] = PolicyState("a", "p", "u", 1, "pay", 50, 1, 4, True)
    await policy_writer.write_changes()
    states[0] = PolicyState("a", "p", "u", 1, "pay", 50, 4, 4, False)
    await policy_writer.write_changes()
    assert len(api.patches) == 3
    assert writer.events == [("Warning", "Panic", "ServicePolicy"), ("Normal", "PanicEnded", "ServicePolicy")]
