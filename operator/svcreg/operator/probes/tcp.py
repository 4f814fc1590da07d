"""TCP probes: the target passes when it accepts a connection."""

from __future__ import annotations

from svcreg.operator.probes import net
from svcreg.operator.probes.base import Context, Outcome, Phase, Target


async def probe(target: Target, context: Context, phase: Phase) -> Outcome:
    await net.exchange(target, context.policy, phase, None, None)
    return Outcome.ok(phase.elapsed(), "accepted a TCP connection")
