"""Verified capability contracts, per registration: which contracts are due, checking them, and
what status says of them.

A capability with a ``contract`` is checked when first seen (and after every spec change, which
makes a new tracked registration) and then every ``contract.intervalSeconds``, on the probe job
of its registration. A serviceRef registration's contract is checked on each ready address
(at most ``ADDRESS_CONCURRENCY`` at once) and holds only when every one keeps it: discovery
serves the registration as a whole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from svcreg.core.keys import Key
from svcreg.core.model import Capability, ServiceRegistrationSpec
from svcreg.operator.probes import contract as contract_mod
from svcreg.operator.probes.base import Context
from svcreg.operator.probes.judge import Judge, Verification
from svcreg.operator.targets import Plan, contract_targets
from svcreg.telemetry.metrics import Metrics

logger = logging.getLogger(__name__)
ADDRESS_CONCURRENCY = 16
Checked = dict[str, tuple[float, Verification]]  # capability -> (when, monotonic; result)


def contracted(spec: ServiceRegistrationSpec | None) -> list[Capability]:
    """The capabilities of ``spec`` that carry a contract."""
    return [c for c in spec.capabilities if c.contract is not None] if spec is not None else []


def due(spec: ServiceRegistrationSpec | None, checked: Checked, now: float) -> list[Capability]:
    """The contracts to check now (pure)."""
    return [
        c
        for c in contracted(spec)
        if c.name not in checked or now - checked[c.name][0] >= c.contract.interval_seconds  # type: ignore[union-attr]
    ]


def next_due(spec: ServiceRegistrationSpec | None, checked: Checked, now: float) -> float | None:
    """Seconds until the next contract is due, None when there is none (pure)."""
    waits = [
        max(0.0, checked[c.name][0] + c.contract.interval_seconds - now) if c.name in checked else 0.0  # type: ignore[union-attr]
        for c in contracted(spec)
    ]
    return min(waits) if waits else None


def rows(spec: ServiceRegistrationSpec | None, checked: Checked) -> tuple[tuple[str, bool, str, str], ...]:
    """What status says of each checked contract, by capability name (pure): the input of the
    ContractVerified conditions."""
    if not checked:
        return ()
    names = {c.name for c in contracted(spec)}
    return tuple(
        (name, result.passed, result.reason, result.message)
        for name, (_, result) in sorted(checked.items())
        if name in names
    )


class ContractChecker:
    def __init__(self, context: Context, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.context, self.metrics, self.clock = context, metrics, clock
        self._slots = asyncio.Semaphore(ADDRESS_CONCURRENCY)
        # Answers are judged against their schema in worker processes, never on the event loop.
        self.judge = Judge()

    def close(self) -> None:
        self.judge.close()

    async def check_due(self, spec: ServiceRegistrationSpec, key: Key, plan: Plan, checked: Checked) -> None:
        """Check every contract of ``spec`` that is due and record it in ``checked``. A contract
        that cannot be checked at all is recorded as failed (``ContractError``): it never
        raises into the probe job, whose health check goes on."""
        for capability in due(spec, checked, self.clock()):
            try:
                result = await self._check(spec, key, plan, capability)
            except Exception as error:
                logger.exception("checking the contract of %s/%s %s failed", *key, capability.name)
                said = f"the contract could not be checked ({type(error).__name__})"
                result = Verification(False, "ContractError", said)
            self.metrics.contract_checks.labels("passed" if result.passed else "failed").inc()
            checked[capability.name] = (self.clock(), result)

    async def _check(
        self, spec: ServiceRegistrationSpec, key: Key, plan: Plan, capability: Capability
    ) -> Verification:
        contract, schema = capability.contract, capability.output_schema
        assert contract is not None and schema is not None  # the model requires both
        targets = contract_targets(spec, key, plan, contract.timeout_seconds)
        if targets is None:
            return Verification(False, "NotHttp", "contracts are HTTP requests; the endpoint is not http(s)")
        if not targets:
            return Verification(False, "NoReadyEndpoints", "the Service has no ready addresses to ask")

        async def one(iid: str) -> tuple[str, Verification]:
            async with self._slots:
                return iid, await contract_mod.verify(
                    targets[iid], contract, schema, self.context, judge=self.judge, namespace=key[0]
                )

        results = await asyncio.gather(*(one(iid) for iid in targets))
        failed = [(iid, r) for iid, r in results if not r.passed]
        if not failed:
            return results[0][1]
        iid, first = failed[0]
        if not iid:
            return first
        return Verification(False, first.reason, f"{iid} of {len(targets)} addresses: {first.message}")
