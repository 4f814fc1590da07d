"""The read routes of ``/v1`` and the state every route shares (``Discovery``): discovery answers
from the in-memory index, for callers RBAC allows. Writes are in ``writes`` and
``registrations``, routes between members in ``internal``.

Every answer is limited to the namespaces the caller may ``list`` registrations in. List
answers carry ``index`` (the index's change counter) and an ``ETag``; ``?index=N&wait=30s``
holds the request until the index passes N (capped, with jitter), and identical concurrent
long polls share one evaluation.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from svcreg.core.errors import BadParameter
from svcreg.core.health import Health
from svcreg.core.keys import Key
from svcreg.core.refusals import (
    Forbidden,
    MethodNotAllowed,
    NotFound,
    Refusal,
    TooManyRequests,
    Unavailable,
)
from svcreg.discovery import consumers as consumers_mod
from svcreg.discovery import explain as explain_mod
from svcreg.discovery import query as query_mod
from svcreg.discovery.consumers import ConsumerLog
from svcreg.discovery.http.answers import Answer, AnswerCache
from svcreg.discovery.http.auth import Authorizer, Identity, token_expiry
from svcreg.discovery.http.ratelimit import Slots, TokenBuckets
from svcreg.discovery.http.replicas import Replicas
from svcreg.discovery.http.roles import Probing, Relaying, Role
from svcreg.discovery.http.serving import CALLER, Serving, add_cors
from svcreg.discovery.index import Change, Entry, Index, dumps, render
from svcreg.discovery.routing import Subscription
from svcreg.members.client import MemberClient, MemberUnreachable
from svcreg.telemetry.metrics import Metrics

logger = logging.getLogger(__name__)
KEEPALIVE_SECONDS = 15.0
REAUTHORIZE_SECONDS = 10.0  # how often an open watch asks again who may see what


REPORTS_PER_SECOND = 5.0
# Marks a request one member of the prober group sent on to another: answered where it lands.
FORWARDED_HEADER = "X-Svcreg-Forwarded"


@dataclass
class Discovery:
    index: Index
    auth: Authorizer
    metrics: Metrics
    # Probing (the operator) or Relaying (a discovery-only replica): see roles.py.
    role: Role = field(default_factory=Relaying)
    cors_origins: tuple[str, ...] = ()
    max_wait: float = query_mod.MAX_WAIT_SECONDS
    # The CA an https operator or member URL is verified against (None: the system's trust
    # store).
    operator_ca_file: str | None = None
    # The registration API writes as the calling ServiceAccount (see registrations.py).
    impersonate: bool = True
    # Bounds on long-lived answers, in all and per identity (by default a tenth of the whole,
    # so it takes ten identities to fill them); over them a caller gets 429 with Retry-After.
    max_watchers: int = 1000
    max_long_polls: int = 1000
    max_watchers_per_identity: int | None = None
    max_long_polls_per_identity: int | None = None
    # Requests per second each authenticated identity may make (a burst of twice that); 0: off.
    rate_limit: float = 0.0
    # Discovery replicas whose part of GET /v1/consumers this process merges into its own.
    consumer_replicas: Replicas | None = None
    # Who asked for which service or capability (GET /v1/consumers), over this window.
    consumer_window: float = 24 * 3600.0

    def __post_init__(self) -> None:
        # (query, readable namespaces, index) -> (body, etag, headers): identical long polls woken by
        # the same change share one evaluation.
        self.answers = AnswerCache()
        self.watchers = Slots(self.max_watchers, self.max_watchers_per_identity or self.max_watchers // 10)
        self.long_polls = Slots(
            self.max_long_polls, self.max_long_polls_per_identity or self.max_long_polls // 10
        )
        self.metrics.watchers.set_function(lambda: self.watchers.held)
        self.metrics.long_polls.set_function(lambda: self.long_polls.held)
        # The one pool to the operator and the members (writes relayed, last probes asked).
        group = self.role.group if isinstance(self.role, Probing) else None
        self.members = MemberClient(
            ca_file=self.operator_ca_file, server_name=group.server_name if group is not None else None
        )
        self.rates = TokenBuckets(self.rate_limit, 2 * self.rate_limit) if self.rate_limit > 0 else None
        self.consumer_log = ConsumerLog(window=self.consumer_window)
        # Reports per identity: a burst of failures from one caller is no more evidence than one.
        self.report_rates = TokenBuckets(REPORTS_PER_SECOND, 2 * REPORTS_PER_SECOND)

    def admit(self, request: web.Request, identity: Identity) -> None:
        """Note who is calling (for the access log) and spend one of its requests: 429 with
        Retry-After once the identity has used its rate, whoever else is calling."""
        request[CALLER] = identity.username
        self.admit_identity(identity)

    def admit_identity(self, identity: Identity) -> None:
        """Spend one of ``identity``'s requests, or TooManyRequests with Retry-After."""
        if self.rates is not None:
            wait = self.rates.take(identity.username)
            if wait:
                raise TooManyRequests(
                    "TooManyRequests", f"{identity.username} is over its request rate", retry_after=wait
                )

    @property
    def probing(self) -> Probing | None:
        """This process's prober side, or None on a discovery-only replica."""
        return self.role if isinstance(self.role, Probing) else None

    @property
    def operator_url(self) -> str | None:
        """Where a replica relays writes and last-probe questions (None: it refuses them)."""
        return self.role.operator_url if isinstance(self.role, Relaying) else None

    def last_probes(self, key: Key) -> list[dict[str, Any]] | None:
        """The prober's last probes of ``key`` when this process probes, else None."""
        return self.role.last_probes(key) if isinstance(self.role, Probing) else None

    def owner_of(self, request: web.Request, key: Key) -> str | None:
        """The prober-group member to send what concerns ``key`` on to, or None: this process
        answers (it owns it, there is no group, or the request was sent on already)."""
        group = self.role.group if isinstance(self.role, Probing) else None
        if group is None or request.headers.get(FORWARDED_HEADER):
            return None
        return group.owner_url(key)

    async def forward(self, request: web.Request, base_url: str | None = None) -> web.Response:
        """Relay a write (heartbeat, registration, report) to the operator, or to ``base_url``
        (the member that owns it), with the caller's own token, so it is authorized there
        exactly as if it had been sent there."""
        base_url = base_url or self.operator_url
        assert base_url is not None
        headers = {"Authorization": request.headers.get("Authorization", "")}
        if request.content_type:
            headers["Content-Type"] = request.content_type
        if base_url != self.operator_url:
            headers[FORWARDED_HEADER] = "1"
        body = await request.read() if request.can_read_body else None
        url = base_url.rstrip("/") + request.rel_url.path_qs
        try:
            upstream = await self.members.call(request.method, url, headers=headers, body=body)
        except MemberUnreachable as error:
            logger.warning(
                "forwarding %s %s to %s failed: %s", request.method, request.path, url, error.reason
            )
            raise Unavailable("OperatorUnavailable", "the operator could not be reached; retry") from None
        return web.Response(status=upstream.status, body=upstream.body, content_type="application/json")

    async def operator_probes(
        self, request: web.Request, key: Key, base_url: str | None = None
    ) -> list[dict[str, Any]] | None:
        """The prober's last probes of ``key``, asked of the operator (or of ``base_url``, the
        member that owns it) with the caller's own token (so it authorizes exactly as here),
        within 2 s; None when it cannot say."""
        base_url = base_url or self.operator_url
        assert base_url is not None
        url = f"{base_url.rstrip('/')}/v1/services/{key[0]}/{key[1]}"
        headers = {"Authorization": request.headers.get("Authorization", "")}
        if base_url != self.operator_url:
            headers[FORWARDED_HEADER] = "1"
        try:
            answer = await self.members.call("GET", url, headers=headers, deadline=2)
        except MemberUnreachable:
            return None
        body = answer.json() if answer.status == 200 else None
        found = body.get("lastProbes") if isinstance(body, dict) else None
        return found if isinstance(found, list) else None

    async def elsewhere(self, request: web.Request, code: str, message: str) -> web.Response:
        """A write this process may not make (a discovery-only replica): relayed to the operator
        when ``operator_url`` is set, else a 503 saying where to send it."""
        if self.operator_url:
            return await self.forward(request)
        raise Unavailable(code, message)

    async def close(self) -> None:
        await self.members.close()
        if self.consumer_replicas is not None:
            await self.consumer_replicas.close()


DISCOVERY_KEY = web.AppKey("discovery", Discovery)


async def preflight(request: web.Request) -> web.Response:
    discovery = request.app[DISCOVERY_KEY]
    if not discovery.cors_origins:
        raise MethodNotAllowed("MethodNotAllowed", "CORS is off; start svcreg with --cors-origin to allow it")
    return web.Response(status=204)


# A query parsed for this request and not yet remembered: kept once the caller is authenticated.
_UNREMEMBERED = web.RequestKey("unremembered_query", tuple)


def _query(request: web.Request, route: str, capability: str | None = None) -> query_mod.Query:
    """The request's query, bounded in length and parsed: from the parsed-query memo when this
    raw query string was seen before, else parsed here and remembered by ``_caller`` once the
    caller is authenticated."""
    raw = request.rel_url.raw_query_string
    if len(raw) > query_mod.MAX_QUERY_LENGTH:
        raise BadParameter("query", f"longer than {query_mod.MAX_QUERY_LENGTH} characters")
    query = query_mod.remembered(raw, route, capability)
    if query is None:
        query = query_mod.parse(request.query, route, capability)
        request[_UNREMEMBERED] = (raw, route, capability, query)
    return query


def _remember_query(request: web.Request) -> None:
    """Remember the query ``_query`` parsed, now that the caller is authenticated."""
    parsed = request.pop(_UNREMEMBERED, None)
    if parsed is not None:
        query_mod.remember(*parsed)


async def _caller(request: web.Request, query: query_mod.Query) -> tuple[Identity, frozenset[str] | None]:
    """Authenticate, then work out which namespaces the answer may include."""
    discovery = request.app[DISCOVERY_KEY]
    authorization = request.headers.get("Authorization")
    if query.namespace:
        identity = await discovery.auth.identify(authorization, request.remote)
        _remember_query(request)
        discovery.admit(request, identity)
        await discovery.auth.require(identity, "list", query.namespace)
        return identity, frozenset({query.namespace})
    index = discovery.index

    def admit(identity: Identity) -> None:  # before any access review: over its rate costs none
        _remember_query(request)
        discovery.admit(request, identity)

    identity, readable = await discovery.auth.reader(
        authorization, index.by_namespace.keys(), index.namespaces_version, request.remote, admit=admit
    )
    if readable is not None and not readable:
        raise Forbidden(
            "Forbidden",
            f"{identity.username} may not list serviceregistrations in any namespace that has them",
        )
    return identity, readable


async def _long_poll(
    request: web.Request, query: query_mod.Query, identity: Identity, readable: frozenset[str] | None
) -> frozenset[str] | None:
    """Hold the request until the index passes ``query.index`` (or the wait ends), then
    return what the caller may read *now*: rights revoked during the wait are not used."""
    if query.index is None or not query.wait:
        return readable
    discovery = request.app[DISCOVERY_KEY]
    if discovery.index.router.changed_since(query, query.index):
        # Something this query may concern changed after the caller's index: answer now. (A
        # change elsewhere moves the index too, but is no reason to answer: the poll waits.)
        return readable
    if not discovery.long_polls.take(identity.username):
        raise TooManyRequests("TooManyLongPolls", "too many long polls are waiting; retry", retry_after=1)
    wait = min(query.wait, discovery.max_wait)
    # Woken only by a change this query may concern (its route), not by every change.
    subscription = discovery.index.router.subscribe(query)
    try:
        # Jitter spreads the wake-ups of many watchers whose waits were set at the same moment.
        await subscription.wait(wait + random.uniform(0, wait / 16))
    finally:
        discovery.index.router.unsubscribe(subscription)
        discovery.long_polls.give(identity.username)
    _, readable = await _caller(request, query)
    return readable


def answer_for(
    discovery: Discovery,
    query: query_mod.Query,
    readable: frozenset[str] | None,
    build: Callable[[], Any],
) -> Answer:
    """The rendered answer to ``query`` for a caller who may read ``readable``: from the cache
    while the index and policies are unchanged, else built once and remembered."""
    index = discovery.index
    key = (query.canonical, readable, index.index, index.policy_version)
    cached = discovery.answers.get(key)
    if cached is None:
        payload = build()
        content = payload if isinstance(payload, bytes) else dumps(payload)
        etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
        # {"index": N, ...the payload's members}: the payload is a non-empty JSON object.
        body = b'{"index":%d,%s' % (index.index, content[1:])
        # The headers are built once per answer too: a repeated lookup only copies them.
        headers = CIMultiDict(
            {
                "ETag": etag,
                "X-Svcreg-Index": str(index.index),
                "Cache-Control": "no-cache",
                "Content-Type": "application/json",
            }
        )
        cached = Answer(body, etag, headers)
        discovery.answers.put(key, cached)
    return cached


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (the caller holds this answer already)."""
    if not if_none_match:
        return False
    return etag in [t.strip() for t in if_none_match.split(",")]


def _answer(
    request: web.Request,
    query: query_mod.Query,
    readable: frozenset[str] | None,
    build: Callable[[], Any],
) -> web.Response:
    discovery = request.app[DISCOVERY_KEY]
    cached = answer_for(discovery, query, readable, build)
    body, etag, headers = cached.body, cached.etag, cached.headers
    stale = discovery.index.staleness()
    if stale is not None:
        # Old data is never served silently: the answer says since when the watch is down.
        headers = headers.copy()
        headers["X-Svcreg-Stale-Seconds"] = f"{stale:.0f}"
    if not_modified(request.headers.get("If-None-Match"), etag):
        unchanged = headers.copy()
        del unchanged["Content-Type"]
        return web.Response(status=304, headers=unchanged)
    return web.Response(body=body, headers=headers)


def _note_consumer(request: web.Request, query: query_mod.Query, readable: frozenset[str] | None) -> None:
    """Remember who asked for which service or capability (for GET /v1/consumers)."""
    caller = request.get(CALLER)
    if caller is not None:
        note_consumer(request.app[DISCOVERY_KEY], caller, query, readable)


def note_consumer(
    discovery: Discovery, caller: str, query: query_mod.Query, readable: frozenset[str] | None
) -> None:
    """Note one query of ``caller``'s, with the namespaces it could reach (``readable``)."""
    log = discovery.consumer_log
    if query.service:
        log.record(caller, ("service", query.service), readable)
    for capability in query.capabilities:
        log.record(caller, ("capability", capability), readable)


async def _listing(request: web.Request, route: str) -> tuple[query_mod.Query, frozenset[str] | None, Index]:
    """What every list route starts with: the parsed query, the namespaces the caller may read
    (after any long poll, as they are then), and the index to answer from."""
    query = _query(request, route)
    identity, readable = await _caller(request, query)
    _note_consumer(request, query, readable)
    readable = await _long_poll(request, query, identity, readable)
    return query, readable, request.app[DISCOVERY_KEY].index


async def services(request: web.Request) -> web.Response:
    query = _query(request, "services")
    if query.select_one:
        # One instance of the matching ones, by weight: seed 001's get_service_url(name).
        _, readable = await _caller(request, query)
        _note_consumer(request, query, readable)
        index = request.app[DISCOVERY_KEY].index
        return _selected(index, query, readable, "no served instance with weight above 0 matches")
    query, readable, index = await _listing(request, "services")
    return _answer(request, query, readable, lambda: services_payload(index, query, readable))


def services_payload(index: Index, query: query_mod.Query, readable: frozenset[str] | None) -> bytes:
    """The body of ``GET /v1/services`` (before ``index`` is added)."""
    items = index.candidates(query, readable)
    return b'{"count":%d,"items":%s}' % (len(items), render(items))


async def catalog(request: web.Request) -> web.Response:
    """Every logical service the caller may read: its tags, versions and instances by health
    (Consul's catalog; seed 001's discover_all_services)."""
    query, readable, index = await _listing(request, "catalog")

    def build() -> dict[str, Any]:
        services: dict[str, dict[str, Any]] = {}
        for item in index.candidates(query_mod.Query(namespace=query.namespace, health=None), readable):
            entry = services.setdefault(
                item.service,
                {"tags": set(), "versions": set(), "namespaces": set(), "instances": collections.Counter()},
            )
            entry["tags"] |= item.tags
            if item.version:
                entry["versions"].add(item.version)
            entry["namespaces"].add(item.namespace)
            entry["instances"][item.health] += 1
        listed = [
            {
                "service": name,
                "tags": sorted(e["tags"]),
                "versions": sorted(e["versions"]),
                "namespaces": sorted(e["namespaces"]),
                "instances": dict(sorted(e["instances"].items())),
                "total": sum(e["instances"].values()),
            }
            for name, e in sorted(services.items())
        ]
        return {"count": len(listed), "services": listed}

    return _answer(request, query, readable, build)


async def explain(request: web.Request) -> web.Response:
    """Why each candidate is (not) in the answer to the same query (discovery/explain.py);
    authorized like that query: namespaces the caller may not read are counted, never named."""
    query = _query(request, "explain")
    _, readable = await _caller(request, query)
    discovery = request.app[DISCOVERY_KEY]
    body = explain_mod.explain(query, discovery.index, readable, discovery.last_probes)
    return web.Response(body=dumps({"index": discovery.index.index, **body}), content_type="application/json")


async def consumers(request: web.Request) -> web.Response:
    """Who asked for a service or capability in the window. Only a caller who may read every
    namespace holding a registration of it may ask: its owners, not its other consumers."""
    query = _query(request, "consumers")
    discovery = request.app[DISCOVERY_KEY]
    identity, readable = await _caller(request, query)  # who asks comes first: 401 before 400
    targets = [("service", query.service)] if query.service else []
    targets += [("capability", c) for c in query.capabilities]
    if len(targets) != 1:
        raise BadParameter("service", "give exactly one of service= and capability=")
    kind, name = targets[0]
    index = discovery.index
    keys = index.by_service.get(name, set()) if kind == "service" else index.by_capability.get(name, set())
    holding = {key[0] for key in keys}
    if not holding or (readable is not None and not holding <= readable):
        raise Forbidden(
            "Forbidden",
            f"{identity.username} may not read every registration of {kind} {name}, so not who asks for it",
        )
    scope = request.query.get("scope", "all")
    if scope not in ("all", "local"):
        raise BadParameter("scope", "all or local")
    found = [
        {
            "identity": who,
            "requests": use.requests,
            "firstSeen": _rfc3339(use.first_seen),
            "lastSeen": _rfc3339(use.last_seen),
        }
        for who, use in discovery.consumer_log.consumers((kind, name), frozenset(holding))
    ]
    body: dict[str, Any] = {
        "index": index.index,
        "kind": kind,
        "name": name,
        "windowSeconds": discovery.consumer_log.window,
    }
    if scope == "all" and discovery.consumer_replicas is not None:
        replicas = await discovery.consumer_replicas.consumers(
            request.headers.get("Authorization", ""), {kind: name}
        )
        body["consumers"] = consumers_mod.merge([found, *replicas.consumers])
        body["replicasAsked"], body["replicasAnswered"] = replicas.asked, replicas.answered
    else:
        body["consumers"] = found
    return web.Response(body=dumps(body), content_type="application/json")


def _rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


async def one_service(request: web.Request) -> web.Response:
    _query(request, "one")
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    discovery = request.app[DISCOVERY_KEY]
    identity = await discovery.auth.identify(request.headers.get("Authorization"), request.remote)
    discovery.admit(request, identity)
    await discovery.auth.require(identity, "list", namespace)
    item = discovery.index.items.get((namespace, name))
    if item is None:
        raise NotFound("NotFound", f"no registration {namespace}/{name}")
    answer: dict[str, Any] = {"index": discovery.index.index, **item.view}
    probes = discovery.last_probes((namespace, name))
    owner = discovery.owner_of(request, (namespace, name))
    if probes is None and owner is not None:
        probes = await discovery.operator_probes(request, (namespace, name), owner)
    elif probes is None and discovery.operator_url:
        probes = await discovery.operator_probes(request, (namespace, name))
    if probes is not None:
        answer["lastProbes"] = probes
    return web.Response(body=dumps(answer), content_type="application/json")


async def capabilities(request: web.Request) -> web.Response:
    query, readable, index = await _listing(request, "capabilities")

    def build() -> dict[str, Any]:
        summary: dict[str, dict[str, Any]] = {}
        for item in index.candidates(query_mod.Query(namespace=query.namespace, health=None), readable):
            for name, version, _ in item.capabilities:
                entry = summary.setdefault(
                    name, {"name": name, "versions": set(), "instances": collections.Counter()}
                )
                if version:
                    entry["versions"].add(version)
                entry["instances"][item.health] += 1
        listed = [
            {
                "name": e["name"],
                "versions": sorted(e["versions"]),
                "instances": dict(sorted(e["instances"].items())),
                "total": sum(e["instances"].values()),
            }
            for e in sorted(summary.values(), key=lambda e: e["name"])
        ]
        return {"count": len(listed), "capabilities": listed}

    return _answer(request, query, readable, build)


def pick(items: list[Entry], rng: random.Random | None = None) -> Entry | None:
    """One instance chosen by weight; weight 0 is never picked."""
    weighted = [i for i in items if i.weight > 0]
    if not weighted:
        return None
    return (rng or random).choices(weighted, weights=[i.weight for i in weighted])[0]


def _selected(
    index: Index, query: query_mod.Query, readable: frozenset[str] | None, missing: str, **extra: str
) -> web.Response:
    """``select=one``: one matching instance picked by weight, or 404 ``NoEntry`` saying ``missing``."""
    chosen = pick(index.candidates(query, readable))
    if chosen is None:
        raise NotFound("NoEntry", missing)
    head = dumps({"index": index.index, **extra})
    return web.Response(
        body=head[:-1] + b',"selected":' + chosen.document + b"}", content_type="application/json"
    )


async def capability(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    query = _query(request, "capability", capability=name)
    identity, readable = await _caller(request, query)
    _note_consumer(request, query, readable)
    index = request.app[DISCOVERY_KEY].index
    if query.select_one:
        missing = f"no instance with weight above 0 provides capability {name!r}"
        return _selected(index, query, readable, missing, capability=name)
    readable = await _long_poll(request, query, identity, readable)
    return _answer(request, query, readable, lambda: capability_payload(index, query, readable, name))


def capability_payload(
    index: Index, query: query_mod.Query, readable: frozenset[str] | None, name: str
) -> bytes:
    """The body of ``GET /v1/capabilities/{name}`` (before ``index`` is added)."""
    items = index.candidates(query, readable)
    return b'{"capability":%s,"count":%d,"items":%s}' % (dumps(name), len(items), render(items))


async def stats(request: web.Request) -> web.Response:
    query = _query(request, "stats")
    _, readable = await _caller(request, query)
    index = request.app[DISCOVERY_KEY].index

    def build() -> dict[str, Any]:
        items = index.candidates(query_mod.Query(namespace=query.namespace, health=None), readable)
        by_health = collections.Counter(i.health for i in items)
        per_service: dict[str, set[str]] = collections.defaultdict(set)
        every: set[str] = set()
        for item in items:
            names = {n for n, _, _ in item.capabilities}
            per_service[item.service] |= names
            every |= names
        return {
            "total": len(items),
            "byHealth": {h.value: by_health.get(h.value, 0) for h in Health},
            "services": len(per_service),
            "namespaces": len({i.namespace for i in items}),
            "uniqueCapabilities": len(every),
            "capabilitiesPerService": {s: len(c) for s, c in sorted(per_service.items())},
            "averageCapabilitiesPerService": (
                round(sum(len(c) for c in per_service.values()) / len(per_service), 2) if per_service else 0.0
            ),
        }

    return _answer(request, query, readable, build)


def _event(change: Change, kind: str) -> bytes:
    encoded = change.encoded.get(kind)
    if encoded is None:
        # Before and after: a health change reads as previousHealth -> registration.health.
        previous = b"" if change.previous is None else b',"previousHealth":' + dumps(change.previous.health)
        data = b'{"type":%s,"index":%d,"registration":%s%s}' % (
            dumps(kind),
            change.index,
            change.instance.document,
            previous,
        )
        encoded = change.encoded[kind] = b"id: %d\nevent: %s\ndata: %s\n\n" % (
            change.index,
            kind.encode(),
            data,
        )
    return encoded


async def watch(request: web.Request) -> web.StreamResponse:
    query = _query(request, "watch")
    if "health" not in request.query:
        query = dataclasses.replace(query, health=None)  # a watch sees every transition by default
    identity, readable = await _caller(request, query)
    discovery = request.app[DISCOVERY_KEY]
    holder = identity.username  # the slot is given back by the identity that took it
    if not discovery.watchers.take(holder):
        raise TooManyRequests("TooManyWatchers", "too many watches are open; retry", retry_after=5)
    try:
        return await _watch_stream(request, query, identity, readable)
    finally:
        discovery.watchers.give(holder)


async def _watch_stream(
    request: web.Request, query: query_mod.Query, identity: Identity, readable: frozenset[str] | None
) -> web.StreamResponse:
    """The stream of one watch, from its first write to its end (its slot is held by ``watch``)."""
    discovery = request.app[DISCOVERY_KEY]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    add_cors(request, response, discovery.cors_origins)
    await response.prepare(request)
    await response.write(f": svcreg watch from index {discovery.index.index}\nretry: 2000\n\n".encode())
    stream = _WatchStream(request, response, query, identity, readable)
    # Subscribed before the history is read, with no await between: every later change is in
    # the subscription, every earlier one in the history.
    subscription = discovery.index.router.subscribe(query)
    try:
        await stream.run(subscription)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        discovery.index.router.unsubscribe(subscription)
    return response


class _WatchStream:
    """One subscriber's events: caught up from the history, then live, re-authorized every
    ``REAUTHORIZE_SECONDS`` and ended when its token expires or its rights are revoked."""

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        query: query_mod.Query,
        identity: Identity,
        readable: frozenset[str] | None,
    ) -> None:
        self.request, self.response, self.query = request, response, query
        self.identity, self.readable = identity, readable
        self.discovery = request.app[DISCOVERY_KEY]
        self.expires = token_expiry(request.headers.get("Authorization"))

    async def run(self, subscription: Subscription[Change]) -> None:
        index = self.discovery.index
        last = self.request.headers.get("Last-Event-ID")
        # None: a resume point unknown here (another process's), the client must list again.
        position = index.resume_point(last) if last is not None else index.index
        caught_up = None if position is None else index.changes_since(position)
        if position is None or caught_up is None:  # unknown, or older than the kept history
            position = await self.reset()
        else:
            position = await self.send(caught_up, position)
        checked = time.monotonic()
        while True:
            if self.expires is not None and time.time() >= self.expires:
                return  # the token the stream was opened with has expired
            if time.monotonic() - checked >= REAUTHORIZE_SECONDS:
                # Rights can be revoked while a stream is open: ask again (cached, so this costs
                # a lookup until the reviews behind it expire) and end the stream on a refusal.
                try:
                    self.identity, self.readable = await _caller(self.request, self.query)
                except Refusal:
                    return
                checked = time.monotonic()
            if subscription.overflowed:
                subscription.take()
                subscription.overflowed = False
                position = await self.reset()
                continue
            position = await self.send(subscription.take(), position)
            if not await subscription.wait(self.keepalive()):
                await self.response.write(b": keep-alive\n\n")

    def keepalive(self) -> float:
        """How long to wait for a change before a keep-alive: never past the token's expiry."""
        if self.expires is None:
            return KEEPALIVE_SECONDS
        return max(0.0, min(KEEPALIVE_SECONDS, self.expires - time.time()))

    async def event_kind(self, change: Change) -> str | None:
        """What this subscriber hears of ``change``: its kind, ``deleted`` when an update took
        the item out of the subscriber's filter, or nothing."""
        item = change.instance
        # A namespace that appeared after the watch began: ask (cached) rather than assume.
        if (
            self.readable is not None
            and item.namespace not in self.readable
            and not await self.discovery.auth.allowed(self.identity, "list", item.namespace)
        ):
            return None
        if self.query.selects(item):
            return change.kind
        if change.kind != "deleted" and change.previous is not None and self.query.selects(change.previous):
            return "deleted"
        return None

    async def reset(self) -> int:
        """Tell the client to list again (a resume point unknown here, or a reader that fell
        too far behind), and go on from now."""
        now = self.discovery.index.index
        data = json.dumps({"type": "reset", "index": now})
        await self.response.write(f"id: {now}\nevent: reset\ndata: {data}\n\n".encode())
        return now

    async def send(self, changes: list[Change], after: int) -> int:
        """Send what this subscriber hears of ``changes``, in one write (one syscall for a
        burst, not one per event)."""
        chunks, entered = [], []
        for change in changes:
            if change.index <= after:
                continue  # already sent while catching up from the history
            kind = await self.event_kind(change)
            if kind is not None:
                chunks.append(_event(change, kind))
                entered.append(change.at)
            after = change.index
        if chunks:
            await self.response.write(b"".join(chunks))
            written = time.monotonic()
            for at in entered:
                self.discovery.metrics.watch_delivery.observe(written - at)
        return after


async def _close(app: web.Application) -> None:
    await app[DISCOVERY_KEY].close()


def add_routes(app: web.Application, discovery: Discovery, serving: Serving) -> None:
    app[DISCOVERY_KEY] = discovery
    app.on_cleanup.append(_close)
    serving.add(app, "GET", "/v1/services", services)
    serving.add(app, "GET", "/v1/services/{namespace}/{name}", one_service)
    serving.add(app, "GET", "/v1/capabilities", capabilities)
    serving.add(app, "GET", "/v1/capabilities/{name}", capability)
    serving.add(app, "GET", "/v1/stats", stats)
    serving.add(app, "GET", "/v1/catalog", catalog)
    serving.add(app, "GET", "/v1/explain", explain)
    serving.add(app, "GET", "/v1/consumers", consumers)
    serving.add(app, "GET", "/v1/watch", watch)
