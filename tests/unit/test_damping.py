"""Flap damping: the penalty arithmetic, the status it writes, and what discovery serves."""

from __future__ import annotations

from multidict import MultiDict

from svcreg.core.health import Health
from svcreg.core.model import FlapDamping
from svcreg.discovery.index import Index
from svcreg.discovery.query import parse
from svcreg.operator import damping, status
from tests.unit.test_discovery_units import body

DEFAULTS = FlapDamping()


def _transitions(times: list[float], settings: FlapDamping = DEFAULTS) -> damping.Damping:
    state = damping.Damping()
    for at in times:
        state = damping.advance(state, at, settings, transition=True)
    return state


def test_three_quick_changes_are_tolerated_and_a_fourth_suppresses() -> None:
    assert not _transitions([0, 10, 20]).suppressed
    held = _transitions([0, 10, 20, 30])
    assert held.suppressed and held.transitions == 4


def test_a_held_instance_returns_once_stable_within_the_bound() -> None:
    held = _transitions([0, 1, 2, 3])
    wait = damping.reuse_in(held, 3, DEFAULTS)
    assert 0 < wait <= DEFAULTS.max_suppress_seconds
    assert damping.advance(held, 3 + wait - 5, DEFAULTS, transition=False).suppressed
    back = damping.advance(held, 3 + wait + 1, DEFAULTS, transition=False)
    assert not back.suppressed


def test_the_penalty_is_capped_so_a_long_flapper_is_back_within_max_suppress() -> None:
    settings = FlapDamping(half_life_seconds=60, max_suppress_seconds=600)
    state = _transitions([float(t) for t in range(200)], settings)
    assert state.penalty <= damping.ceiling(settings)
    assert damping.reuse_in(state, 199, settings) <= settings.max_suppress_seconds + 1e-6


def test_slow_changes_never_add_up() -> None:
    assert not _transitions([0, 600, 1200, 1800, 2400, 3000]).suppressed


def test_off_means_never_held() -> None:
    assert not _transitions([0, 1, 2, 3, 4, 5], FlapDamping(enabled=False)).suppressed


def test_a_restart_keeps_a_held_instance_held_for_the_shortest_honest_wait() -> None:
    resumed = damping.resumed(True, 100, DEFAULTS)
    assert resumed.suppressed and damping.reuse_in(resumed, 100, DEFAULTS) > 0
    assert not damping.resumed(False, 100, DEFAULTS).suppressed


def test_status_says_flapping_and_not_ready_while_held_and_stable_after() -> None:
    held = status.Verdict(
        Health.HEALTHY, "ProbeSucceeded", "HTTP 200", 1, damped=True, damped_message="flapping: 4"
    )
    written = status.desired(None, held, "t1")
    by_type = {c.type: c for c in written.conditions}
    assert written.health == Health.HEALTHY  # the probes' truth is kept
    assert by_type["Flapping"].status == "True" and by_type["Ready"].reason == "Flapping"
    assert by_type["Ready"].status == "False"
    released = status.desired(written, status.Verdict(Health.HEALTHY, "ProbeSucceeded", "HTTP 200", 1), "t2")
    after = {c.type: c for c in released.conditions}
    assert after["Flapping"].status == "False" and after["Flapping"].reason == "Stable"
    assert after["Ready"].status == "True"
    # Never held: no Flapping condition at all (no write for registrations that never flapped).
    plain = status.desired(None, status.Verdict(Health.HEALTHY, "ProbeSucceeded", "HTTP 200", 1), "t")
    assert "Flapping" not in {c.type for c in plain.conditions}


def test_discovery_serves_a_damped_instance_only_to_health_any_and_says_why() -> None:
    index = Index()
    damped = body("x")
    damped["status"]["conditions"] = [
        {"type": "Ready", "status": "False"},
        {"type": "Flapping", "status": "True"},
    ]
    index.observe("ADDED", damped)
    index.observe("ADDED", body("y"))
    served = parse(MultiDict(), "services")
    assert [i.name for i in index.candidates(served, None)] == ["y"]
    assert [i.name for i in index.candidates(parse(MultiDict(health="any"), "services"), None)] == ["x", "y"]
    entry = index.items[("a", "x")]
    assert entry.damped and entry.view["damped"] is True
    assert served.why_not(entry) == ["held out of rotation by flap damping: it flapped (health=any shows it)"]
