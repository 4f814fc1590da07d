"""Giving freed memory back to the system.

A start-up listing of thousands of registrations, and the burst of first status writes after
it, parse tens of megabytes of JSON that are garbage a moment later. CPython frees those
objects, but glibc's allocator keeps the pages for reuse, so RSS stays at the burst's peak for
the life of the process. ``malloc_trim`` returns the free pages at the top of each heap and
any fully free ones; it costs milliseconds, so it runs after the start-up and then now and
then, never per request. Elsewhere than glibc it is a no-op.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _trimmer() -> Callable[[], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


_TRIM = _trimmer()


def trim() -> bool:
    """Return free heap memory to the system (whatever there is); False where that is not
    possible (not glibc)."""
    if _TRIM is None:
        return False
    _TRIM()
    return True


async def trim_every(seconds: float) -> None:
    """``trim`` now and then, until cancelled (churn leaves freed pages behind too)."""
    while True:
        await asyncio.sleep(seconds)
        trim()
