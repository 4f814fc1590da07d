"""Run one probe of any kind, bounded by its timeout, and always return an outcome.

``PROBES`` maps each check kind to its probe; adding a kind is one module and one entry. Every
failure mode of a target (hanging, resetting, lying, refusing) ends as an Outcome within
``timeout`` seconds, applied here and nowhere else; nothing a target does can raise past this
function or hold up another probe.
"""

from __future__ import annotations

import asyncio
import ssl

from svcreg.core.model import CheckType
from svcreg.operator.probes import grpc, http, net, none, tcp, ttl
from svcreg.operator.probes.base import Context, Heartbeats, Outcome, Phase, Probe, Target, Trust
from svcreg.operator.probes.policy import ProbePolicy

PROBES: dict[CheckType, Probe] = {
    "http": http.probe,
    "tcp": tcp.probe,
    "grpc": grpc.probe,
    "ttl": ttl.probe,
    "none": none.probe,
}


class ProbeRunner:
    def __init__(
        self,
        policy: ProbePolicy,
        heartbeats: Heartbeats,
        ssl_context: ssl.SSLContext | None = None,
        trust: Trust | None = None,
    ):
        self.context = Context(policy, ssl_context or ssl.create_default_context(), heartbeats, trust)

    async def run(self, target: Target) -> Outcome | None:
        """The outcome of probing ``target``; None only for a ttl check still in its grace."""
        phase = Phase()
        try:
            async with asyncio.timeout(target.timeout):
                return await PROBES[target.kind](target, self.context, phase)
        except Exception as error:  # every failure is an outcome, by design
            return net.outcome_for(error, target, phase)
