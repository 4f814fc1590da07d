"""ServicePolicy status: how many of its service's instances are served, and whether discovery
answers it in panic mode, written back to the policy as ``healthy``, ``total`` and the condition
``Panic``, with an Event when panic starts or ends; the health disruption budget's standing
(``budget``, condition ``BudgetExhausted`` and its Events) and the shadow check's summary
(``shadow``).

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

from svcreg.core import conditions, model
from svcreg.core.keys import Key
from svcreg.core.model import ConditionStatus
from svcreg.kube.api import now_rfc3339
from svcreg.operator.budget import Standing
from svcreg.operator.budget import message as budget_message
from svcreg.operator.reconcile import EventSpec
from svcreg.operator.shadow import Summary
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
    budget: Standing | None = None
    shadow: Summary | None = None
    # Another policy of the same service governs it (the oldest does): this one is ignored.
    ignored_for: str | None = None


def _budget_condition(state: PolicyState) -> tuple[ConditionStatus, str, str]:
    budget = state.budget
    assert budget is not None
    if budget.exhausted:
        return "True", "BudgetSpent", budget_message(budget)
    return "False", "WithinBudget", f"{budget.spent} of {budget.allowed} allowed within {budget.window}s"


def desired(previous: dict[str, Any] | None, state: PolicyState, now: str) -> dict[str, Any]:
    """The status to write (pure), as the body of a merge patch of ``status``: ``previous`` is
    the body last written, whose conditions keep their lastTransitionTime where their status
    did not change."""
    wanted = policy_status(conditions.parsed((previous or {}).get("conditions")), state, now)
    body: dict[str, Any] = wanted.model_dump(mode="json", by_alias=True, exclude_none=True)
    for name in ("budget", "shadow"):
        body.setdefault(name, None)  # merge patch: null removes what a former spec had
    return body


def policy_status(before: list[model.Condition], state: PolicyState, now: str) -> model.ServicePolicyStatus:
    """The typed status of ``state``'s policy, given the conditions it had ``before``."""
    rows = [("Panic", *_panic_condition(state))]
    if state.ignored_for is not None:
        rows.insert(
            0,
            (
                "Accepted",
                "False",
                "DuplicatePolicy",
                f"ServicePolicy {state.ignored_for} also names service {state.service} and is older: it "
                "governs the service, and this one is ignored until it is removed",
            ),
        )
    if state.budget is not None:
        rows.append(("BudgetExhausted", *_budget_condition(state)))
    return model.ServicePolicyStatus(
        observed_generation=state.generation,
        healthy=state.served,
        total=state.total,
        budget=model.PolicyBudgetStatus(allowed=state.budget.allowed, spent=state.budget.spent)
        if state.budget
        else None,
        shadow=state.shadow.as_status() if state.shadow is not None else None,
        conditions=[
            conditions.transition(
                conditions.find(before, kind), kind, value, why, text, generation=state.generation, now=now
            )
            for kind, value, why, text in rows
        ],
    )


def _panic_condition(state: PolicyState) -> tuple[ConditionStatus, str, str]:
    if state.panic:
        return (
            "True",
            "BelowPanicThreshold",
            (
                f"{state.served} of {state.total} instances served, below {state.threshold}%: discovery "
                "answers with every instance not in maintenance, marked panic"
            ),
        )
    if state.threshold == 0:
        return "False", "ThresholdDisabled", "panic is off"
    return "False", "EnoughServed", f"panic below {state.threshold}% of instances served"


class PolicyStatusWriter:
    def __init__(
        self,
        writer: StatusWriter,
        states: Callable[[], list[PolicyState]],
        owns: Callable[[Key], bool] = lambda key: True,
        every: float = CHECK_SECONDS,
    ) -> None:
        self.writer, self.states, self.owns, self.every = writer, states, owns, every
        self._written: dict[Key, tuple[PolicyState, dict[str, Any]]] = {}

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
            if not await self.writer.write_policy_status(key, wanted):
                continue
            self._written[key] = (state, wanted)
            same = last is not None and last[0].uid == state.uid
            await self._budget_event(state, last[0] if same and last is not None else None, wanted)
            was_panic = same and last is not None and last[0].panic
            if state.panic != was_panic and (state.panic or last is not None):
                event = (
                    EventSpec("Warning", "Panic", _message(wanted, "Panic"), action="Panic")
                    if state.panic
                    else EventSpec("Normal", "PanicEnded", "enough instances served again", action="Panic")
                )
                await self.writer.post_event(key, state.uid, event, kind=model.POLICY_KIND)
        for gone in set(self._written) - seen:
            del self._written[gone]

    async def _budget_event(
        self, state: PolicyState, last: PolicyState | None, wanted: dict[str, Any]
    ) -> None:
        """An Event when the budget runs out, and when it is back (not on this process's first
        write of a policy whose budget is not spent)."""
        now = state.budget is not None and state.budget.exhausted
        before = last is not None and last.budget is not None and last.budget.exhausted
        if now == before or (not now and last is None):
            return
        message = (
            _message(wanted, "BudgetExhausted") or "the policy no longer sets a health disruption budget"
        )
        event = (
            EventSpec("Warning", "BudgetExhausted", message, action="Budget")
            if now
            else EventSpec("Normal", "BudgetRestored", message, action="Budget")
        )
        await self.writer.post_event((state.namespace, state.name), state.uid, event, kind=model.POLICY_KIND)


def _message(status: dict[str, Any], kind: str) -> str:
    """The message of ``status``'s condition ``kind`` ("" when it has none)."""
    return next((str(c["message"]) for c in status["conditions"] if c["type"] == kind), "")
