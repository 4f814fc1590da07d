"""The discovery index: every registration the endpoint may serve, kept in memory.

Fed by a watch (``observe``), answered from memory (``query``). Secondary indices by
capability, service, tag and namespace mean a query intersects the smallest sets it names
instead of scanning every registration. Each change bumps ``index``, a counter clients use for
long polls and ``ETag``s, and is kept in a short history so ``/v1/watch`` can resume from a
``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pydantic

from svcreg.model import Health, ServiceRegistrationSpec

if TYPE_CHECKING:
    from svcreg.query import Query

Key = tuple[str, str]
HISTORY = 10_000


@dataclass(frozen=True)
class Instance:
    """A registration as discovery sees it: slim, immutable, rendered to JSON once."""

    namespace: str
    name: str
    service: str
    version: str | None
    endpoint: str | None
    capabilities: tuple[tuple[str, str | None, str | None], ...]
    tags: frozenset[str]
    metadata: tuple[tuple[str, str], ...]
    weight: int
    maintenance: bool
    health: str
    ready: bool
    generation: int
    instances: tuple[tuple[str, int, str], ...] = ()
    document: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    def capability_version(self, name: str) -> str | None:
        return next((v for n, v, _ in self.capabilities if n == name), None)

    def urls(self) -> list[str]:
        """Addresses to call: the endpoint, or each healthy serviceRef address."""
        if self.endpoint:
            return [self.endpoint]
        return [f"http://{address}:{port}" for address, port, health in self.instances if health in _SERVED]


_SERVED = (Health.HEALTHY, Health.DEGRADED)


def instance_from(body: dict[str, Any]) -> Instance | None:
    """Build an Instance from a watched object; None when its spec is not valid."""
    metadata = body.get("metadata") or {}
    try:
        spec = ServiceRegistrationSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError:
        return None
    status = body.get("status") or {}
    health = str(status.get("health") or Health.UNKNOWN)
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    name = metadata.get("name", "")
    namespace = metadata.get("namespace", "")
    instances = tuple(
        (str(i.get("address")), int(i.get("port") or 0), str(i.get("health")))
        for i in status.get("instances") or []
    )
    capabilities = tuple((c.name, c.version, c.description) for c in spec.capabilities)
    document: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "service": spec.service_name(name),
        "version": spec.version,
        "endpoint": spec.endpoint,
        "serviceRef": spec.service_ref.model_dump(exclude_none=True) if spec.service_ref else None,
        "capabilities": [
            {k: v for k, v in (("name", n), ("version", v), ("description", d)) if v is not None}
            for n, v, d in capabilities
        ],
        "tags": list(spec.tags),
        "metadata": dict(spec.metadata),
        "weight": spec.weight,
        "maintenance": spec.maintenance,
        "health": health,
        "ready": ready,
        "instances": [{"address": a, "port": p, "health": h} for a, p, h in instances],
        "generation": int(metadata.get("generation") or 0),
    }
    return Instance(
        namespace=namespace,
        name=name,
        service=spec.service_name(name),
        version=spec.version,
        endpoint=spec.endpoint,
        capabilities=capabilities,
        tags=frozenset(spec.tags),
        metadata=tuple(sorted(spec.metadata.items())),
        weight=spec.weight,
        maintenance=spec.maintenance,
        health=health,
        ready=ready,
        generation=int(metadata.get("generation") or 0),
        instances=instances,
        document=document,
    )


@dataclass(frozen=True)
class Change:
    index: int
    kind: str  # registered | updated | deleted | health-changed
    instance: Instance


class Index:
    def __init__(self) -> None:
        self.items: dict[Key, Instance] = {}
        self.by_capability: dict[str, set[Key]] = collections.defaultdict(set)
        self.by_service: dict[str, set[Key]] = collections.defaultdict(set)
        self.by_tag: dict[str, set[Key]] = collections.defaultdict(set)
        self.by_namespace: dict[str, set[Key]] = collections.defaultdict(set)
        # Changes whenever a namespace gains its first registration or loses its last: what a
        # caller may read is worked out over these, and remembered until this moves.
        self.namespaces_version = 0
        self.index = 0
        self._synced = asyncio.Event()
        self.history: collections.deque[Change] = collections.deque(maxlen=HISTORY)
        self._changed = asyncio.Event()

    @property
    def synced(self) -> bool:
        """Whether a first complete list has landed (what /readyz reports)."""
        return self._synced.is_set()

    @synced.setter
    def synced(self, value: bool) -> None:
        if value:
            self._synced.set()
        else:
            self._synced.clear()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    # -- writes (from the watch) -----------------------------------------------------------------

    def observe(self, event_type: str | None, body: dict[str, Any]) -> Change | None:
        metadata = body.get("metadata") or {}
        key: Key = (metadata.get("namespace", ""), metadata.get("name", ""))
        old = self.items.get(key)
        if event_type == "DELETED":
            if old is None:
                return None
            self._remove(old)
            return self._record("deleted", old)
        new = instance_from(body)
        if new is None:
            if old is not None:
                self._remove(old)
                return self._record("deleted", old)
            return None
        if old == new:
            return None  # nothing discovery shows has changed (e.g. a resync)
        if old is not None:
            self._remove(old)
        self._add(new)
        if old is None:
            return self._record("registered", new)
        only_health = old.generation == new.generation and (old.health, old.ready) != (new.health, new.ready)
        return self._record("health-changed" if only_health else "updated", new)

    def replace_all(self, bodies: Iterable[dict[str, Any]]) -> None:
        """A full (re)list: apply every object, and delete what is no longer there."""
        seen: set[Key] = set()
        for body in bodies:
            metadata = body.get("metadata") or {}
            seen.add((metadata.get("namespace", ""), metadata.get("name", "")))
            self.observe("MODIFIED", body)
        for key in [k for k in self.items if k not in seen]:
            self.observe("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
        self.synced = True

    def _add(self, item: Instance) -> None:
        key = item.key
        self.items[key] = item
        for name, _, _ in item.capabilities:
            self.by_capability[name].add(key)
        self.by_service[item.service].add(key)
        for tag in item.tags:
            self.by_tag[tag].add(key)
        if item.namespace not in self.by_namespace:
            self.namespaces_version += 1
        self.by_namespace[item.namespace].add(key)

    def _remove(self, item: Instance) -> None:
        key = item.key
        self.items.pop(key, None)
        for name, _, _ in item.capabilities:
            _discard(self.by_capability, name, key)
        _discard(self.by_service, item.service, key)
        for tag in item.tags:
            _discard(self.by_tag, tag, key)
        _discard(self.by_namespace, item.namespace, key)
        if item.namespace not in self.by_namespace:
            self.namespaces_version += 1

    def _record(self, kind: str, item: Instance) -> Change:
        self.index += 1
        change = Change(self.index, kind, item)
        self.history.append(change)
        self._changed.set()
        self._changed = asyncio.Event()
        return change

    # -- reads -----------------------------------------------------------------------------------

    async def wait_past(self, index: int, seconds: float) -> bool:
        """Wait until the index passes ``index``; False when ``seconds`` pass first."""
        try:
            async with asyncio.timeout(seconds):
                while self.index <= index:
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    def changes_since(self, index: int) -> list[Change] | None:
        """Changes after ``index``, or None when the history no longer reaches back that far."""
        if index >= self.index:
            return []
        if not self.history or self.history[0].index > index + 1:
            return None
        return [c for c in self.history if c.index > index]

    def candidates(self, query: Query, namespaces: frozenset[str] | None) -> list[Instance]:
        """Instances matching ``query`` in ``namespaces`` (None: all)."""
        sets: list[set[Key]] = []
        for capability in query.capabilities:
            sets.append(self.by_capability.get(capability, set()))
        for tag in query.tags:
            sets.append(self.by_tag.get(tag, set()))
        if query.service:
            sets.append(self.by_service.get(query.service, set()))
        if query.namespace:
            sets.append(self.by_namespace.get(query.namespace, set()))
        if sets:
            sets.sort(key=len)
            keys: Iterable[Key] = set.intersection(*sets) if len(sets) > 1 else sets[0]
        elif namespaces is not None and len(namespaces) < len(self.by_namespace):
            keys = [k for ns in namespaces for k in self.by_namespace.get(ns, ())]
        else:
            keys = self.items.keys()
        found = []
        for key in keys:
            item = self.items[key]
            if (namespaces is None or item.namespace in namespaces) and query.matches(item):
                found.append(item)
        found.sort(key=lambda i: i.key)
        return found


def _discard(index: dict[str, set[Key]], value: str, key: Key) -> None:
    keys = index.get(value)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[value]


def render(items: Iterable[Instance]) -> list[dict[str, Any]]:
    return [item.document for item in items]


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=False).encode()
