"""The gates between a probe round and the health it writes: pure decisions, one per gate.

A round's failures may turn instances Unhealthy. Before they count, three gates may hold
them: the multi-vantage quorum (``healthCheck.quorum``: other members must see it too,
vantage.py), the service's health disruption budget (budget.py) and the partition guard (a
connection-level failure while this prober suspects its own network, partition.py). Each gate
is a pure function of what was seen and returns a ``Gate``, as controller-runtime's
``Result{RequeueAfter}``: the instances held ("hold"), nothing held ("write"), and when to look
again ("check again after N s"); the prober does the asking and the scheduling, so no gate
touches the scheduler, the network or the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from svcreg.operator import budget as budget_mod
from svcreg.operator import vantage as vantage_mod
from svcreg.operator.reconcile import EventSpec
from svcreg.operator.tracking import Results

Action = Literal["write", "hold", "recheck"]


@dataclass(frozen=True)
class Gate:
    held: frozenset[str] = frozenset()  # instances whose failure does not count this round
    recheck_after: float | None = None  # seconds until the instance should be probed again
    events: tuple[EventSpec, ...] = ()  # what to say about the hold (posted by the prober)

    @property
    def action(self) -> Action:
        if self.recheck_after is not None:
            return "recheck"
        return "hold" if self.held else "write"

    def __or__(self, other: Gate) -> Gate:
        """Both gates' holds; the sooner recheck."""
        rechecks = [r for r in (self.recheck_after, other.recheck_after) if r is not None]
        return Gate(self.held | other.held, min(rechecks) if rechecks else None, self.events + other.events)


WRITE = Gate()


@dataclass(frozen=True)
class QuorumGate:
    gate: Gate
    disagreement: str  # the VantageDisagreement condition's message ("" when none)


def quorum(
    needed: int,
    me: str,
    failing: Mapping[str, str],
    answers: Mapping[str, Mapping[str, bool] | None],
    disagreement_before: str,
) -> QuorumGate:
    """Which of ``failing`` wait until ``needed`` members saw them fail (``answers``: what each
    member asked saw); a Warning Event when a disagreement starts."""
    decision = vantage_mod.decide(needed, me, failing, answers)
    events: tuple[EventSpec, ...] = ()
    if decision.held and not disagreement_before:
        events = (EventSpec("Warning", "VantageDisagreement", decision.message, action="Confirm"),)
    return QuorumGate(Gate(held=decision.held, events=events), decision.message)


@dataclass(frozen=True)
class BudgetGate:
    gate: Gate
    held_since: float | None  # since when a transition has waited (kept on the registration)
    outcome: str  # budget.Decision's outcome, for the metric ("within" is not counted)


def budget_needs_others(standing: budget_mod.Standing, held_since: float | None) -> bool:
    """Whether the gate needs to know if another member sees the instances pass: only on the
    re-probe of a hold, when the budget is spent."""
    return standing.exhausted and held_since is not None


def budget(
    standing: budget_mod.Standing,
    failing: Mapping[str, str],
    held_since: float | None,
    *,
    now: float,
    max_hold: float,
    others_saw_pass: bool | None,
) -> BudgetGate:
    """Whether ``failing`` (instances in rotation about to turn Unhealthy) wait because their
    service's disruption budget is spent: held on first sight with a re-probe a second later,
    written when the re-probe confirms it or the hold has lasted ``max_hold``."""
    decision = budget_mod.decide(standing, held_since, now, max_hold, others_saw_pass)
    if decision.hold == budget_mod.Hold.WRITE:
        return BudgetGate(WRITE, decision.held_since, decision.outcome)
    if decision.outcome != "held":
        return BudgetGate(Gate(held=frozenset(failing)), decision.held_since, decision.outcome)
    text = f"turning Unhealthy waits for confirmation: {budget_mod.message(standing)}"
    event = EventSpec("Warning", "BudgetExhausted", text, action="Confirm")
    gate = Gate(held=frozenset(failing), recheck_after=1.0, events=(event,))
    return BudgetGate(gate, decision.held_since, decision.outcome)


def partition(holding: bool, results: Results, held: frozenset[str]) -> Gate:
    """While the prober suspects its own network, a connection-level failure may be ours, not
    the target's: its instance keeps its last-known health (those already held excepted)."""
    if not holding:
        return WRITE
    return Gate(
        held=frozenset(
            iid
            for iid, _, outcome in results
            if outcome is not None and not outcome.passed and outcome.connection_level and iid not in held
        )
    )
