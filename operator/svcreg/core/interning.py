"""One object for equal frozen models, so memory per registration stays small.

Thousands of registrations carry the same health check, the same flap-damping settings, the
same capabilities and, once converged, statuses that differ only by a few fields, if at all.
Models are frozen (immutable), so equal ones can be the same object. Each table is bounded:
when full it is cleared; what it already handed out stays valid and is merely no longer
shared with what comes later.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class Interner(Generic[T]):
    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._table: dict[Hashable, T] = {}

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        found = self._table.get(key)
        if found is None:
            if len(self._table) >= self.limit:
                self._table.clear()
            found = self._table[key] = make()
        return found

    def __len__(self) -> int:
        return len(self._table)


_models: Interner[BaseModel] = Interner()


_fields_sets: Interner[set[str]] = Interner(limit=256)


def shared_fields_set(model: M) -> M:
    """``model`` with its set of explicitly given field names (pydantic's
    ``model_fields_set``, one set of a few hundred bytes per instance) shared with every model
    that gave the same names. Safe because the model is frozen: pydantic copies the set when it
    makes a changed copy, and never writes it otherwise."""
    names = model.__pydantic_fields_set__
    object.__setattr__(model, "__pydantic_fields_set__", _fields_sets.get(frozenset(names), lambda: names))
    return model


def shared(model: M) -> M:
    """An equal model that may be shared (``model`` itself the first time it is seen)."""
    found = _models.get((type(model), model.model_dump_json()), lambda: model)
    assert isinstance(found, type(model))
    return found
