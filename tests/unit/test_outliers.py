"""Passive health: outlier detection from callers' reports, and what the prober does with it."""

from __future__ import annotations

from multidict import MultiDict

from svcreg.discovery.index import Index
from svcreg.discovery.query import parse
from svcreg.operator.outliers import OutlierDetector, OutlierSettings
from tests.targets import http_target
from tests.unit.test_discovery_units import body
from tests.unit.test_prober import RecordingApi, add, http_spec, make, registration

KEY = ("ns", "a")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_caller_can_never_eject_however_often_it_reports() -> None:
    detector = OutlierDetector(clock=Clock())
    assert not any(detector.report(KEY, "sa:loud", failed=True) for _ in range(1000))
    assert not detector.ejected(KEY)


def test_three_distinct_callers_within_the_window_eject_and_a_success_withdraws() -> None:
    clock = Clock()
    detector = OutlierDetector(clock=clock)
    assert not detector.report(KEY, "sa:1", failed=True)
    assert not detector.report(KEY, "sa:2", failed=True)
    assert not detector.report(KEY, "sa:2", failed=False)  # sa:2 now sees it working
    assert not detector.report(KEY, "sa:3", failed=True)
    assert detector.report(KEY, "sa:4", failed=True)


def test_old_failures_fall_out_of_the_window() -> None:
    clock = Clock()
    detector = OutlierDetector(clock=clock)
    detector.report(KEY, "sa:1", failed=True)
    detector.report(KEY, "sa:2", failed=True)
    clock.now += 61
    assert not detector.report(KEY, "sa:3", failed=True)
    assert detector.failing_callers(KEY) == 1


def test_ejections_back_off_and_end() -> None:
    clock = Clock()
    detector = OutlierDetector(OutlierSettings(base=30, limit=100), clock=clock)
    assert [detector.eject(KEY) for _ in range(4)] == [30, 60, 100, 100]
    assert detector.ejected(KEY) and 0 < detector.remaining(KEY) <= 100
    clock.now += 101
    assert not detector.ejected(KEY) and detector.remaining(KEY) == 0


async def test_the_prober_ejects_writes_the_condition_and_caps_the_service() -> None:
    with http_target() as web:
        await _eject_and_cap(web.port)


async def _eject_and_cap(port: int) -> None:
    api = RecordingApi()
    prober = make(api)
    for name in ("a", "b", "c"):
        add(api, prober, registration(name, {**http_spec(port), "service": "pay"}))
        await prober.probe_now(("ns", name))
    for caller in ("sa:1", "sa:2"):
        assert not prober.report(("ns", "a"), caller, "5xx")
    assert prober.report(("ns", "a"), "sa:3", "timeout")
    await prober.probe_now(("ns", "a"))
    status = api.objects[("ns", "a")]["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["health"] == "Healthy"  # the probes' truth is kept
    assert conditions["Ejected"]["status"] == "True" and conditions["Ready"]["reason"] == "Ejected"
    assert ("a", "Warning", "Ejected") in api.events
    # At most half of "pay" at once: b meets the bar too but stays in rotation.
    for caller in ("sa:1", "sa:2", "sa:3"):
        prober.report(("ns", "b"), caller, "connection-error")
    assert not prober.outliers.ejected(("ns", "b"))
    assert prober.metrics.ejections.labels("refused")._value.get() == 1
    # The ejection ends: the condition turns False and a Normal Event says so.
    prober.outliers._until[("ns", "a")] = 0.0
    await prober.probe_now(("ns", "a"))
    conditions = {c["type"]: c for c in api.objects[("ns", "a")]["status"]["conditions"]}
    assert conditions["Ejected"]["status"] == "False" and conditions["Ready"]["status"] == "True"
    assert ("a", "Normal", "EjectionEnded") in api.events


def test_discovery_leaves_an_ejected_instance_out_unless_health_any() -> None:
    index = Index()
    ejected = body("x")
    ejected["status"]["conditions"] = [
        {"type": "Ready", "status": "False"},
        {"type": "Ejected", "status": "True"},
    ]
    index.observe("ADDED", ejected)
    served = parse(MultiDict(), "services")
    assert index.candidates(served, None) == []
    assert [i.name for i in index.candidates(parse(MultiDict(health="any"), "services"), None)] == ["x"]
    assert "ejected as an outlier" in served.why_not(index.items[("a", "x")])[0]


async def test_a_service_policy_sets_the_share_that_may_be_ejected() -> None:
    """maxEjectedPercent 100: b, which the default 50% would keep in rotation, is ejected too."""
    from svcreg.core.model import ServicePolicySpec  # noqa: PLC0415

    with http_target() as web:
        api = RecordingApi()
        prober = make(api)
        policy = ServicePolicySpec(service="pay", max_ejected_percent=100)
        prober.policies = lambda namespace, service: ("pay", policy) if service == "pay" else None
        for name in ("a", "b", "c"):
            add(api, prober, registration(name, {**http_spec(web.port), "service": "pay"}))
            await prober.probe_now(("ns", name))
        for name in ("a", "b"):
            for caller in ("sa:1", "sa:2", "sa:3"):
                prober.report(("ns", name), caller, "5xx")
        assert prober.outliers.ejected(("ns", "a")) and prober.outliers.ejected(("ns", "b"))
