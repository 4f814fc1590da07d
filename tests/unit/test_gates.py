"""The prober's gates and its Events are pure decisions: write, hold, or check again after N s."""

from __future__ import annotations

from svcreg.core.health import Health
from svcreg.operator import gates
from svcreg.operator.budget import Standing
from svcreg.operator.probes.base import Outcome, Reason
from svcreg.operator.reconcile import Published, events_for
from svcreg.operator.status import Verdict


def test_the_quorum_holds_a_failure_only_one_member_saw_and_says_so_once() -> None:
    failing = {"10.0.0.1:80": "ConnectionRefused"}
    found = gates.quorum(2, "m-1", failing, {"m-2": {"10.0.0.1:80": True}}, disagreement_before="")
    assert found.gate.action == "hold" and found.gate.held == {"10.0.0.1:80"}
    assert [e.reason for e in found.gate.events] == ["VantageDisagreement"] and "m-2" in found.disagreement
    again = gates.quorum(
        2, "m-1", failing, {"m-2": {"10.0.0.1:80": True}}, disagreement_before=found.disagreement
    )
    assert again.gate.held == {"10.0.0.1:80"} and again.gate.events == ()
    agreed = gates.quorum(2, "m-1", failing, {"m-2": {"10.0.0.1:80": False}}, disagreement_before="x")
    assert agreed.gate.action == "write" and agreed.disagreement == ""


def test_a_spent_budget_holds_on_first_sight_asks_for_a_recheck_and_writes_once_confirmed() -> None:
    spent, failing = Standing(allowed=1, spent=1, window=300), {"": "Timeout"}
    first = gates.budget(spent, failing, None, now=10.0, max_hold=60, others_saw_pass=None)
    assert (first.gate.action, first.gate.recheck_after, first.held_since) == ("recheck", 1.0, 10.0)
    assert [e.reason for e in first.gate.events] == ["BudgetExhausted"]
    refuted = gates.budget(spent, failing, 10.0, now=11.0, max_hold=60, others_saw_pass=True)
    assert (refuted.gate.action, refuted.outcome) == ("hold", "refuted") and refuted.gate.events == ()
    confirmed = gates.budget(spent, failing, 10.0, now=11.0, max_hold=60, others_saw_pass=False)
    assert (confirmed.gate.action, confirmed.held_since) == ("write", None)
    within = gates.budget(
        Standing(allowed=2, spent=0), failing, None, now=1.0, max_hold=60, others_saw_pass=None
    )
    assert within.gate.action == "write" and within.outcome == "within"
    assert gates.budget_needs_others(spent, 10.0) and not gates.budget_needs_others(spent, None)


def test_the_partition_gate_holds_connection_failures_only_while_the_guard_holds() -> None:
    results = [
        ("a", "http", Outcome.fail(Reason.CONNECTION_REFUSED, "refused", connection_level=True)),
        ("b", "http", Outcome.fail(Reason.BAD_STATUS, "500")),
        ("c", "http", Outcome.fail(Reason.TIMEOUT, "slow", connection_level=True)),
        ("d", "ttl", None),
    ]
    assert gates.partition(True, results, frozenset({"c"})).held == {"a"}
    assert gates.partition(False, results, frozenset()).action == "write"
    both = gates.Gate(frozenset({"a"}), 5.0) | gates.Gate(frozenset({"b"}), 1.0)
    assert (both.held, both.recheck_after) == ({"a", "b"}, 1.0)


def test_events_follow_what_the_write_changed_in_order() -> None:
    calm = Published(Health.HEALTHY, damped=False, ejected=True)
    verdict = Verdict(Health.UNHEALTHY, "Timeout", "no answer", 1, damped=True, damped_message="flapping")
    assert [e.reason for e in events_for(calm, verdict)] == ["Flapping", "EjectionEnded", "Unhealthy"]
    steady = Published(Health.UNHEALTHY, damped=True, ejected=False)
    assert events_for(steady, verdict) == []
    first = Published(None, damped=False, ejected=False)
    assert events_for(first, Verdict(Health.UNKNOWN, "AwaitingFirstProbe", "", 1)) == []
