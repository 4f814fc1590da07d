"""A bound per key on concurrent work: at most ``per_key`` holders of one key at a time.

For fairness between tenants: one namespace's contract judgements, one user's reviews. A key's
semaphore exists only while someone holds or waits for it, so the map is bounded by the work in
flight, not by the keys ever seen. Imports the standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable


class KeyedSlots:
    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._slots: dict[Hashable, tuple[asyncio.Semaphore, int]] = {}

    def __len__(self) -> int:
        """Keys with work held or waiting."""
        return len(self._slots)

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        """Wait for one of ``key``'s slots and hold it for the block (cancellable while waiting)."""
        semaphore, users = self._slots.get(key, (None, 0))
        if semaphore is None:
            semaphore = asyncio.Semaphore(self.per_key)
        self._slots[key] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self._slots[key]
            if users == 1:
                del self._slots[key]
            else:
                self._slots[key] = (semaphore, users - 1)
