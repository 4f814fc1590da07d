"""TCP probes: the target passes when it accepts a connection."""

from __future__ import annotations

from svcreg.probes import net
from svcreg.probes.base import Outcome, Target
from svcreg.probes.policy import ProbePolicy


async def probe(target: Target, policy: ProbePolicy, phase: net.Phase) -> Outcome:
    await net.exchange(target, policy, phase, None, None)
    return Outcome.ok(phase.elapsed(), "accepted a TCP connection")
