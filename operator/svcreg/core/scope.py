"""Which namespaces a process serves: literal names, or patterns such as ``team-*``."""

from __future__ import annotations


def has_globs(namespaces: tuple[str, ...]) -> bool:
    """Whether any namespace is a pattern: then namespaces must be listed (or watched
    cluster-wide and filtered) to know which match."""
    return any(any(c in ns for c in "*?[") for ns in namespaces)
