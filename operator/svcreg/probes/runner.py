"""Run one probe of any kind, bounded by its timeout, and always return an outcome.

Every failure mode of a target (hanging, resetting, lying, refusing) ends as an Outcome within
``timeout`` seconds; nothing a target does can raise past this function or hold up another probe.
"""

from __future__ import annotations

import asyncio
import ssl

from svcreg.probes import grpc as grpc_probe
from svcreg.probes import http, net, tcp
from svcreg.probes.base import Outcome, Reason, Target
from svcreg.probes.policy import ProbePolicy
from svcreg.probes.ttl import HeartbeatStore


class ProbeRunner:
    def __init__(
        self, policy: ProbePolicy, heartbeats: HeartbeatStore, ssl_context: ssl.SSLContext | None = None
    ):
        self.policy = policy
        self.heartbeats = heartbeats
        self.ssl_context = ssl_context or ssl.create_default_context()

    async def run(self, target: Target) -> Outcome | None:
        """The outcome of probing ``target``; None only for a ttl check still in its start-up grace."""
        if target.kind == "none":
            return Outcome(True, Reason.NO_HEALTH_CHECK, "no health check configured")
        if target.kind == "ttl":
            return self.heartbeats.evaluate(target)
        phase = net.Phase()
        try:
            async with asyncio.timeout(target.timeout):
                if target.kind == "http":
                    return await http.probe(target, self.policy, self.ssl_context, phase)
                if target.kind == "grpc":
                    return await grpc_probe.probe(target, self.policy, phase)
                return await tcp.probe(target, self.policy, phase)
        except Exception as error:  # every failure is an outcome, by design
            return net.outcome_for(error, target, phase)
