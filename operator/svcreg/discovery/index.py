"""The discovery index: every registration the endpoint may serve, kept in memory.

Fed by a watch (``observe``), answered from memory (``query``). Secondary indices by
capability, service, tag and namespace mean a query intersects the smallest sets it names
instead of scanning every registration. Each change bumps ``index``, a counter clients use for
long polls and ``ETag``s, is kept in a short history so ``/v1/watch`` can resume from a
``Last-Event-ID``, and is handed to the open watches and long polls it may concern
(``svcreg.discovery.routing``).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import pydantic

from svcreg.core import conditions, wire
from svcreg.core.health import SERVED, Health
from svcreg.core.keys import Key
from svcreg.core.model import ServicePolicySpec, ServiceRegistrationSpec
from svcreg.discovery.routing import Filter, Router

HISTORY = 10_000
_NO_DOCUMENT = b""  # what a superseded entry keeps
_NONE: frozenset[str] = frozenset()  # one empty set for every entry without tags (216 bytes each)


@dataclass(frozen=True, slots=True)
class Entry:
    """A registration as the index holds it: slim, immutable, its wire document built once.

    The tuple and set fields are what queries match on; ``document`` is the ``wire.Registration``
    served for it, encoded as JSON when the entry is made, so an answer only joins documents
    (and ten thousand of them take a third of the memory their decoded form did)."""

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
    check_type: str
    instances: tuple[tuple[str, int, str], ...] = ()
    observed_generation: int = 0  # status.observedGeneration: behind ``generation``, served Unknown
    damped: bool = False  # held out of rotation by flap damping (condition Flapping)
    ejected: bool = False  # ejected on its callers' reports (condition Ejected)
    verified: frozenset[str] = _NONE  # capabilities whose contract passed (ContractVerified)
    panic: bool = field(default=False, compare=False)  # served in its service's panic mode
    document: bytes = field(default=b"", compare=False, hash=False)

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def view(self) -> dict[str, Any]:
        """The served document, decoded (for an answer that adds to it, and for tests)."""
        view: dict[str, Any] = json.loads(self.document)
        return view

    def capability_version(self, name: str) -> str | None:
        return next((v for n, v, _ in self.capabilities if n == name), None)


def entry_from(body: dict[str, Any]) -> Entry | None:
    """The index entry for a watched object; None when its spec is not valid."""
    metadata = body.get("metadata") or {}
    try:
        spec = ServiceRegistrationSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError:
        return None
    status = body.get("status") or {}
    name = metadata.get("name", "")
    generation = int(metadata.get("generation") or 0)
    # Health written for an older spec says nothing of this one (a new endpoint may be dead):
    # until the operator has observed this generation, the registration is served as Unknown.
    current = int(status.get("observedGeneration") or 0) >= generation
    health = _health(status.get("health")) if current else Health.UNKNOWN
    written = status.get("conditions") or []
    verified = _verified(status) if current else _NONE
    view = wire.Registration(
        namespace=metadata.get("namespace", ""),
        name=name,
        service=spec.service_name(name),
        display_name=spec.display_name,
        registered_at=metadata.get("creationTimestamp"),
        version=spec.version,
        endpoint=spec.endpoint,
        service_ref=spec.service_ref,
        capabilities=[
            wire.CapabilityView(
                name=c.name,
                version=c.version,
                description=c.description,
                input_schema=c.input_schema,
                output_schema=c.output_schema,
                verified=(c.name in verified) if c.contract is not None else None,
            )
            for c in spec.capabilities
        ],
        tags=list(spec.tags),
        metadata=dict(spec.metadata),
        weight=spec.weight,
        maintenance=spec.maintenance,
        health=health,
        ready=current and conditions.holds_raw(written, "Ready"),
        instances=[
            wire.Address(
                address=str(i.get("address")), port=int(i.get("port") or 0), health=_health(i.get("health"))
            )
            for i in status.get("instances") or []
        ],
        generation=generation,
        damped=current and conditions.holds_raw(written, "Flapping"),
        ejected=current and conditions.holds_raw(written, "Ejected"),
    )
    return Entry(
        namespace=view.namespace,
        name=name,
        service=view.service,
        version=spec.version,
        endpoint=spec.endpoint,
        capabilities=tuple((c.name, c.version, c.description) for c in spec.capabilities),
        tags=frozenset(spec.tags) if spec.tags else _NONE,
        metadata=tuple(sorted(spec.metadata.items())),
        weight=spec.weight,
        maintenance=spec.maintenance,
        health=view.health.value,  # the member's own string, shared by every entry
        ready=view.ready,
        generation=view.generation,
        check_type=spec.check_type(),
        instances=tuple((i.address, i.port, i.health.value) for i in view.instances),
        observed_generation=int(status.get("observedGeneration") or 0),
        damped=view.damped,
        ejected=view.ejected,
        verified=verified,
        document=dumps(view.model_dump(mode="json", by_alias=True)),
    )


def _verified(status: dict[str, Any]) -> frozenset[str]:
    """The capabilities whose ContractVerified condition is True in a watched object's status."""
    found = status.get("capabilities")
    if not isinstance(found, list) or not found:
        return _NONE
    return frozenset(
        str(c.get("name"))
        for c in found
        if isinstance(c, dict) and conditions.holds_raw(c.get("conditions"), "ContractVerified")
    )


def _health(value: Any) -> Health:
    try:
        return Health(value) if value else Health.UNKNOWN
    except ValueError:
        return Health.UNKNOWN


class Selector(Filter, Protocol):
    """What ``Index.candidates`` needs of a query (``svcreg.discovery.query.Query``): the
    filters it answers from its sets (those routes are chosen from), and a predicate for the
    rest."""

    @property
    def health(self) -> frozenset[str] | None: ...

    def matches(self, item: Entry) -> bool: ...

    def selects(self, item: Entry) -> bool: ...

    def without_health(self) -> Selector: ...


@dataclass(frozen=True, slots=True)
class Change:
    index: int
    kind: str  # registered | updated | deleted | health-changed
    instance: Entry
    previous: Entry | None = None  # the entry before an update: a filter it left must hear of it
    # The server-sent event as sent, by the kind a subscriber hears: encoded once per change,
    # not once per watcher (a change that 1,000 watchers hear is serialised once).
    encoded: dict[str, bytes] = field(default_factory=dict, compare=False, hash=False, repr=False)
    at: float = field(default=0.0, compare=False)  # monotonic time it entered the index


class Index:
    def __init__(
        self, wall: Callable[[], float] = time.time, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self.stale_since: float | None = None
        self.stale_reason = ""
        self.items: dict[Key, Entry] = {}
        self.seen: set[Key] = set()  # every key observed, valid or not (items holds the valid)
        self.by_capability: dict[str, set[Key]] = collections.defaultdict(set)
        self.by_service: dict[str, set[Key]] = collections.defaultdict(set)
        self.by_tag: dict[str, set[Key]] = collections.defaultdict(set)
        self.by_namespace: dict[str, set[Key]] = collections.defaultdict(set)
        # Changes whenever a namespace gains its first registration or loses its last: what a
        # caller may read is worked out over these, and remembered until this moves.
        self.namespaces_version = 0
        # The change counter starts from the wall clock (milliseconds x 1000), not 0: an index
        # or Last-Event-ID from before a restart is then below this process's history and one
        # from another replica falls outside it, so either is recognised as unknown (a long poll
        # answers at once, a watch sends reset) instead of being taken for a point of this
        # history. 2**53 (JavaScript's exact integers) is reached in the year 2255.
        self.index = int(wall() * 1000) * 1000
        self._first = self.index
        self._synced = asyncio.Event()
        self.history: collections.deque[Change] = collections.deque(maxlen=HISTORY)
        self.router: Router[Change] = Router(start=self.index)
        self.counts: collections.Counter[str] = collections.Counter()  # changes recorded, by kind
        # ServicePolicies: (namespace, service) -> panic threshold percent, and which policy
        # (namespace, name) set it. Their changes move ``policy_version``, which answer caches
        # key on (they are not registration changes, so not in the history).
        self.policies: dict[Key, int] = {}
        # (namespace, service) -> (policy name, spec): what the prober reads of a service's
        # policy (its disruption budget and shadow check).
        self.policy_specs: dict[Key, tuple[str, ServicePolicySpec]] = {}
        # (namespace, name) -> (uid, generation, service, threshold): which service each policy
        # governs, and what the policies' status is written from.
        self.policy_meta: dict[Key, tuple[str, int, str, int]] = {}
        # (namespace, name) -> (creationTimestamp, name, spec) of every valid policy.
        self._policy_order: dict[Key, tuple[str, str, ServicePolicySpec]] = {}
        self.policy_version = 0
        self.panic_answers = 0  # answers built in panic mode

    def mark_stale(self, reason: str) -> None:
        """The watch feeding this index is down: what it holds may be out of date."""
        if self.stale_since is None:
            self.stale_since = self._clock()
        self.stale_reason = reason

    def mark_fresh(self) -> None:
        self.stale_since, self.stale_reason = None, ""

    def staleness(self) -> float | None:
        """Seconds since the index stopped being fed, or None while it is."""
        return None if self.stale_since is None else self._clock() - self.stale_since

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
            self.seen.discard(key)
            if old is None:
                return None
            self._remove(old)
            return self._record("deleted", old)
        self.seen.add(key)
        new = entry_from(body)
        if new is None:
            if old is not None:
                self._remove(old)
                return self._record("deleted", old)
            return None
        if old == new:
            return None  # nothing discovery shows has changed (e.g. a resync)
        if old is not None:
            self._remove(old, keep_namespace=True)  # the same key: the namespace stays
        self._add(new)
        if old is None:
            return self._record("registered", new)
        only_health = old.generation == new.generation and (old.health, old.ready) != (new.health, new.ready)
        return self._record("health-changed" if only_health else "updated", new, old)

    def replace(self, bodies: Iterable[dict[str, Any]], namespace: str | None = None) -> None:
        """A full (re)list of ``namespace`` (None: every namespace): apply every object, and
        delete what is no longer there. The one place an index's contents are replaced."""
        listed: set[Key] = set()
        for body in bodies:
            metadata = body.get("metadata") or {}
            listed.add((metadata.get("namespace", ""), metadata.get("name", "")))
            self.observe("MODIFIED", body)
        gone = [k for k in self.seen if k not in listed and (namespace is None or k[0] == namespace)]
        for key in gone:
            self.observe("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})

    def _add(self, item: Entry) -> None:
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

    def _remove(self, item: Entry, *, keep_namespace: bool = False) -> None:
        """Take ``item`` out of every index. ``keep_namespace``: it is replaced at once by a
        newer version of itself, so its namespace neither disappears nor moves
        ``namespaces_version`` (which every caller's reader memo is keyed on)."""
        key = item.key
        self.items.pop(key, None)
        for name, _, _ in item.capabilities:
            _discard(self.by_capability, name, key)
        _discard(self.by_service, item.service, key)
        for tag in item.tags:
            _discard(self.by_tag, tag, key)
        if keep_namespace:
            return
        _discard(self.by_namespace, item.namespace, key)
        if item.namespace not in self.by_namespace:
            self.namespaces_version += 1

    def _record(self, kind: str, item: Entry, previous: Entry | None = None) -> Change:
        self.index += 1
        if previous is not None:
            # What a change needs of the version before it is its filterable fields and health
            # (routing, departures, previousHealth), never its document: the history keeps
            # ten thousand of these, so the superseded documents are let go.
            previous = replace(previous, document=_NO_DOCUMENT)
        change = Change(self.index, kind, item, previous, at=self._clock())
        self.counts[kind] += 1
        self.history.append(change)
        self.router.publish(change, self.index)
        return change

    def observe_policy(self, event_type: str | None, body: dict[str, Any]) -> None:
        """One watch event of a ServicePolicy. A policy whose spec is not valid sets nothing.

        Two policies may name one service in a namespace (nothing at apply can see the other):
        the oldest (by creation time, then name) governs it, and the others are kept and say
        so in their status (``conflicts``), so deleting either never forgets the other."""
        metadata = body.get("metadata") or {}
        name: Key = (metadata.get("namespace", ""), metadata.get("name", ""))
        previous = self.policy_meta.pop(name, None)
        self._policy_order.pop(name, None)
        touched = {(name[0], previous[2])} if previous is not None else set()
        if event_type != "DELETED":
            try:
                spec = ServicePolicySpec.model_validate(body.get("spec") or {})
            except pydantic.ValidationError:
                spec = None
            if spec is not None:
                self._policy_order[name] = (str(metadata.get("creationTimestamp") or ""), name[1], spec)
                self.policy_meta[name] = (
                    str(metadata.get("uid", "")),
                    int(metadata.get("generation") or 0),
                    spec.service,
                    spec.panic_threshold_percent,
                )
                touched.add((name[0], spec.service))
        for service in touched:
            self._govern(service)
        self.policy_version += 1

    def _govern(self, service: Key) -> None:
        """Which policy governs ``service`` (namespace, service name): the oldest naming it."""
        namespace, logical = service
        naming = sorted(
            (order[:2], key)
            for key, order in self._policy_order.items()
            if key[0] == namespace and order[2].service == logical
        )
        if not naming:
            self.policies.pop(service, None)
            self.policy_specs.pop(service, None)
            return
        winner = naming[0][1]
        spec = self._policy_order[winner][2]
        self.policies[service] = spec.panic_threshold_percent
        self.policy_specs[service] = (winner[1], spec)

    def governing(self, namespace: str, name: str) -> str | None:
        """The name of the policy that governs the service policy ``name`` names, when that is
        another one (``name`` is then ignored); None when ``name`` governs it itself."""
        meta = self.policy_meta.get((namespace, name))
        if meta is None:
            return None
        found = self.policy_specs.get((namespace, meta[2]))
        return found[0] if found is not None and found[0] != name else None

    def replace_policies(self, bodies: Iterable[dict[str, Any]], namespace: str | None = None) -> None:
        """A full (re)list of ServicePolicies in ``namespace`` (None: every namespace)."""
        listed = set()
        for body in bodies:
            metadata = body.get("metadata") or {}
            listed.add((metadata.get("namespace", ""), metadata.get("name", "")))
            self.observe_policy("MODIFIED", body)
        for name in [
            n for n in self.policy_meta if n not in listed and (namespace is None or n[0] == namespace)
        ]:
            self.observe_policy("DELETED", {"metadata": {"namespace": name[0], "name": name[1]}})

    def policy_for(self, namespace: str, service: str) -> tuple[str, ServicePolicySpec] | None:
        """The ServicePolicy of one logical service, as (its name, its spec), if it has one."""
        return self.policy_specs.get((namespace, service))

    def panic_state(self, namespace: str, service: str) -> tuple[int, int, bool]:
        """(served, total, panic) of one logical service: its instances not in maintenance, how
        many of them are served (healthy, not damped or ejected), and whether that share is
        below its policy's panic threshold."""
        threshold = self.policies.get((namespace, service), 0)
        members = [
            item
            for key in self.by_service.get(service, ())
            if key[0] == namespace and not (item := self.items[key]).maintenance
        ]
        served = sum(1 for m in members if m.health in SERVED and not m.damped and not m.ejected)
        return served, len(members), bool(members) and served * 100 < threshold * len(members)

    def _with_panic(
        self, query: Selector, namespaces: frozenset[str] | None, found: list[Entry]
    ) -> list[Entry]:
        """Envoy's panic mode: for a service whose served share is below its policy's
        threshold, every instance not in maintenance that the query selects but for health is
        in the answer, marked ``panic: true``, instead of all traffic going to the survivors."""
        marked: dict[Key, Entry] = {}
        relaxed = query.without_health()
        for namespace, service in self.policies:
            if namespaces is not None and namespace not in namespaces:
                continue
            if not self.panic_state(namespace, service)[2]:
                continue
            for key in self.by_service.get(service, ()):
                item = self.items[key]
                if key[0] == namespace and not item.maintenance and relaxed.selects(item):
                    marked[key] = replace(item, panic=True, document=dumps({**item.view, "panic": True}))
        if not marked:
            return found
        self.panic_answers += 1
        merged = {item.key: item for item in found if item.key not in marked}
        merged.update(marked)
        return [merged[key] for key in sorted(merged)]

    def panic_keys(self, query: Selector, namespaces: frozenset[str] | None) -> set[Key]:
        """The keys a query's answer holds only because their service is in panic."""
        if not self.policies or query.health is None:
            return set()
        return {i.key for i in self.candidates(query, namespaces) if i.panic}

    # -- reads -----------------------------------------------------------------------------------

    def resume_point(self, event_id: str) -> int | None:
        """The index a ``Last-Event-ID`` resumes from; None when it is not a point of this
        process's history (before it, after it, or not an id at all)."""
        if not event_id.isascii() or not event_id.isdigit() or len(event_id) > 18:
            return None
        position = int(event_id)
        return position if self._first <= position <= self.index else None

    def changes_since(self, index: int) -> list[Change] | None:
        """Changes after ``index``, or None when the history no longer reaches back that far."""
        if index >= self.index:
            return []
        if not self.history or self.history[0].index > index + 1:
            return None
        # History indexes are consecutive, so the changes wanted are the last ``self.index -
        # index`` entries: taken from the right, a watcher that is up to date costs O(1) per
        # change however long the history is (not a scan of all of it per watcher).
        wanted = self.index - index
        newest_first = list(itertools.islice(reversed(self.history), wanted))
        newest_first.reverse()
        return newest_first

    def candidates(self, query: Selector, namespaces: frozenset[str] | None) -> list[Entry]:
        """Entrys matching ``query`` in ``namespaces`` (None: all)."""
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
        if self.policies and query.health is not None:
            return self._with_panic(query, namespaces, found)
        return found


def _discard(index: dict[str, set[Key]], value: str, key: Key) -> None:
    keys = index.get(value)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[value]


def render(items: Iterable[Entry]) -> bytes:
    """The JSON array of the entries' documents."""
    return b"[" + b",".join([item.document for item in items]) + b"]"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=False).encode()
