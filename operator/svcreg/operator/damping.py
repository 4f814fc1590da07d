"""Flap damping, as BGP damps route flaps (RFC 2439): pure functions of (state, event, now).

Each transition of whether an instance is served (in or out of rotation) adds ``PENALTY``; the
penalty halves every ``halfLifeSeconds``. When it goes above ``suppressThreshold`` the instance
is held out of rotation; it returns when the penalty has decayed below ``reuseThreshold``. The
penalty is capped at what decays to the reuse threshold in ``maxSuppressSeconds``, so however
long an instance flapped, once stable it is back within that bound.

A probe's truth is never hidden: health stays what the probes say; damping only decides
whether discovery serves the instance (status condition Flapping, Ready false).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from svcreg.core.model import FlapDamping

PENALTY = 1000.0


@dataclass(frozen=True, slots=True)
class Damping:
    penalty: float = 0.0
    at: float = 0.0  # when ``penalty`` was last worked out (seconds, any steady clock)
    suppressed: bool = False
    transitions: int = 0  # counted while the penalty stays above zero, for messages


def ceiling(settings: FlapDamping) -> float:
    """The most penalty there can be: what decays to the reuse threshold in maxSuppressSeconds."""
    exponent = float(settings.max_suppress_seconds) / float(settings.half_life_seconds)
    return float(settings.reuse_threshold) * math.pow(2.0, exponent)


def decayed(state: Damping, now: float, settings: FlapDamping) -> float:
    """The penalty at ``now``."""
    elapsed = max(0.0, now - state.at)
    return state.penalty * math.pow(0.5, elapsed / settings.half_life_seconds)


def advance(state: Damping, now: float, settings: FlapDamping, *, transition: bool) -> Damping:
    """The state at ``now``, after one transition when ``transition``: a suppressed instance is
    released once its penalty is below the reuse threshold; one above the suppress threshold
    is suppressed. Off (``enabled: false``), nothing is ever suppressed."""
    if not settings.enabled:
        return Damping()
    penalty = decayed(state, now, settings)
    transitions = state.transitions if penalty >= 1.0 else 0
    if transition:
        penalty = min(penalty + PENALTY, ceiling(settings))
        transitions += 1
    if state.suppressed:
        suppressed = penalty >= settings.reuse_threshold
    else:
        suppressed = penalty > settings.suppress_threshold
    return Damping(penalty, now, suppressed, transitions if suppressed or penalty >= 1.0 else 0)


def reuse_in(state: Damping, now: float, settings: FlapDamping) -> float:
    """Seconds until a suppressed instance is released if it stays stable (0 when it is not)."""
    penalty = decayed(state, now, settings)
    if not state.suppressed or penalty < settings.reuse_threshold:
        return 0.0
    return settings.half_life_seconds * math.log2(penalty / settings.reuse_threshold)


def message(state: Damping, settings: FlapDamping) -> str:
    """Why the instance is held, in words that change only with a new transition: written to
    status, so a number that moved each probe would be a write each probe."""
    return (
        f"flapping: {state.transitions} changes in or out of rotation pushed its penalty over "
        f"{settings.suppress_threshold}; held out of rotation until the penalty halves "
        f"(every {settings.half_life_seconds}s) below {settings.reuse_threshold}, at most "
        f"{settings.max_suppress_seconds}s once stable"
    )


def resumed(suppressed: bool, now: float, settings: FlapDamping) -> Damping:
    """After a restart only the written condition is known: a held instance stays held, with
    the least penalty that holds it, so it is released after the shortest honest wait."""
    if not suppressed or not settings.enabled:
        return Damping()
    return Damping(float(settings.suppress_threshold), now, True, 0)
