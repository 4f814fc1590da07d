"""The health disruption budget of a service (a ServicePolicy's ``healthDisruptionBudget``), as
pure functions of the written statuses and a clock.

What is spent is read from the registrations' statuses, not from a ledger of this process: the
Healthy condition's ``lastTransitionTime`` says when each turned Unhealthy, so every member of
the prober group, and a restarted operator, count the same thing. A transition counts when it
rests on probe evidence (not an expired heartbeat, an invalid spec or a refused target).

Past the budget a further transition waits for confirmation: the prober re-probes at once and,
where the prober group has other members, asks them (``hold``); it never waits longer than
``maxHoldSeconds``, so a real outage is written, only later.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from svcreg.core.model import DisruptionBudget, ServiceRegistrationStatus
from svcreg.operator.status import condition

# Turning Unhealthy for these reasons is not a probe's evidence about a live target.
NOT_PROBE_EVIDENCE = frozenset(
    {
        "HeartbeatExpired",
        "HeartbeatCritical",
        "HeartbeatWarning",
        "TargetForbidden",
        "InvalidSpec",
        "NoEndpoints",
        "NoReadyEndpoints",
    }
)


def _seconds(stamp: str) -> float | None:
    try:
        parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp()


def spent(statuses: Iterable[ServiceRegistrationStatus | None], now: float, window: float) -> int:
    """How many of a service's registrations turned Unhealthy on probe evidence within the last
    ``window`` seconds before ``now`` (wall-clock seconds) and are still so."""
    count = 0
    for status in statuses:
        healthy = condition(status, "Healthy")
        if healthy is None or healthy.status != "False" or healthy.reason in NOT_PROBE_EVIDENCE:
            continue
        since = _seconds(healthy.last_transition_time)
        if since is not None and now - since <= window:
            count += 1
    return count


@dataclass(frozen=True)
class Standing:
    """A service's budget now: how many may turn Unhealthy in the window (of ``window``
    seconds), and how many have."""

    allowed: int
    spent: int
    window: int = 0

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.allowed


def standing(
    budget: DisruptionBudget, statuses: list[ServiceRegistrationStatus | None], now: float
) -> Standing:
    window = budget.window_seconds
    return Standing(budget.allowed(len(statuses)), spent(statuses, now, window), window)


class Hold(enum.Enum):
    WRITE = "write"  # within the budget, confirmed, or held long enough: the truth is written
    WAIT = "wait"  # past the budget: not written until confirmed (or the hold ends)


@dataclass(frozen=True)
class Decision:
    hold: Hold
    outcome: str  # for the metric: within, held, confirmed, refuted, expired
    held_since: float | None  # the hold's start to remember (None: no hold)


def decide(
    standing: Standing,
    held_since: float | None,
    now: float,
    max_hold: float,
    others_saw_it_pass: bool | None,
) -> Decision:
    """Whether a transition to Unhealthy that a probe found (and, when ``held_since`` is set,
    found again on the re-probe a hold asks for) is written now (pure).

    ``others_saw_it_pass``: what the other members of the prober group said when asked (None:
    there are none, or none answered)."""
    if not standing.exhausted:
        return Decision(Hold.WRITE, "within", None)
    if held_since is None:
        return Decision(Hold.WAIT, "held", now)  # first sight: re-probe before believing it
    if now - held_since >= max_hold:
        return Decision(Hold.WRITE, "expired", None)
    if others_saw_it_pass:
        return Decision(Hold.WAIT, "refuted", held_since)
    return Decision(Hold.WRITE, "confirmed", None)


def message(standing: Standing) -> str:
    return (
        f"{standing.spent} instance(s) turned Unhealthy within {standing.window}s, the budget allows "
        f"{standing.allowed}: further transitions wait for confirmation"
    )
