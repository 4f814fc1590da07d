"""Status conditions as Kubernetes API conventions describe them, for every kind svcreg writes.

One place decides what a condition's ``lastTransitionTime`` is (it moves only when the status
changes) and how a condition is found, for registrations, ServicePolicies and the index's view
of watched objects alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pydantic

from svcreg.core.model import Condition, ConditionStatus


def transition(
    before: Condition | None,
    kind: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int,
    now: str,
) -> Condition:
    """Condition ``kind`` as it is now: its ``lastTransitionTime`` is ``now`` when the status
    changed from ``before`` (or there was none), else ``before``'s."""
    moved = before is None or before.status != status
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message[:4096],
        last_transition_time=now if moved or before is None else before.last_transition_time,
        observed_generation=generation,
    )


def find(conditions: Iterable[Condition], kind: str) -> Condition | None:
    """The condition ``kind`` among ``conditions``, if there is one."""
    return next((c for c in conditions if c.type == kind), None)


def holds(conditions: Iterable[Condition], kind: str) -> bool:
    """Whether the condition ``kind`` is True among ``conditions``."""
    found = find(conditions, kind)
    return found is not None and found.status == "True"


def parsed(raw: Sequence[Any] | None) -> list[Condition]:
    """The conditions of a status as the API server holds it (camelCase dicts); one that does
    not parse is left out, as if it had not been written."""
    found = []
    for item in raw or ():
        try:
            found.append(Condition.model_validate(item))
        except pydantic.ValidationError:
            continue
    return found


def holds_raw(raw: Sequence[Any] | None, kind: str) -> bool:
    """``holds`` for conditions straight from a watched object, without building models: the
    index reads every registration's capability conditions on each event."""
    return any(isinstance(c, dict) and c.get("type") == kind and c.get("status") == "True" for c in raw or ())
