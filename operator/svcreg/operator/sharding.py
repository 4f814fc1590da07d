"""Which member probes a registration: rendezvous (highest random weight) hashing.

Each key goes to the member with the highest hash of (member, key). When a member leaves, only
the keys it owned move (each to the member that was second for it); when one arrives, only the
keys it now wins move to it. Pure: no clock, no I/O, so every member computes the same answer
from the same member set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from svcreg.core.keys import Key


def weight(member: str, key: Key) -> int:
    digest = hashlib.blake2b(f"{member}\0{key[0]}\0{key[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: Key, members: Iterable[str]) -> str | None:
    """The member that owns ``key``, or None when there is no member."""
    best: str | None = None
    best_weight = -1
    for member in members:
        w = weight(member, key)
        if w > best_weight or (w == best_weight and best is not None and member < best):
            best, best_weight = member, w
    return best
