"""The prober's write path without a cluster: real probes, a recording stand-in for the API."""

from __future__ import annotations

import asyncio
import copy
import datetime
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from svcreg.core.model import Health
from svcreg.kube import errors
from svcreg.operator.partition import GuardSettings, PartitionGuard
from svcreg.operator.prober import Prober
from svcreg.operator.probes.policy import ProbePolicy
from svcreg.operator.probes.runner import ProbeRunner
from svcreg.operator.probes.ttl import HeartbeatStore
from tests.targets import HttpTarget, free_port, http_target


class RecordingApi:
    """Stands in for KubeApi: applies status patches to an in-memory object and records writes."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.patches: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str]] = []
        self.deleted: list[tuple[str, str]] = []
        self.failures: list[Exception] = []  # raised by the next status patches, in order

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        self.patches.append((namespace, name))
        if self.failures:
            raise self.failures.pop(0)
        obj = self.objects.get((namespace, name))
        if obj is None:
            raise errors.NotFound(404, "gone")
        current = obj["metadata"].get("resourceVersion", "")
        if resource_version and current and resource_version != current:
            raise errors.Conflict(409, "the object has been modified")
        obj["status"] = {k: v for k, v in status.items() if v is not None}
        obj["metadata"]["resourceVersion"] = str(int(current or 0) + 1)
        return copy.deepcopy(obj)

    async def post_event(self, *, name: str, event_type: str, reason: str, **_: Any) -> None:
        self.events.append((name, event_type, reason))

    async def delete_registration(self, namespace: str, name: str, uid: str) -> bool:
        self.deleted.append((namespace, name))
        return self.objects.pop((namespace, name), None) is not None


def registration(
    name: str, spec: dict[str, Any], status: dict[str, Any] | None = None, generation: int = 1
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "generation": generation,
            "resourceVersion": "1",
        },
        "spec": spec,
    }
    if status:
        body["status"] = status
    return body


def http_spec(port: int, **check: Any) -> dict[str, Any]:
    return {"endpoint": f"http://127.0.0.1:{port}", "healthCheck": {"timeoutSeconds": 0.5, **check}}


@pytest.fixture
def web() -> Iterator[HttpTarget]:
    with http_target() as target:
        yield target


def make(api: RecordingApi, guard: PartitionGuard | None = None) -> Prober:
    runner = ProbeRunner(ProbePolicy(["127.0.0.0/8"]), HeartbeatStore())
    return Prober(api, runner, guard=guard)  # type: ignore[arg-type]


def add(api: RecordingApi, prober: Prober, body: dict[str, Any], event: str | None = "ADDED") -> None:
    api.objects[("ns", body["metadata"]["name"])] = body
    prober.observe(event, copy.deepcopy(body))


async def test_steady_state_writes_nothing(web: HttpTarget) -> None:
    api = RecordingApi()
    prober = make(api)
    add(api, prober, registration("a", http_spec(web.port)))
    await prober.probe_now(("ns", "a"))
    assert api.objects[("ns", "a")]["status"]["health"] == "Healthy"
    assert api.events == [("a", "Normal", "Healthy")]
    writes = len(api.patches)
    for _ in range(5):
        await prober.probe_now(("ns", "a"))
    assert len(api.patches) == writes


async def test_thresholds_then_unhealthy_with_a_warning_event(web: HttpTarget) -> None:
    api = RecordingApi()
    prober = make(api)
    add(api, prober, registration("a", http_spec(web.port, failureThreshold=3)))
    await prober.probe_now(("ns", "a"))
    web.mode = "fail"
    healths = []
    for _ in range(3):
        await prober.probe_now(("ns", "a"))
        healths.append(api.objects[("ns", "a")]["status"]["health"])
    assert healths == ["Healthy", "Healthy", "Unhealthy"]
    assert api.events[-1] == ("a", "Warning", "Unhealthy")
    healthy = next(c for c in api.objects[("ns", "a")]["status"]["conditions"] if c["type"] == "Healthy")
    assert (healthy["status"], healthy["reason"]) == ("False", "BadStatus")


async def test_restart_resumes_from_status_without_writing(web: HttpTarget) -> None:
    api = RecordingApi()
    first = make(api)
    add(api, first, registration("a", http_spec(web.port)))
    await first.probe_now(("ns", "a"))
    written = copy.deepcopy(api.objects[("ns", "a")])
    api.patches.clear()
    api.events.clear()
    restarted = make(api)
    restarted.observe(None, written)  # the initial listing after a restart
    for _ in range(3):
        await restarted.probe_now(("ns", "a"))
    assert api.patches == [] and api.events == []


async def test_spec_change_is_observed_in_status(web: HttpTarget) -> None:
    api = RecordingApi()
    prober = make(api)
    add(api, prober, registration("a", http_spec(web.port)))
    await prober.probe_now(("ns", "a"))
    changed = copy.deepcopy(api.objects[("ns", "a")])
    changed["metadata"]["generation"] = 2
    changed["spec"]["weight"] = 5
    add(api, prober, changed, "MODIFIED")
    await prober.probe_now(("ns", "a"))
    status = api.objects[("ns", "a")]["status"]
    assert status["observedGeneration"] == 2 and all(
        c["observedGeneration"] == 2 for c in status["conditions"]
    )
    assert [e for e in api.events if e[2] == "Healthy"] == [("a", "Normal", "Healthy")]  # no new transition


async def test_maintenance_is_reported_and_not_probed(web: HttpTarget) -> None:
    api = RecordingApi()
    prober = make(api)
    add(api, prober, registration("a", {**http_spec(web.port), "maintenance": True}))
    await prober.probe_now(("ns", "a"))
    assert api.objects[("ns", "a")]["status"]["health"] == "Maintenance"
    assert web.connections == 0


async def test_deleted_mid_probe_is_not_an_error(web: HttpTarget) -> None:
    api = RecordingApi()
    prober = make(api)
    add(api, prober, registration("a", http_spec(web.port)))
    del api.objects[("ns", "a")]  # deleted while the probe ran; the watch has not told us yet
    await prober.probe_now(("ns", "a"))
    assert api.patches == [("ns", "a")] and api.events == []
    assert prober.metrics.status_writes.labels("notfound")._value.get() == 1


def _unhealthy_since(seconds_ago: int) -> dict[str, Any]:
    when = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    return {
        "health": "Unhealthy",
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Valid",
                "message": "spec is valid",
                "lastTransitionTime": when,
                "observedGeneration": 1,
            },
            {
                "type": "Healthy",
                "status": "False",
                "reason": "ConnectionRefused",
                "message": f"127.0.0.1:{0} refused the connection",
                "lastTransitionTime": when,
                "observedGeneration": 1,
            },
            {
                "type": "Ready",
                "status": "False",
                "reason": "ConnectionRefused",
                "message": "x",
                "lastTransitionTime": when,
                "observedGeneration": 1,
            },
        ],
    }


async def test_deregister_after_seconds_posts_an_event_then_deletes() -> None:
    api = RecordingApi()
    prober = make(api)
    port = free_port()
    add(
        api,
        prober,
        registration("gone", {**http_spec(port), "deregisterAfterSeconds": 60}, _unhealthy_since(120)),
        None,
    )
    add(
        api,
        prober,
        registration("young", {**http_spec(port), "deregisterAfterSeconds": 600}, _unhealthy_since(120)),
        None,
    )
    await prober.probe_now(("ns", "gone"))
    await prober.probe_now(("ns", "young"))
    assert api.deleted == [("ns", "gone")]
    assert ("gone", "Warning", "Deregistering") in api.events


async def test_many_failing_targets_never_trip_the_guard_but_a_reference_outage_holds() -> None:
    """A tenant's dead targets (however many) are facts about the targets: they turn Unhealthy.
    Only the references failing makes the prober suspect itself; then failures are held, until
    the hold's bound, after which the truth is written."""
    clock = [0.0]
    guard = PartitionGuard(
        GuardSettings(references=(("api", 443),), failures_to_suspect=1, hold=30.0), clock=lambda: clock[0]
    )
    api = RecordingApi()
    prober = make(api, guard)
    dead = [free_port() for _ in range(20)]
    for i, port in enumerate(dead):
        add(api, prober, registration(f"junk{i}", http_spec(port, failureThreshold=1)))
    for i in range(20):
        await prober.probe_now(("ns", f"junk{i}"))
    assert not guard.suspected
    assert {api.objects[("ns", f"junk{i}")]["status"]["health"] for i in range(20)} == {"Unhealthy"}

    with http_target() as web:
        add(api, prober, registration("victim", http_spec(web.port, failureThreshold=1)))
        await prober.probe_now(("ns", "victim"))
        assert api.objects[("ns", "victim")]["status"]["health"] == "Healthy"
    guard.record_round([False])  # the prober cannot reach the API server either: it is cut off
    assert guard.suspected
    await prober.probe_now(("ns", "victim"))
    assert api.objects[("ns", "victim")]["status"]["health"] == "Healthy"  # held
    assert prober.metrics.held_transitions._value.get() >= 1
    clock[0] = 31.0  # past the hold: what the probes see is written
    await prober.probe_now(("ns", "victim"))
    assert api.objects[("ns", "victim")]["status"]["health"] == "Unhealthy"


def endpoint_slice(service: str, addresses: list[tuple[str, bool]], port: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{service}-abc",
            "namespace": "ns",
            "labels": {"kubernetes.io/service-name": service},
        },
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in addresses],
    }


async def test_service_ref_probes_every_ready_address(web: HttpTarget) -> None:
    api = RecordingApi()
    prober = make(api)
    spec = {
        "serviceRef": {"name": "web", "port": "http"},
        "healthCheck": {"type": "http", "timeoutSeconds": 0.5, "failureThreshold": 1},
    }
    add(api, prober, registration("web", spec))
    await prober.probe_now(("ns", "web"))
    accepted = api.objects[("ns", "web")]["status"]["conditions"][0]
    assert (accepted["status"], accepted["reason"]) == ("False", "NoEndpoints")
    # 127.0.0.1 answers, 127.0.0.2 refuses, 127.0.0.3 is not ready (never probed).
    prober.observe_endpoint_slice(
        "ADDED",
        endpoint_slice("web", [("127.0.0.1", True), ("127.0.0.2", True), ("127.0.0.3", False)], web.port),
    )
    await prober.probe_now(("ns", "web"))
    status = api.objects[("ns", "web")]["status"]
    assert status["health"] == Health.DEGRADED
    assert [(i["address"], i["health"]) for i in status["instances"]] == [
        ("127.0.0.1", "Healthy"),
        ("127.0.0.2", "Unhealthy"),
    ]
    assert status["conditions"][1]["reason"] == "SomeInstancesUnhealthy"
    prober.observe_endpoint_slice("MODIFIED", endpoint_slice("web", [("127.0.0.1", True)], web.port))
    await prober.probe_now(("ns", "web"))
    assert api.objects[("ns", "web")]["status"]["health"] == Health.HEALTHY


class NotifyingApi(RecordingApi):
    """RecordingApi that wakes a waiting test on every status write."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        try:
            return await super().patch_status(namespace, name, status, resource_version=resource_version)
        finally:
            self.written.set()

    async def until(self, condition: Callable[[], bool], limit: float = 10.0) -> None:
        async with asyncio.timeout(limit):
            while not condition():
                self.written.clear()
                await self.written.wait()


async def test_a_registration_without_a_health_check_is_evaluated_per_change_not_per_interval(
    web: HttpTarget,
) -> None:
    api = NotifyingApi()
    prober = make(api)
    none_spec = {"endpoint": "http://127.0.0.1:1", "healthCheck": {"type": "none", "intervalSeconds": 10}}
    add(api, prober, registration("still", none_spec))
    add(api, prober, registration("probed", http_spec(web.port, intervalSeconds=2)))
    runner = asyncio.create_task(prober.run())

    def health(name: str) -> str | None:
        return (api.objects[("ns", name)].get("status") or {}).get("health")

    try:
        await api.until(lambda: health("still") == "Healthy" and health("probed") == "Healthy")
        assert prober.scheduler.next_due(("ns", "still")) is None  # nothing can change it
        assert prober.scheduler.next_due(("ns", "probed")) is not None
        # Someone else overwrites the status: the watch event alone puts it right.
        overwritten = copy.deepcopy(api.objects[("ns", "still")])
        overwritten["status"]["health"] = "Unhealthy"
        # Any write moves the resourceVersion, as the API server does.
        overwritten["metadata"]["resourceVersion"] = str(int(overwritten["metadata"]["resourceVersion"]) + 1)
        api.objects[("ns", "still")] = overwritten
        prober.observe("MODIFIED", copy.deepcopy(overwritten))
        assert prober.scheduler.next_due(("ns", "still")) is not None
        await api.until(lambda: health("still") == "Healthy")
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


@pytest.mark.parametrize(
    "failure",
    [
        errors.ServerError(503, "unavailable"),
        errors.Unreachable("no answer"),
        errors.Conflict(409, "conflict"),
    ],
    ids=["503", "hang", "409"],
)
async def test_a_failed_status_write_is_retried_until_the_true_health_lands(
    web: HttpTarget, failure: Exception
) -> None:
    """The verdict is remembered only once written: a write that fails during a transition is
    made again (with backoff, by the scheduler) until the object says what the prober knows."""
    api = NotifyingApi()
    prober = make(api)
    add(api, prober, registration("a", http_spec(web.port, failureThreshold=1)))
    await prober.probe_now(("ns", "a"))
    assert api.objects[("ns", "a")]["status"]["health"] == "Healthy"
    web.mode = "fail"
    api.failures = [failure]
    await prober.probe_now(("ns", "a"))
    assert api.objects[("ns", "a")]["status"]["health"] == "Healthy"  # the write failed
    assert prober.scheduler.next_due(("ns", "a")) is not None  # a retry is planned
    runner = asyncio.create_task(prober.run())
    try:
        await api.until(lambda: api.objects[("ns", "a")]["status"]["health"] == "Unhealthy")
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert api.events[-1] == ("a", "Warning", "Unhealthy")


async def test_a_verdict_never_lands_on_a_same_named_successor(web: HttpTarget) -> None:
    api = RecordingApi()
    prober = make(api)
    add(api, prober, registration("a", http_spec(web.port)))
    successor = registration("a", http_spec(web.port))
    successor["metadata"]["uid"] = "uid-successor"
    successor["metadata"]["resourceVersion"] = "900"  # the API server's, newer than any we saw
    api.objects[("ns", "a")] = successor  # deleted and recreated; the watch has not told us yet
    await prober.probe_now(("ns", "a"))
    assert "status" not in api.objects[("ns", "a")]


async def test_editing_the_endpoint_resets_health_to_unknown(web: HttpTarget) -> None:
    api = RecordingApi()
    prober = make(api)
    add(api, prober, registration("a", http_spec(web.port)))
    await prober.probe_now(("ns", "a"))
    written = copy.deepcopy(api.objects[("ns", "a")])
    moved = registration(
        "a", http_spec(free_port(), failureThreshold=3), status=written["status"], generation=2
    )
    add(api, prober, moved, event="MODIFIED")
    await prober.probe_now(("ns", "a"))  # one failure: below the threshold, so not yet Unhealthy
    status = api.objects[("ns", "a")]["status"]
    assert status["health"] == "Unknown" and status["observedGeneration"] == 2


async def test_what_changes_hands_is_evaluated_by_its_new_owner_at_once(web: HttpTarget) -> None:
    """A registration evaluated only on change (type: none) whose first job ran while another
    member owned it is evaluated as soon as it becomes this member's; a probed one taken over
    resumes from the written status instead of flapping."""
    api = NotifyingApi()
    mine: set[tuple[str, str]] = set()
    runner = ProbeRunner(ProbePolicy(["127.0.0.0/8"]), HeartbeatStore())
    prober = Prober(api, runner, owns=lambda key: key in mine)  # type: ignore[arg-type]
    none_spec = {"endpoint": "http://127.0.0.1:1", "healthCheck": {"type": "none"}}
    add(api, prober, registration("still", none_spec))
    task = asyncio.create_task(prober.run())
    try:
        # Its one job ran, as another member's (nothing written; nothing signals it either).
        while prober.scheduler.next_due(("ns", "still")) is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert "status" not in api.objects[("ns", "still")] and not api.patches
        mine.add(("ns", "still"))
        prober.membership_changed()
        await api.until(lambda: (api.objects[("ns", "still")].get("status") or {}).get("health") == "Healthy")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Taken over with a written Healthy status: the first probe that agrees writes nothing.
    healthy = {"health": "Healthy", "observedGeneration": 1, "conditions": []}
    add(api, prober, registration("probed", http_spec(web.port), status=healthy))
    await prober.probe_now(("ns", "probed"))  # not this member's yet
    mine.add(("ns", "probed"))
    writes = len(api.patches)
    await prober.probe_now(("ns", "probed"))
    assert prober.tracked[("ns", "probed")].owned and prober.last_probes(("ns", "probed"))
    assert len(api.patches) == writes + 1  # conditions filled in once; health unchanged
    assert api.objects[("ns", "probed")]["status"]["health"] == "Healthy"


async def test_a_lagging_watch_event_does_not_undo_what_was_written(web: HttpTarget) -> None:
    """The watch may deliver the object as it was before this process's own write (the write's
    answer came first): that older resourceVersion is ignored, so the next round does not write
    again over a stale precondition (a 409, a retry, and a slower convergence)."""
    api = RecordingApi()
    prober = make(api)
    created = registration("a", http_spec(web.port))
    stale = copy.deepcopy(created)  # resourceVersion 1, status-less
    add(api, prober, created)
    await prober.probe_now(("ns", "a"))
    assert api.objects[("ns", "a")]["status"]["health"] == "Healthy"
    writes = len(api.patches)
    prober.observe("ADDED", stale)
    await prober.probe_now(("ns", "a"))
    assert len(api.patches) == writes
    assert (
        prober.tracked[("ns", "a")].resource_version
        == api.objects[("ns", "a")]["metadata"]["resourceVersion"]
    )


def test_resource_versions_compare_as_the_api_server_promises() -> None:
    from svcreg.kube.resourceversion import compare  # noqa: PLC0415

    assert compare("9", "10") == -1 and compare("10", "9") == 1 and compare("42", "42") == 0
    assert compare("", "1") is None and compare("01", "1") is None and compare("a1", "2") is None


async def test_a_moment_of_not_acting_does_not_drop_the_share(web: HttpTarget) -> None:
    """A member whose view of the group is briefly stale (a slow round under load) skips its
    jobs but keeps them scheduled: when it acts again it probes and writes them, with no
    membership change needed to bring them back."""
    api = RecordingApi()
    acting = False
    runner = ProbeRunner(ProbePolicy(["127.0.0.0/8"]), HeartbeatStore())
    prober = Prober(
        api,  # type: ignore[arg-type]
        runner,
        owns=lambda key: acting,
        assigned=lambda key: True,
    )
    add(api, prober, registration("a", http_spec(web.port)))
    await prober.probe_now(("ns", "a"))
    assert "status" not in api.objects[("ns", "a")]
    assert prober.tracked[("ns", "a")].owned and prober.scheduler.next_due(("ns", "a")) is not None
    acting = True
    await prober.probe_now(("ns", "a"))
    assert api.objects[("ns", "a")]["status"]["health"] == "Healthy"
