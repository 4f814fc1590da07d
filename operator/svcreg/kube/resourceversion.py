"""Ordering resource versions of one resource (KEP-5504, GA in Kubernetes 1.35).

A resourceVersion is a positive decimal integer without leading zeros; two of the same resource
compare as such numbers (by length, then digit by digit, as client-go's
``CompareResourceVersion`` does). An event older than the object last seen (a watch that lags
behind the answer of a write) is recognised as stale instead of undoing what is known.
"""

from __future__ import annotations


def _valid(version: str) -> bool:
    return bool(version) and version.isascii() and version.isdigit() and version[0] != "0"


def compare(a: str, b: str) -> int | None:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b``; None when either
    is not a comparable resource version (an API server that does not promise the order)."""
    if not (_valid(a) and _valid(b)):
        return None
    if len(a) != len(b):
        return -1 if len(a) < len(b) else 1
    return (a > b) - (a < b)


def older(a: str, b: str) -> bool:
    """Whether ``a`` is known to be older than ``b``."""
    return compare(a, b) == -1
