"""The identity of a namespaced Kubernetes object as svcreg keys it everywhere.

A ``Key`` is ``(namespace, name)``: a registration, a ServicePolicy, a Service, an EndpointSlice,
a ServiceAccount. It is a plain tuple so that keys are cheap to build, hash and compare in the
index and the prober's maps, which hold one per registration.
"""

from __future__ import annotations

from typing import TypeAlias

Key: TypeAlias = tuple[str, str]
