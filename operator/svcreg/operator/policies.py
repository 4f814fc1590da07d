"""ServicePolicy status: how many of its service's instances are served, and whether discovery
answers it in panic mode, written back to the policy as ``healthy``, ``total`` and the condition
``Panic``, with an Event when panic starts or ends.

What panic is, is decided where answers are built (the discovery index's ``panic_state``); the
process assembly hands this writer a function that lists every policy's current state. The
writer compares with what it last wrote and patches only what changed, so a steady service
costs no writes. Only the member of the prober group whose share a policy is writes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from svcreg.core import model
from svcreg.kube import errors
from svcreg.kube.api import KubeApi, now_rfc3339
from svcreg.operator.reconcile import EventSpec
from svcreg.operator.writer import StatusWriter

logger = logging.getLogger(__name__)
CHECK_SECONDS = 2.0


@dataclass(frozen=True)
class PolicyState:
    namespace: str
    name: str
    uid: str
    generation: int
    service: str
    threshold: int
    served: int
    total: int
    panic: bool


def desired(previous: dict[str, Any] | None, state: PolicyState, now: str) -> dict[str, Any]:
    """The status to write (pure): lastTransitionTime moves only when Panic changes."""
    status = "True" if state.panic else "False"
    if state.panic:
        reason = "BelowPanicThreshold"
        message = (
            f"{state.served} of {state.total} instances served, below {state.threshold}%: discovery "
            "answers with every instance not in maintenance, marked panic"
        )
    else:
        reason = "ThresholdDisabled" if state.threshold == 0 else "EnoughServed"
        message = f"panic below {state.threshold}% of instances served" if state.threshold else "panic is off"
    old = next((c for c in (previous or {}).get("conditions") or [] if c.get("type") == "Panic"), None)
    moved = old is None or old.get("status") != status
    return {
        "observedGeneration": state.generation,
        "healthy": state.served,
        "total": state.total,
        "conditions": [
            {
                "type": "Panic",
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now if moved else old.get("lastTransitionTime", now),  # type: ignore[union-attr]
                "observedGeneration": state.generation,
            }
        ],
    }


class PolicyStatusWriter:
    def __init__(
        self,
        api: KubeApi,
        writer: StatusWriter,
        states: Callable[[], list[PolicyState]],
        owns: Callable[[tuple[str, str]], bool] = lambda key: True,
        every: float = CHECK_SECONDS,
    ) -> None:
        self.api, self.writer, self.states, self.owns, self.every = api, writer, states, owns, every
        self._written: dict[tuple[str, str], tuple[PolicyState, dict[str, Any]]] = {}

    async def run(self) -> None:
        while True:
            await self.write_changes()
            await asyncio.sleep(self.every)

    async def write_changes(self) -> None:
        seen = set()
        for state in self.states():
            key = (state.namespace, state.name)
            if not self.owns((state.namespace, f"{model.POLICY_PLURAL}/{state.name}")):
                continue  # another member of the prober group writes it
            seen.add(key)
            last = self._written.get(key)
            if last is not None and last[0] == state:
                continue
            previous = last[1] if last is not None and last[0].uid == state.uid else None
            wanted = desired(previous, state, now_rfc3339())
            try:
                await self.api.patch_status(state.namespace, state.name, wanted, plural=model.POLICY_PLURAL)
            except (errors.KubeApiError, errors.Unreachable) as error:
                logger.warning("status of ServicePolicy %s/%s not written (will retry): %s", *key, error)
                continue
            self._written[key] = (state, wanted)
            was_panic = last is not None and last[0].uid == state.uid and last[0].panic
            if state.panic != was_panic and (state.panic or last is not None):
                event = (
                    EventSpec("Warning", "Panic", wanted["conditions"][0]["message"], action="Panic")
                    if state.panic
                    else EventSpec("Normal", "PanicEnded", "enough instances served again", action="Panic")
                )
                await self.writer.post_event(key, state.uid, event, kind=model.POLICY_KIND)
        for gone in set(self._written) - seen:
            del self._written[gone]
