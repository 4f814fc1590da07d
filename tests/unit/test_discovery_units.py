"""The index, the query parser and the review caches, without a cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from multidict import CIMultiDict, MultiDict

from svcreg.core.errors import BadParameter
from svcreg.core.refusals import Refusal
from svcreg.discovery.consumers import merge
from svcreg.discovery.http.answers import Answer, AnswerCache
from svcreg.discovery.http.auth import Authorizer
from svcreg.discovery.http.cache import MISSING, RefreshAheadCache
from svcreg.discovery.http.discovery import pick
from svcreg.discovery.http.ratelimit import TokenBuckets
from svcreg.discovery.index import Index
from svcreg.discovery.query import parse, remember, remembered
from svcreg.kube.api import Response


def body(
    name: str,
    namespace: str = "a",
    health: str = "Healthy",
    generation: int = 1,
    observed: int | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "generation": generation},
        "spec": {"endpoint": f"http://{name}.svc:80", **spec},
        "status": {
            "health": health,
            "observedGeneration": generation if observed is None else observed,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def test_health_written_for_an_older_generation_is_not_served() -> None:
    """An edited endpoint may be dead: until the operator observed the new generation, the
    registration is Unknown to discovery, not Healthy."""
    index = Index()
    index.observe("ADDED", body("x", generation=2, observed=1))
    entry = index.items[("a", "x")]
    assert (entry.health, entry.ready) == ("Unknown", False)
    assert index.candidates(parse(MultiDict(), "services"), None) == []
    index.observe("MODIFIED", body("x", generation=2, observed=2))
    assert index.items[("a", "x")].health == "Healthy"


def test_index_kinds_of_change_and_secondary_indices() -> None:
    index = Index()
    start = index.index
    assert index.observe("ADDED", body("x", capabilities=["greet"], tags=["api"])).kind == "registered"  # type: ignore[union-attr]
    assert (
        index.observe("MODIFIED", body("x", capabilities=["greet"], tags=["api"])) is None
    )  # nothing changed
    changed = index.observe("MODIFIED", body("x", health="Unhealthy", capabilities=["greet"], tags=["api"]))
    assert changed is not None and changed.kind == "health-changed"
    updated = index.observe("MODIFIED", body("x", generation=2, capabilities=["farewell"]))
    assert updated is not None and updated.kind == "updated"
    assert "greet" not in index.by_capability and index.by_capability["farewell"] == {("a", "x")}
    assert "api" not in index.by_tag
    assert index.observe("DELETED", body("x")).kind == "deleted"  # type: ignore[union-attr]
    assert not index.items and not index.by_namespace and index.index == start + 4


def test_replace_removes_what_disappeared_in_its_scope_only() -> None:
    index = Index()
    other = body("z")
    other["metadata"]["namespace"] = "b"
    index.replace([body("x"), body("y"), other])
    index.replace([body("y")], namespace="a")
    assert sorted(index.items) == [("a", "y"), ("b", "z")]
    index.replace([body("y")])
    assert list(index.items) == [("a", "y")]


def test_history_tells_when_a_resume_is_too_old() -> None:
    index = Index()
    start = index.index
    for i in range(5):
        index.observe("ADDED", body(f"r{i}"))
    assert [c.index - start for c in index.changes_since(start + 3) or []] == [4, 5]
    assert index.changes_since(start + 5) == []
    index.history.clear()
    index.observe("ADDED", body("late"))
    assert index.changes_since(start + 2) is None


def test_a_resume_point_from_another_process_is_unknown() -> None:
    """The counter starts from the wall clock, so ids from before a restart (or from a replica
    started earlier) fall before this history, and later ones after it: both are unknown."""
    before = Index(wall=lambda: 1000.0)
    before.observe("ADDED", body("x"))
    old_id = str(before.index)
    restarted = Index(wall=lambda: 1000.002)  # two milliseconds later
    assert restarted.index > before.index
    restarted.observe("ADDED", body("x"))
    assert restarted.resume_point(old_id) is None
    assert restarted.resume_point(str(restarted.index + 1)) is None
    assert restarted.resume_point(str(restarted.index)) == restarted.index
    assert restarted.resume_point("\u0661\u0662") is None  # Unicode digits are not an id


def test_candidates_intersect_indices_and_respect_namespaces() -> None:
    index = Index()
    index.observe("ADDED", body("x", capabilities=["greet"], tags=["api"]))
    index.observe("ADDED", body("y", capabilities=["greet"]))
    index.observe("ADDED", body("z", namespace="b", capabilities=["greet"], tags=["api"]))
    query = parse(MultiDict([("capability", "greet"), ("tag", "api")]), "services")
    assert [i.name for i in index.candidates(query, None)] == ["x", "z"]
    assert [i.name for i in index.candidates(query, frozenset({"b"}))] == ["z"]


def test_a_wait_without_index_answers_at_once_and_long_waits_are_clamped() -> None:
    assert parse(MultiDict([("wait", "5s")]), "services").wait is None
    assert parse(MultiDict([("index", "1"), ("wait", "90m")]), "services").wait == 300.0
    assert parse(MultiDict([("health", "any,Healthy")]), "services").health is None


def test_version_ranges_are_exactly_the_published_pattern() -> None:
    for good in (">=1.2,<2", "^1.4", "~1.2", "==1.0.0", "1", "!=0.9.1"):
        assert parse(MultiDict([("version", good)]), "services").version is not None
    for bad in ("", "00", ">=1.2, <2", "1.2.3-rc.1", "*", ">=v1"):
        with pytest.raises(BadParameter):
            parse(MultiDict([("version", bad)]), "services")


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ([("health", "Sick")], "health"),
        ([("version", "~~1")], "version"),
        ([("service", "A_B")], "service"),
        ([("wait", "soon")], "wait"),
        ([("index", "1"), ("wait", "10h")], "wait"),
        ([("select", "two")], "select"),
        ([("service", "a"), ("service", "b")], "service"),
        ([("meta.", "x")], "meta."),
    ],
)
def test_bad_queries_name_the_parameter(params: list[tuple[str, str]], parameter: str) -> None:
    route = "capability" if params[0][0] == "select" else "services"
    with pytest.raises(BadParameter) as error:
        parse(MultiDict(params), route, capability="c" if route == "capability" else None)
    assert error.value.parameter == parameter


def test_parsed_queries_are_remembered_but_bad_ones_are_not() -> None:
    good = MultiDict([("tag", "a"), ("health", "any")])
    first = parse(good, "capability", capability="x")
    remember("tag=a&health=any", "capability", "x", first)
    assert remembered("tag=a&health=any", "capability", "x") is first
    assert remembered("tag=a&health=any", "capability", "y") is None
    bad = MultiDict([("health", "sometimes")])
    for _ in range(2):  # raised both times: a refusal is never remembered as an answer
        with pytest.raises(BadParameter) as refused:
            parse(bad, "capability", capability="x")
        assert refused.value.parameter == "health"
    assert remembered("health=sometimes", "capability", "x") is None


def test_durations_and_health_any() -> None:
    query = parse(MultiDict([("index", "7"), ("wait", "1.5m"), ("health", "any")]), "services")
    assert (query.index, query.wait, query.health) == (7, 90.0, None)
    assert parse(MultiDict([("health", "Healthy,Unhealthy")]), "services").health == {"Healthy", "Unhealthy"}


def test_pick_never_chooses_weight_zero() -> None:
    index = Index()
    index.observe("ADDED", body("zero", weight=0))
    assert pick(list(index.items.values())) is None


class FakeApi:
    deadline = 30.0

    async def call(self, method: str, path: str, **kwargs: Any) -> Response:
        """As KubeApi.call; these answers are never errors."""
        return await self.request(method, path, **kwargs)

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.allowed = True
        self.echo_audiences = True  # as the API server does: status.audiences is what was asked

    async def request(self, method: str, path: str, *, json: Any = None, **_: Any) -> Response:
        import json as json_mod  # noqa: PLC0415

        self.calls.append(path.rsplit("/", 1)[-1])
        if path.endswith("tokenreviews"):
            ok = json["spec"]["token"] == "good"
            status = {"authenticated": ok, "user": {"username": "system:serviceaccount:a:r", "groups": ["g"]}}
            if self.echo_audiences:
                status["audiences"] = json["spec"].get("audiences", [])
            if not ok:
                status = {"authenticated": False, "error": "invalid bearer token"}
            return Response(201, json_mod.dumps({"status": status}).encode())
        return Response(201, json_mod.dumps({"status": {"allowed": self.allowed}}).encode())


async def test_a_token_review_not_confirming_the_audience_is_refused() -> None:
    api = FakeApi()
    api.echo_audiences = False  # an authenticator that ignored the audiences asked for
    auth = Authorizer(api, ["svcreg"])  # type: ignore[arg-type]
    with pytest.raises(Refusal) as refused:
        await auth.identify("Bearer good")
    assert refused.value.status == 401 and "audience" in refused.value.message


async def test_reviews_are_cached_and_failures_are_401() -> None:
    api = FakeApi()
    clock = [0.0]
    auth = Authorizer(api, ["svcreg"], clock=lambda: clock[0])  # type: ignore[arg-type]
    identity = await auth.identify("Bearer good")
    assert identity.username == "system:serviceaccount:a:r"
    await auth.identify("Bearer good")
    assert api.calls.count("tokenreviews") == 1
    clock[0] += 61  # positive reviews live at most 60 s
    await auth.identify("Bearer good")
    assert api.calls.count("tokenreviews") == 2
    for header in (None, "Basic x", "Bearer", "Bearer bad"):
        with pytest.raises(Refusal) as error:
            await auth.identify(header)
        assert error.value.status == 401
    assert await auth.allowed(identity, "list", "a")
    api.allowed = False
    assert await auth.allowed(identity, "list", "a")  # cached
    clock[0] += 61
    assert not await auth.allowed(identity, "list", "a")
    api.allowed = True
    clock[0] += 6  # negative reviews live a few seconds
    assert await auth.allowed(identity, "list", "a")


async def test_token_cache_never_outlives_the_token() -> None:
    import base64  # noqa: PLC0415
    import json  # noqa: PLC0415

    claims = base64.urlsafe_b64encode(json.dumps({"exp": 1000.0 + 10}).encode()).decode().rstrip("=")
    token = f"h.{claims}.s"
    api = FakeApi()
    clock = [0.0]

    async def review(method: str, path: str, *, json: Any = None, **_: Any) -> Response:
        api.calls.append("tokenreviews")
        return Response(201, b'{"status": {"authenticated": true, "user": {"username": "u"}}}')

    api.request = review  # type: ignore[method-assign]
    auth = Authorizer(api, clock=lambda: clock[0], wall=lambda: 1000.0)  # type: ignore[arg-type]
    await auth.identify(f"Bearer {token}")
    clock[0] += 11  # past the token's exp, though well within 60 s
    await auth.identify(f"Bearer {token}")
    assert api.calls.count("tokenreviews") == 2


async def test_a_review_in_use_is_refreshed_ahead_and_never_served_past_its_lifetime() -> None:
    import asyncio  # noqa: PLC0415

    api = FakeApi()
    clock = [0.0]
    auth = Authorizer(api, clock=lambda: clock[0])  # type: ignore[arg-type]
    identity = await auth.identify("Bearer good")
    assert await auth.allowed(identity, "list", "a")
    reviews = api.calls.count("subjectaccessreviews")

    gate = asyncio.Event()
    answer = FakeApi.request

    async def slow(self: FakeApi, method: str, path: str, **kwargs: Any) -> Response:
        await gate.wait()
        return await answer(self, method, path, **kwargs)

    api.request = slow.__get__(api)  # type: ignore[method-assign]
    api.allowed = False  # revoked meanwhile
    clock[0] = 50  # in the last quarter of the 60 s lifetime
    # Answered from the entry at once, though the API server has not answered the refresh yet.
    assert await asyncio.wait_for(auth.allowed(identity, "list", "a"), 1)
    assert await asyncio.wait_for(auth.allowed(identity, "list", "a"), 1)
    gate.set()
    for _ in range(100):
        if api.calls.count("subjectaccessreviews") > reviews and not auth.reviews._inflight:
            break
        await asyncio.sleep(0)
    assert api.calls.count("subjectaccessreviews") == reviews + 1  # one refresh for both hits
    assert not await auth.allowed(identity, "list", "a")  # the refresh's answer is used

    # A refresh that fails leaves the entry only until its own lifetime ends.
    api.allowed = True
    clock[0] = 100
    assert await auth.allowed(identity, "list", "a")  # a fresh positive entry, lifetime to 160

    async def broken(method: str, path: str, **_: Any) -> Response:
        raise ConnectionError("API server unreachable")

    api.request = broken  # type: ignore[method-assign]
    clock[0] = 150
    assert await auth.allowed(identity, "list", "a")
    for _ in range(10):
        await asyncio.sleep(0)
    clock[0] = 161
    with pytest.raises(ConnectionError):
        await auth.allowed(identity, "list", "a")


async def test_through_an_api_server_outage_reviews_stand_for_a_bounded_time() -> None:
    """A caller already served keeps being served while no review can be made, up to
    STALE_ON_OUTAGE past the review's lifetime; a caller never reviewed gets 503."""
    from svcreg.discovery.http.auth import STALE_ON_OUTAGE  # noqa: PLC0415
    from svcreg.kube.errors import Unreachable  # noqa: PLC0415

    api = FakeApi()
    clock = [0.0]
    auth = Authorizer(api, clock=lambda: clock[0])  # type: ignore[arg-type]
    identity, readable = await auth.reader("Bearer good", ["a"], 1)
    assert readable is None  # granted cluster-wide
    api.allowed = False
    assert not await auth.allowed(identity, "list", "b")  # a denial, cached a few seconds

    async def unreachable(method: str, path: str, **_: Any) -> Response:
        raise Unreachable("connection refused")

    api.call = unreachable  # type: ignore[method-assign]
    clock[0] = 100.0  # every review above has expired
    assert await auth.reader("Bearer good", ["a"], 1) == (identity, None)
    assert not await auth.allowed(identity, "list", "b")  # a stale denial stays a denial
    with pytest.raises(Refusal) as never_reviewed:
        await auth.identify("Bearer other")
    assert never_reviewed.value.status == 503
    clock[0] = 60.0 + STALE_ON_OUTAGE + 1  # past the bound
    with pytest.raises(Refusal) as expired:
        await auth.reader("Bearer good", ["a"], 1)
    assert expired.value.status == 503


async def test_a_review_kept_through_an_outage_never_outlives_its_token() -> None:
    import base64  # noqa: PLC0415
    import json  # noqa: PLC0415

    from svcreg.kube.errors import Unreachable  # noqa: PLC0415

    claims = base64.urlsafe_b64encode(json.dumps({"exp": 1030.0}).encode()).decode().rstrip("=")
    token = f"h.{claims}.s"
    api = FakeApi()

    async def review(method: str, path: str, *, json: Any = None, **_: Any) -> Response:
        return Response(201, b'{"status": {"authenticated": true, "user": {"username": "u"}}}')

    api.call = review  # type: ignore[method-assign]
    clock, wall = [0.0], [1000.0]
    auth = Authorizer(api, clock=lambda: clock[0], wall=lambda: wall[0])  # type: ignore[arg-type]
    await auth.identify(f"Bearer {token}")

    async def unreachable(method: str, path: str, **_: Any) -> Response:
        raise Unreachable("connection refused")

    api.call = unreachable  # type: ignore[method-assign]
    clock[0], wall[0] = 20.0, 1020.0
    await auth.identify(f"Bearer {token}")  # still within the token's life: fine
    clock[0], wall[0] = 40.0, 1040.0  # past its exp, though the outage bound is far off
    with pytest.raises(Refusal) as refused:
        await auth.identify(f"Bearer {token}")
    assert refused.value.status == 401


class ScopedApi(FakeApi):
    """RBAC that grants ``list`` in the namespaces in ``granted`` ("" means cluster-wide)."""

    def __init__(self, granted: set[str]) -> None:
        super().__init__()
        self.granted = granted

    async def request(self, method: str, path: str, *, json: Any = None, **kwargs: Any) -> Response:
        if path.endswith("subjectaccessreviews"):
            self.calls.append("subjectaccessreviews")
            namespace = json["spec"]["resourceAttributes"].get("namespace", "")
            allowed = namespace in self.granted
            return Response(201, f'{{"status": {{"allowed": {str(allowed).lower()}}}}}'.encode())
        return await super().request(method, path, json=json, **kwargs)


async def test_a_readers_answer_is_remembered_only_while_every_review_behind_it_is_fresh() -> None:
    from svcreg.telemetry.metrics import Metrics  # noqa: PLC0415

    api = ScopedApi({"a", "b"})
    clock = [0.0]
    metrics = Metrics()
    auth = Authorizer(api, clock=lambda: clock[0], metrics=metrics)  # type: ignore[arg-type]
    namespaces = ["a", "b", "c"]
    _, readable = await auth.reader("Bearer good", namespaces, 1)
    assert readable == frozenset({"a", "b"})
    calls = len(api.calls)
    for _ in range(3):
        assert (await auth.reader("Bearer good", namespaces, 1))[1] == frozenset({"a", "b"})
    assert len(api.calls) == calls  # answered from the memo
    # Each remembered answer counts as the cache lookups it stands for: 1 token, 1 + 3 reviews.
    assert metrics.auth_cache.values[("tokenreview", "hit")] == 3
    assert metrics.auth_cache.values[("subjectaccessreview", "hit")] == 3 * 4

    # A new namespace (the index's namespace set moved on) is reviewed at once.
    api.granted.add("d")
    _, readable = await auth.reader("Bearer good", [*namespaces, "d"], 2)
    assert readable == frozenset({"a", "b", "d"})

    # The denied cluster-wide review lives 5 s and is due for refresh at 3.75 s: past that the
    # memo is not used, so the refresh-ahead starts on time, and a revocation lands with it.
    api.granted.discard("a")
    clock[0] = 4.0
    await auth.reader("Bearer good", [*namespaces, "d"], 2)
    for _ in range(100):  # let the background refreshes run
        if not auth.reviews._inflight:
            break
        await asyncio.sleep(0)
    clock[0] = 61.0  # every positive namespace review has now expired
    _, readable = await auth.reader("Bearer good", [*namespaces, "d"], 2)
    assert readable == frozenset({"b", "d"})

    # A rejected token is never remembered as a reader.
    with pytest.raises(Refusal):
        await auth.reader("Bearer bad", namespaces, 2)
    with pytest.raises(Refusal):
        await auth.reader("Bearer bad", namespaces, 2)


async def test_a_cluster_wide_readers_answer_is_remembered_too() -> None:
    api = ScopedApi({""})
    auth = Authorizer(api, clock=lambda: 0.0)  # type: ignore[arg-type]
    assert (await auth.reader("Bearer good", ["a"], 1))[1] is None
    calls = len(api.calls)
    assert (await auth.reader("Bearer good", ["a"], 1))[1] is None
    assert len(api.calls) == calls


def test_the_namespace_set_version_moves_only_when_the_set_does() -> None:
    index = Index()
    index.observe("ADDED", body("x", namespace="a"))
    first = index.namespaces_version
    index.observe("ADDED", body("y", namespace="a"))
    index.observe("MODIFIED", body("y", namespace="a", health="Unhealthy"))
    assert index.namespaces_version == first
    index.observe("ADDED", body("z", namespace="b"))
    assert index.namespaces_version == first + 1
    index.observe("DELETED", body("x", namespace="a"))
    assert index.namespaces_version == first + 1  # "a" still has y
    index.observe("DELETED", body("y", namespace="a"))
    assert index.namespaces_version == first + 2


async def test_review_cache_is_bounded_and_bad_answers_never_evict_good_ones() -> None:
    """A flood of distinct bogus tokens costs bounded memory and leaves good reviews cached."""
    cache = RefreshAheadCache(lambda: 0.0, is_negative=lambda v: v is False, max_entries=3, max_negative=2)

    async def review(ok: bool) -> tuple[bool, float]:
        return ok, 60.0

    for good in range(3):
        await cache.get(("good", good), review, True)
    for bad in range(100):
        await cache.get(("bad", bad), review, False)
    assert len(cache) == 5
    assert all(cache.peek(("good", g), review, True) is True for g in range(3))
    await cache.get(("good", 3), review, True)  # over the positive bound: the oldest good goes
    assert cache.peek(("good", 0), review, True) is MISSING


def test_equivalent_spellings_share_one_canonical_query() -> None:
    """Equivalent spellings cannot each cost a cached answer."""
    spellings = ["health=any", "health=any,", "health=any,,", "health=,any"]
    keys = {parse(MultiDict([tuple(s.split("=", 1))]), "services").canonical for s in spellings}
    assert len(keys) == 1
    a = parse(MultiDict([("tag", "a"), ("tag", "b")]), "services").canonical
    b = parse(MultiDict([("tag", "b"), ("tag", "a")]), "services").canonical
    assert a == b
    assert parse(MultiDict([("tag", "a")]), "services").canonical != a


def test_answer_cache_is_bounded_by_bytes() -> None:
    cache = AnswerCache(max_bytes=1000, max_entries=100)
    for n in range(50):
        cache.put(n, Answer(b"x" * 100, '"e"', CIMultiDict()))
    assert cache.bytes <= 1000 and len(cache) == 10
    assert cache.get(49) is not None and cache.get(0) is None
    cache.put("huge", Answer(b"x" * 5000, '"e"', CIMultiDict()))
    assert cache.get("huge") is None and cache.bytes <= 1000


def test_token_buckets_refill_and_stay_bounded() -> None:
    clock = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3.0, max_keys=2, clock=lambda: clock[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == 0.5  # empty: one token comes in half a second
    clock[0] += 0.5
    assert buckets.take("a") == 0.0
    buckets.take("b")
    buckets.take("c")
    assert len(buckets) == 2  # "a", the least recently used, is forgotten


async def test_bogus_tokens_from_one_address_are_rate_limited_and_cost_no_good_review() -> None:
    api = FakeApi()
    auth = Authorizer(api, clock=lambda: 0.0)  # type: ignore[arg-type]
    assert (await auth.identify("Bearer good", "10.0.0.1")).username
    refused = 0
    for n in range(200):
        try:
            await auth.identify(f"Bearer bogus-{n}", "10.0.0.66")
        except Refusal as error:
            refused += error.status == 429
    reviews = api.calls.count("tokenreviews")
    assert refused == 100 and reviews == 1 + 100  # the burst, then nothing reaches the API
    assert (await auth.identify("Bearer good", "10.0.0.1")).username  # still cached, still good
    assert api.calls.count("tokenreviews") == reviews


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ([("index", "\u0661\u0662"), ("wait", "1s")], "index"),  # Arabic-Indic digits
        ([("version", ">=1," * 100)], "version"),
        ([("version", ">=1.2,<2" + "0" * 200)], "version"),
        ([("health", "Healthy\u0000")], "health"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter_never_a_500(
    params: list[tuple[str, str]], parameter: str
) -> None:
    with pytest.raises(BadParameter) as refused:
        parse(MultiDict(params), "services")
    assert refused.value.parameter == parameter


def test_metadata_values_with_ampersands_and_equals_signs_are_matched_as_given() -> None:
    query = parse(MultiDict([("meta.url", "a=b&c=d")]), "services")
    assert query.meta == (("url", "a=b&c=d"),)


def test_deeply_nested_json_bodies_are_a_400() -> None:
    from svcreg.core import wire  # noqa: PLC0415
    from svcreg.discovery.http.bodies import parse_model  # noqa: PLC0415

    nested = b'{"status": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(BadParameter):
        parse_model(wire.HeartbeatBody, nested)


async def test_operator_mode_sync_survives_an_empty_metadata_list() -> None:
    """The API server answers an empty metadata-only list with "items": null; the index still
    turns synced (it once stayed unsynced, so /readyz never said ready)."""
    from svcreg.discovery.informer import Informer  # noqa: PLC0415

    class EmptyApi:
        async def call(self, method: str, path: str, **_: Any) -> Response:
            return Response(200, b'{"kind": "PartialObjectMetadataList", "metadata": {}, "items": null}')

    index = Index()
    await asyncio.wait_for(Informer(EmptyApi(), index, ("team-a",)).confirm_listed(), 5)  # type: ignore[arg-type]
    assert index.synced


def test_changes_since_takes_only_the_newest_entries() -> None:
    index = Index()
    start = index.index
    for i in range(50):
        index.observe("ADDED", body(f"r{i}"))
    assert [c.index - start for c in index.changes_since(start + 47) or []] == [48, 49, 50]
    assert [c.index - start for c in index.changes_since(start) or []] == list(range(1, 51))
    assert index.changes_since(start + 50) == []


def test_index_metrics_count_changes_and_bound_per_service_availability() -> None:
    from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415

    from svcreg.discovery.indexmetrics import IndexCollector  # noqa: PLC0415

    index = Index()
    index.observe("ADDED", body("up", service="web"))
    index.observe("ADDED", body("down", service="web", health="Unhealthy"))
    index.observe("ADDED", body("paused", namespace="b", service="batch", maintenance=True))
    index.observe("MODIFIED", body("down", service="web"))  # recovered: a health change
    index.observe("DELETED", body("paused", namespace="b"))
    for i in range(5):
        index.observe("ADDED", body(f"z{i}", namespace="zz", service=f"svc{i}", health="Unhealthy"))
    registry = CollectorRegistry()
    registry.register(IndexCollector(index, per_service=True, max_services=2))
    text = generate_latest(registry).decode()
    assert 'svcreg_registration_changes_total{kind="registered"} 8.0' in text
    assert 'svcreg_registration_changes_total{kind="health-changed"} 1.0' in text
    assert 'svcreg_registration_changes_total{kind="deleted"} 1.0' in text
    # Two series kept (sorted: a/web, zz/svc0), the other four services summed under _other.
    assert 'svcreg_service_availability{namespace="a",service="web"} 1.0' in text
    assert 'svcreg_service_availability{namespace="zz",service="svc0"} 0.0' in text
    assert 'svcreg_service_availability{namespace="",service="_other"} 0.0' in text
    assert text.count("svcreg_service_availability{") == 3
    # Off by default: tenants' service names are not put on the unauthenticated endpoint.
    quiet = CollectorRegistry()
    quiet.register(IndexCollector(index))
    assert "svcreg_service_availability{" not in generate_latest(quiet).decode()


def test_explain_gives_reasons_exactly_when_a_query_leaves_an_item_out() -> None:
    """why_not (the words) and selects (the hot path) never disagree, over many combinations."""
    import random  # noqa: PLC0415

    rng = random.Random(7)
    index = Index()
    for i in range(60):
        index.observe(
            "ADDED",
            body(
                f"r{i}",
                namespace=rng.choice(["a", "b"]),
                health=rng.choice(["Healthy", "Degraded", "Unhealthy", "Unknown"]),
                service=rng.choice(["orders", "billing", "pay"]),
                version=rng.choice(["1.0.0", "1.5.0", "2.1.0"]),
                tags=rng.sample(["api", "canary", "eu"], rng.randint(0, 2)),
                capabilities=rng.sample(["greet", "farewell"], rng.randint(0, 2)),
                metadata={"env": rng.choice(["prod", "staging"])},
                maintenance=rng.random() < 0.1,
            ),
        )
    options = [
        ("service", "orders"), ("service", "b*"), ("namespace", "a"), ("capability", "greet"),
        ("tag", "api"), ("tag", "canary,eu"), ("version", ">=1.2,<2"), ("health", "any"),
        ("health", "unhealthy"), ("health", "Maintenance"), ("meta.env", "prod"),
    ]  # fmt: skip
    for _ in range(300):
        chosen = dict(rng.sample(options, rng.randint(0, 4)))  # one value per parameter
        query = parse(MultiDict(list(chosen.items())), "explain")
        for item in index.items.values():
            reasons = query.why_not(item)
            assert (not reasons) == query.selects(item), (query, item.name, reasons)


def test_explain_neither_names_nor_counts_unreadable_candidates_and_notes_stale_status() -> None:
    from svcreg.discovery.explain import explain  # noqa: PLC0415

    index = Index()
    index.observe("ADDED", body("fresh", capabilities=["greet"]))
    index.observe("ADDED", body("behind", capabilities=["greet"], generation=3, observed=2))
    index.observe("ADDED", body("hidden", namespace="secret", capabilities=["greet"]))
    index.observe("ADDED", body("zero", capabilities=["greet"], weight=0))
    answer = explain(parse(MultiDict([("capability", "greet")]), "explain"), index, frozenset({"a"}))
    by_name = {c["name"]: c for c in answer["candidates"]}
    # Neither named nor counted: a count would say that "greet" exists in another namespace.
    assert "hidden" not in by_name and "unreadable" not in answer
    alone = explain(parse(MultiDict([("capability", "greet")]), "explain"), Index(), frozenset({"a"}))
    elsewhere = Index()
    elsewhere.observe("ADDED", body("hidden", namespace="secret", capabilities=["greet"]))
    assert (
        explain(parse(MultiDict([("capability", "greet")]), "explain"), elsewhere, frozenset({"a"})) == alone
    )
    assert by_name["fresh"]["included"] and by_name["fresh"]["reasons"] == []
    assert not by_name["behind"]["included"]
    assert by_name["behind"]["reasons"] == ["health is Unknown, the query wants Degraded, Healthy"]
    assert "generation 2" in by_name["behind"]["notes"][0]
    assert by_name["zero"]["included"] and "weight 0" in by_name["zero"]["notes"][0]


def test_the_consumer_log_is_bounded_and_forgets_past_its_window() -> None:
    from svcreg.discovery.consumers import ConsumerLog  # noqa: PLC0415

    now = [1000.0]
    log = ConsumerLog(window=60, max_entries=3, clock=lambda: now[0])
    for _ in range(3):
        log.record("sa:a:web", ("capability", "greet"))
    log.record("sa:b:batch", ("capability", "greet"))
    log.record("sa:b:batch", ("service", "orders"))
    assert [(who, use.requests) for who, use in log.consumers(("capability", "greet"))] == [
        ("sa:a:web", 3),
        ("sa:b:batch", 1),
    ]
    log.record("sa:c:new", ("service", "orders"))  # a fourth pair: the least recently seen goes
    assert len(log) == 3
    assert [who for who, _ in log.consumers(("capability", "greet"))] == ["sa:b:batch"]
    now[0] += 61  # past the window: nothing is reported, and the entries are dropped
    assert log.consumers(("service", "orders")) == [] and len(log) == 0


def test_consumers_of_several_processes_merge_into_one_list() -> None:
    a = [
        {
            "identity": "sa:x",
            "requests": 2,
            "firstSeen": "2026-01-02T00:00:00+00:00",
            "lastSeen": "2026-01-03T00:00:00+00:00",
        },
        {
            "identity": "sa:y",
            "requests": 1,
            "firstSeen": "2026-01-01T00:00:00+00:00",
            "lastSeen": "2026-01-01T00:00:00+00:00",
        },
    ]
    b = [
        {
            "identity": "sa:y",
            "requests": 5,
            "firstSeen": "2026-01-02T00:00:00+00:00",
            "lastSeen": "2026-01-04T00:00:00+00:00",
        },
    ]
    merged = merge([a, b])
    assert [(e["identity"], e["requests"]) for e in merged] == [("sa:y", 6), ("sa:x", 2)]
    assert merged[0]["firstSeen"] == "2026-01-01T00:00:00+00:00"
    assert merged[0]["lastSeen"] == "2026-01-04T00:00:00+00:00"
    assert merge([]) == [] and a[1]["requests"] == 1  # the parts are not changed


def test_empty_tag_parts_name_nothing_on_every_route() -> None:
    """As the OpenAPI document's pattern says, for /v1/services and /v1/capabilities/{name} alike."""
    for route in ("services", "capability"):
        assert parse(MultiDict(tag="a,,b,"), route, "c" if route == "capability" else None).tags == ("a", "b")
