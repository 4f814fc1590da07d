"""JSON merge patch (RFC 7386), the semantics of ``PATCH /v1/registrations/...`` and of the
Kubernetes API's ``application/merge-patch+json``: objects merge key by key, ``null`` removes a
key, anything else (lists included) replaces. Pure; imports nothing."""

from __future__ import annotations

from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with ``patch`` applied; neither argument is changed."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged
