"""No tenant can stall, poison or starve discovery (issue 28): each test is named for the
behaviour that fails without its fix. Costs are counted (API calls, slots), never timed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from svcreg.discovery.http.app import build_app
from svcreg.discovery.http.auth import Authorizer
from svcreg.discovery.http.discovery import Discovery
from svcreg.discovery.http.front import Front
from svcreg.discovery.index import Index
from svcreg.discovery.query import Query, canonical, parse
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
async def served(api: FakeApi | None = None, **options: Any) -> AsyncIterator[Served]:
    index = Index()
    index.observe("ADDED", body("r1", capabilities=["greet"], service="web", metadata={"region": "eu"}))
    index.synced = True
    metrics, api = Metrics(), api or FakeApi()
    auth = Authorizer(api, metrics=metrics)  # type: ignore[arg-type]
    discovery = Discovery(index, auth, metrics, **options)
    runner = web.AppRunner(build_app(metrics, lambda: (True, {}), discovery, registration_api=False))
    await runner.setup()
    assert runner.server is not None
    front = Front(discovery, runner.server)
    server = await asyncio.get_running_loop().create_server(front.protocol, "127.0.0.1", 0)
    try:
        yield Served(discovery, api, server.sockets[0].getsockname()[1], front)
    finally:
        server.close()
        front.close()
        await runner.cleanup()


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
