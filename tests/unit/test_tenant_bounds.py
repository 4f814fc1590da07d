"""No tenant can stall, poison or starve discovery (issue 28): each test is named for the
behaviour that fails without its fix. Costs are counted (API calls, slots), never timed."""

from __future__ import annotations

import asyncio
import base64
import json
import json as _json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from svcreg.core.refusals import Refusal, TooManyRequests
from svcreg.discovery.consumers import ConsumerLog
from svcreg.discovery.http.app import build_app, runner
from svcreg.discovery.http.auth import (
    CREDENTIAL_ID,
    DENIALS_RECHECKED,
    REVIEWS_PER_USER,
    Authorizer,
    Identity,
)
from svcreg.discovery.http.cache import RefreshAheadCache
from svcreg.discovery.http.discovery import Discovery
from svcreg.discovery.http.front import HEAD_SECONDS, KEEPALIVE_SECONDS, Front
from svcreg.discovery.http.ratelimit import TokenBuckets
from svcreg.discovery.index import Index
from svcreg.discovery.informer import QUIET_SECONDS, Informer
from svcreg.discovery.query import Query, canonical, parse
from svcreg.kube.api import Response
from svcreg.kube.errors import Unreachable
from svcreg.operator.outliers import OutlierDetector, OutlierSettings
from svcreg.operator.policies import PolicyState, desired
from svcreg.telemetry.metrics import Metrics
from tests.unit.test_discovery_units import FakeApi, body

# -- finding 3: canonical keys -------------------------------------------------------------------


def _meaning(query: Query) -> tuple[object, ...]:
    """What a query asks, independently of how canonical() spells it."""
    spec = lambda value: None if value is None else str(value.clause)  # noqa: E731
    return (
        query.service,
        query.service_glob,
        query.namespace,
        frozenset(query.capabilities),
        frozenset(query.tags),
        spec(query.version),
        spec(query.capability_version),
        query.health,
        frozenset(query.meta),
        query.select_one,
        query.verified,
    )


def test_metadata_filters_that_spell_alike_when_joined_have_different_keys() -> None:
    one = parse(MultiDict([("meta.region", "eu&tier=gold")]), "services")
    two = parse(MultiDict([("meta.region", "eu"), ("meta.tier", "gold")]), "services")
    assert one.canonical != two.canonical
    tag = parse(MultiDict([("tag", "a,b")]), "services")
    assert tag.canonical == parse(MultiDict([("tag", "b"), ("tag", "a")]), "services").canonical


_WORDS = st.sampled_from(["a", "b", "eu", "x=y", "a&b", "a,b", "&", "=", ",", '"', "\\", "[", "]", ""])
_NAMES = st.sampled_from(
    ["service", "tag", "capability", "health", "namespace", "meta.k", "meta.k&x", "meta.x"]
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(_NAMES, st.lists(_WORDS, min_size=1, max_size=3).map("".join)), max_size=5),
    st.lists(st.tuples(_NAMES, st.lists(_WORDS, min_size=1, max_size=3).map("".join)), max_size=5),
)
def test_no_two_different_parsed_queries_share_a_key(first: list[Any], second: list[Any]) -> None:
    parsed = []
    for params in (first, second):
        try:
            parsed.append(parse(MultiDict(params), "services"))
        except Exception:  # a 400: never cached
            return
    a, b = parsed
    if canonical(a, "services") == canonical(b, "services"):
        assert _meaning(a) == _meaning(b)
    else:
        assert _meaning(a) != _meaning(b)


# -- a discovery served by aiohttp (and the front) over a fake API -----------------------------


class Served:
    def __init__(self, discovery: Discovery, api: FakeApi, port: int, front: Front) -> None:
        self.discovery, self.api, self.port, self.front = discovery, api, port, front

    async def get(self, target: str, token: str | None = "good") -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        writer.write(f"GET {target} HTTP/1.1\r\nHost: svcreg\r\n{auth}Connection: close\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        status = int(answer.split(b" ", 2)[1])
        return status, answer.partition(b"\r\n\r\n")[2]


@asynccontextmanager
async def served(
    api: FakeApi | None = None,
    clock: list[float] | None = None,
    max_connections: int = 100,
    keepalive: float = 75.0,
    **options: Any,
) -> AsyncIterator[Served]:
    index = Index()
    index.observe("ADDED", body("r1", capabilities=["greet"], service="web", metadata={"region": "eu"}))
    index.synced = True
    metrics, api = Metrics(), api or FakeApi()
    auth = Authorizer(api, metrics=metrics)  # type: ignore[arg-type]
    discovery = Discovery(index, auth, metrics, **options)
    app = runner(
        build_app(metrics, lambda: (True, {}), discovery, registration_api=False), keepalive=keepalive
    )
    await app.setup()
    assert app.server is not None
    now = clock or [0.0]
    front = Front(discovery, app.server, clock=lambda: now[0], max_connections=max_connections)
    server = await asyncio.get_running_loop().create_server(front.protocol, "127.0.0.1", 0)
    try:
        yield Served(discovery, api, server.sockets[0].getsockname()[1], front)
    finally:
        server.close()
        front.close()
        await app.cleanup()


# -- finding 4: the parsed-query memo ------------------------------------------------------------


async def test_the_query_memo_is_keyed_by_the_raw_query_and_filled_only_after_authentication() -> None:
    from svcreg.discovery import query as query_mod  # noqa: PLC0415

    query_mod._PARSED.clear()
    async with served() as s:
        # Unauthenticated requests parse their query (a 400 still names the parameter) but
        # never fill the memo: 1,100 of them leave it empty.
        for n in range(1100):
            status, _ = await s.get(f"/v1/services?meta.region=eu{n}", token="bogus")
            assert status in (401, 429)
        assert not query_mod._PARSED
        # Two raw spellings that decode alike in one step are two keys, each its own meaning.
        await s.get("/v1/services?meta.region=eu%2526tier")
        await s.get("/v1/services?meta.region=eu%26tier")
        kept = {raw: q.meta for (_, _, raw), q in query_mod._PARSED.items()}
        assert kept == {
            "meta.region=eu%2526tier": (("region", "eu%26tier"),),
            "meta.region=eu%26tier": (("region", "eu&tier"),),
        }


# -- findings 2, 7, 8, 10: what a caller costs the API server ------------------------------------


def jwt(subject: str, jti: str, ok: bool = True) -> str:
    """A token shaped like a ServiceAccount JWT; TokensApi accepts it when ``ok``."""
    payload = base64.urlsafe_b64encode(json.dumps({"sub": subject, "jti": jti, "ok": ok}).encode())
    return f"eyJhbGciOiJSUzI1NiJ9.{payload.decode().rstrip('=')}.signature"


class TokensApi(FakeApi):
    """TokenReview accepts ``jwt(..., ok=True)`` tokens as their subject, each with its own
    credential id (as the API server does); list is granted in ``granted``. ``gate``, when set,
    holds every SubjectAccessReview until it is opened."""

    def __init__(self, granted: set[str]) -> None:
        super().__init__()
        self.granted = granted
        self.gate: asyncio.Event | None = None
        self.in_flight = self.most_in_flight = 0

    async def request(self, method: str, path: str, *, json: Any = None, **kwargs: Any) -> Response:
        kind = path.rsplit("/", 1)[-1]
        self.calls.append(kind)
        if kind == "tokenreviews":
            token = json["spec"]["token"]
            claims = _claims(token)
            if not claims.get("ok"):
                return Response(201, b'{"status": {"authenticated": false, "error": "invalid bearer token"}}')
            user = {
                "username": claims["sub"],
                "uid": "u-1",
                "groups": ["system:serviceaccounts"],
                "extra": {CREDENTIAL_ID: [f"JTI={claims['jti']}"]},
            }
            return Response(201, _json.dumps({"status": {"authenticated": True, "user": user}}).encode())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            namespace = json["spec"]["resourceAttributes"].get("namespace", "")
            allowed = namespace in self.granted
            return Response(201, _json.dumps({"status": {"allowed": allowed}}).encode())
        finally:
            self.in_flight -= 1


def _claims(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        found: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return found
    except (IndexError, ValueError):
        return {}


async def _settle() -> None:
    for _ in range(20):  # let background refreshes run
        await asyncio.sleep(0)


async def _steady_reviews(namespaces: int) -> int:
    """SubjectAccessReviews a steady caller that may read 1 of ``namespaces`` costs in ten
    minutes of one request a second, after its first."""
    api = TokensApi({"ns0"})
    clock = [0.0]
    auth = Authorizer(api, clock=lambda: clock[0])  # type: ignore[arg-type]
    names = [f"ns{n}" for n in range(namespaces)]
    token = f"Bearer {jwt('system:serviceaccount:a:r', 'one')}"
    assert (await auth.reader(token, names, 1))[1] == frozenset({"ns0"})
    first = api.calls.count("subjectaccessreviews")
    for second in range(1, 601):
        clock[0] = float(second)
        assert (await auth.reader(token, names, 1))[1] == frozenset({"ns0"})
        await _settle()
    return api.calls.count("subjectaccessreviews") - first


async def test_a_steady_readers_reviews_do_not_grow_with_the_namespaces_it_may_not_read() -> None:
    medium, large = await _steady_reviews(101), await _steady_reviews(1001)
    # Before: each denial lived 5 s and bounded the memo, so 201 namespaces cost ~50 reviews a
    # second. Now 1,000 denied namespaces cost what 100 do: the rechecks are bounded per rebuild.
    assert large <= medium + DENIALS_RECHECKED
    assert large < 1000  # fewer than asking each denied namespace once again in ten minutes


async def test_a_grant_in_a_denied_namespace_is_noticed_within_the_bounded_rechecks() -> None:
    api = TokensApi({"ns0"})
    clock = [0.0]
    auth = Authorizer(api, clock=lambda: clock[0])  # type: ignore[arg-type]
    names = [f"ns{n}" for n in range(41)]
    token = f"Bearer {jwt('system:serviceaccount:a:r', 'one')}"
    await auth.reader(token, names, 1)
    api.granted.add("ns40")
    seen = set()
    for second in range(1, 600):
        clock[0] = float(second)
        seen = set((await auth.reader(token, names, 1))[1] or ())
        await _settle()
        if "ns40" in seen:
            break
    assert "ns40" in seen


async def test_the_rate_is_charged_before_the_reviews_of_fresh_tokens() -> None:
    """20 fresh tokens of one ServiceAccount at a rate of 1/s (a burst of 2): 18 are refused
    before any access review, and the two admitted share one set of reviews (by principal, not
    by token)."""
    api = TokensApi({"ns0"})
    auth = Authorizer(api, clock=lambda: 0.0)  # type: ignore[arg-type]
    rates = TokenBuckets(1.0, 2.0, clock=lambda: 0.0)

    def admit(identity: Any) -> None:
        if rates.take(identity.username):
            raise TooManyRequests("TooManyRequests", "over its rate")

    names = [f"ns{n}" for n in range(201)]
    refused = 0
    for n in range(20):
        try:
            await auth.reader(f"Bearer {jwt('system:serviceaccount:a:r', str(n))}", names, 1, admit=admit)
        except Refusal as error:
            assert error.status == 429
            refused += 1
    assert refused == 18
    assert api.calls.count("tokenreviews") == 20
    assert api.calls.count("subjectaccessreviews") == 1 + 201  # was 20 x 202


async def test_one_users_reviews_in_flight_are_bounded_whatever_its_tokens() -> None:
    api = TokensApi({"ns0"})
    api.gate = asyncio.Event()
    auth = Authorizer(api, clock=lambda: 0.0)  # type: ignore[arg-type]
    names = [f"ns{n}" for n in range(100)]
    readers = [
        asyncio.create_task(auth.reader(f"Bearer {jwt('system:serviceaccount:a:r', str(n))}", names, 1))
        for n in range(5)
    ]
    await _settle()
    api.gate.set()
    await asyncio.gather(*readers)
    assert api.most_in_flight <= REVIEWS_PER_USER


async def test_bogus_tokens_from_an_address_never_lock_out_the_next_valid_token() -> None:
    api = TokensApi({""})
    auth = Authorizer(api, clock=lambda: 0.0)  # type: ignore[arg-type]
    limited = 0
    for n in range(150):
        try:
            await auth.identify(f"Bearer {jwt('system:serviceaccount:evil:x', str(n), ok=False)}", "10.1.1.1")
        except Refusal as error:
            limited += error.status == 429
    assert limited == 50  # its budget (a burst of 100) is spent: the flood is bounded
    # An honest caller behind the same address, with a token never seen before, is reviewed.
    honest = await auth.identify(f"Bearer {jwt('system:serviceaccount:a:r', 'fresh')}", "10.1.1.1")
    assert honest.username == "system:serviceaccount:a:r"


async def test_a_caller_that_hangs_up_during_a_shared_review_does_not_fail_the_others() -> None:
    gate = asyncio.Event()
    computed = 0

    async def review(_: str) -> tuple[bool, float]:
        nonlocal computed
        computed += 1
        await gate.wait()
        return True, 60.0

    cache = RefreshAheadCache(lambda: 0.0)
    leaving = asyncio.create_task(cache.get("key", review, "x"))
    staying = asyncio.create_task(cache.get("key", review, "x"))
    await _settle()
    leaving.cancel()
    await _settle()
    gate.set()
    assert await staying is True
    assert computed == 1
    with pytest.raises(asyncio.CancelledError):
        await leaving


# -- findings 5, 6: slots and connections --------------------------------------------------------


async def _open(port: int, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    return reader, writer


def _head(target: str, token: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: svcreg\r\nAuthorization: Bearer {token}\r\n\r\n".encode()


async def _until(condition: Any, what: str) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - the conditions are other objects' state
            await asyncio.sleep(0.01)
    assert condition(), what


async def test_one_identity_cannot_hold_every_watch_or_long_poll_slot() -> None:
    api = TokensApi({""})
    greedy, other = jwt("system:serviceaccount:a:greedy", "1"), jwt("system:serviceaccount:b:other", "2")
    async with served(api, max_watchers=10, max_long_polls=10) as s:
        held = [await _open(s.port, _head("/v1/watch", greedy))]  # its share: 10 // 10 = 1
        first = await asyncio.wait_for(held[0][0].readuntil(b"\r\n\r\n"), 10)
        held.append(await _open(s.port, _head("/v1/watch", greedy)))
        second = await asyncio.wait_for(held[1][0].readuntil(b"\r\n\r\n"), 10)
        assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 429")
        assert b"TooManyWatchers" in await held[1][0].read(4096)
        mine = await _open(s.port, _head("/v1/watch", other))
        assert (await asyncio.wait_for(mine[0].readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 200")
        assert s.discovery.watchers.held == 2
        # Long polls: the same bound per identity.
        wait = f"/v1/services?index={s.discovery.index.index}&wait=30s"
        polls = [await _open(s.port, _head(wait, greedy))]
        await _until(lambda: s.discovery.long_polls.held == 1, "the first long poll to wait")
        refused = await _open(s.port, _head(wait, greedy))
        assert (await asyncio.wait_for(refused[0].readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 429")
        polls.append(await _open(s.port, _head(wait, other)))
        await _until(lambda: s.discovery.long_polls.held == 2, "another identity's long poll to wait")
        for _, writer in [*held, mine, *polls, refused]:
            writer.close()
        await _until(lambda: s.discovery.watchers.held == 0, "the watches to give their slots back")


async def test_a_head_that_trickles_in_is_closed_at_its_deadline() -> None:
    clock = [0.0]
    async with served(clock=clock) as s:
        reader, writer = await _open(s.port, b"GET /v1/serv")
        await _until(lambda: any(c._buffer for c in s.front.connections), "the first bytes to arrive")
        for byte in b"ices HTTP/1.1\r\nHost: x\r\n":  # one byte a "minute" of the fake clock
            clock[0] += 60.0
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.01)
            if s.front.close_idle():
                break
        assert clock[0] <= 60.0 + HEAD_SECONDS + 60.0  # closed at its first sweep past the deadline
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed
        writer.close()


async def test_connections_past_the_cap_get_a_clear_refusal() -> None:
    async with served(max_connections=2) as s:
        kept = [await _open(s.port, b"") for _ in range(2)]
        await _until(lambda: s.front.open == 2, "two connections to be open")
        reader, writer = await _open(s.port, b"")
        refused = await asyncio.wait_for(reader.read(), 10)
        assert refused.startswith(b"HTTP/1.1 503") and b"TooManyConnections" in refused
        writer.close()
        kept[0][1].close()
        await _until(lambda: s.front.open == 1, "a closed connection to be counted out")
        reader, writer = await _open(s.port, _head("/v1/stats", "good"))  # handed to aiohttp
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 200")
        await _until(lambda: s.front.open == 2, "a handed-over connection to stay counted")
        writer.close()
        kept[1][1].close()
        await _until(lambda: s.front.open == 0, "every connection to be counted out")


async def test_a_connection_handed_to_aiohttp_keeps_the_fronts_keep_alive() -> None:
    assert runner(web.Application())._kwargs["keepalive_timeout"] == KEEPALIVE_SECONDS
    async with served(keepalive=0.2) as s:
        reader, writer = await _open(s.port, _head("/v1/stats", "good"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by its keep-alive
        writer.close()


# -- findings 9, 15, 16, 17: what one tenant's objects do to another's ---------------------------


def test_consumers_are_told_only_of_queries_that_could_reach_the_askers_namespaces() -> None:
    log = ConsumerLog(window=3600, clock=lambda: 0.0)
    # A's caller asks for "web" in its own namespace; B owns a service also named "web".
    log.record("system:serviceaccount:a:client", ("service", "web"), frozenset({"ns-a"}))
    log.record("system:serviceaccount:c:cluster-reader", ("service", "web"), None)
    log.record("system:serviceaccount:b:client", ("service", "web"), frozenset({"ns-b", "ns-x"}))
    seen_by_b = [who for who, _ in log.consumers(("service", "web"), frozenset({"ns-b"}))]
    assert seen_by_b == ["system:serviceaccount:b:client", "system:serviceaccount:c:cluster-reader"]


def test_one_identity_asking_for_many_names_cannot_evict_the_others_from_the_consumer_log() -> None:
    log = ConsumerLog(window=3600, max_entries=1000, per_identity=64, clock=lambda: 0.0)
    log.record("system:serviceaccount:a:honest", ("service", "orders"))
    for n in range(10_000):
        log.record("system:serviceaccount:evil:x", ("service", f"name-{n}"))
    assert [who for who, _ in log.consumers(("service", "orders"))] == ["system:serviceaccount:a:honest"]
    assert len(log) == 65


def test_a_lone_registrations_health_change_keeps_every_reader_memo() -> None:
    index = Index()
    index.observe("ADDED", body("lone", namespace="quiet"))
    version = index.namespaces_version
    for health in ("Unhealthy", "Healthy", "Degraded"):
        index.observe("MODIFIED", body("lone", namespace="quiet", health=health))
    assert index.namespaces_version == version  # was bumped twice per change
    index.observe("DELETED", body("lone", namespace="quiet"))
    assert index.namespaces_version == version + 1  # the namespace disappeared
    index.observe("ADDED", body("lone", namespace="quiet"))
    assert index.namespaces_version == version + 2  # and appeared again


def _policy(name: str, threshold: int, created: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "a", "uid": f"u-{name}", "creationTimestamp": created},
        "spec": {"service": "pay", "panicThresholdPercent": threshold},
    }


def test_deleting_one_of_two_policies_of_a_service_keeps_the_other() -> None:
    index = Index()
    index.observe_policy("ADDED", _policy("first", 60, "2026-12-01T00:00:00Z"))
    index.observe_policy("ADDED", _policy("second", 80, "2026-12-02T00:00:00Z"))
    assert index.policies[("a", "pay")] == 60  # the oldest governs
    assert (index.governing("a", "second"), index.governing("a", "first")) == ("first", None)
    index.observe_policy("DELETED", _policy("first", 60, "2026-12-01T00:00:00Z"))
    assert index.policies[("a", "pay")] == 80  # was forgotten: no policy at all
    assert index.policy_for("a", "pay") is not None and index.governing("a", "second") is None
    index.observe_policy("DELETED", _policy("second", 80, "2026-12-02T00:00:00Z"))
    assert ("a", "pay") not in index.policies


def test_an_ignored_policy_says_which_one_governs_its_service() -> None:
    state = PolicyState("a", "second", "u", 1, "pay", 80, 1, 2, False, ignored_for="first")
    [accepted, panic] = desired(None, state, "2026-12-04T00:00:00Z")["conditions"]
    assert (accepted["type"], accepted["status"], accepted["reason"]) == (
        "Accepted",
        "False",
        "DuplicatePolicy",
    )
    assert "first" in accepted["message"] and panic["type"] == "Panic"


def test_ejection_evidence_counts_tenants_not_service_accounts() -> None:
    detector = OutlierDetector(OutlierSettings(callers=3), clock=lambda: 0.0)
    same_tenant = [Identity(f"system:serviceaccount:evil:sa-{n}", "u", (), ()).tenant for n in range(5)]
    assert not any(detector.report(("victim", "one"), who, True) for who in same_tenant)
    others = [Identity(f"system:serviceaccount:team-{n}:client", "u", (), ()).tenant for n in range(2)]
    results = [detector.report(("victim", "one"), who, True) for who in others]
    assert results == [False, True]  # evil, team-0 and team-1: three tenants
    assert Identity("alice", "u", (), ()).tenant == "user:alice"


async def test_a_replicas_silent_watch_is_taken_for_dead_within_the_quiet_bound() -> None:
    """A watch that delivers nothing (not even the API server's minutely bookmark) is dead
    after QUIET_SECONDS, whatever --watch-timeout-seconds: the index is marked stale then."""

    class SilentApi:
        deadline = 30.0
        asked: list[float] = []

        async def call(self, method: str, path: str, **_: Any) -> Response:
            return Response(200, b'{"metadata": {"resourceVersion": "7"}, "items": []}')

        async def stream(self, path: str, params: dict[str, str], read_timeout: float) -> AsyncIterator[Any]:
            self.asked.append(read_timeout)
            raise Unreachable(f"no event for {read_timeout}s")
            yield {}  # pragma: no cover - an async generator

    index = Index()
    informer = Informer(SilentApi(), index, ("ns",), watch_seconds=290)  # type: ignore[arg-type]
    task = asyncio.create_task(informer.run())
    await _until(lambda: index.staleness() is not None, "the silent watch to mark the index stale")
    task.cancel()
    assert SilentApi.asked and max(SilentApi.asked) <= QUIET_SECONDS < 290
