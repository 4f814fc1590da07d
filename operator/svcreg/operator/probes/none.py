"""``type: none``: no check at all; the registration is served while it is valid."""

from __future__ import annotations

from svcreg.operator.probes.base import Context, Outcome, Phase, Reason, Target


async def probe(target: Target, context: Context, phase: Phase) -> Outcome:
    return Outcome(True, Reason.NO_HEALTH_CHECK, "no health check configured")
