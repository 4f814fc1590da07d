"""Progress lines for long work, on stderr so that stdout stays machine-readable.

``eval "$(svcreg cluster up)"`` reads stdout; everything a human watches goes to stderr.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

Reporter = Callable[[str], None]


def stderr_reporter(message: str) -> None:
    print(f"svcreg: {message}", file=sys.stderr, flush=True)


def silent(message: str) -> None:
    """A reporter for callers that do not want progress (tests capture logs instead)."""


def elapsed(since: float) -> str:
    seconds = int(time.monotonic() - since)
    return f"{seconds // 60}m{seconds % 60:02d}s"
