"""Changes reach only the watches and long polls they may concern."""

from __future__ import annotations

import asyncio

from multidict import MultiDict

from svcreg.discovery.index import Index
from svcreg.discovery.query import parse
from tests.unit.test_discovery_units import body


def watcher(index: Index, **filters: str):  # type: ignore[no-untyped-def]
    return index.router.subscribe(parse(MultiDict(list(filters.items())), "watch"))


def test_a_change_reaches_only_the_subscribers_it_may_concern() -> None:
    index = Index()
    others = [watcher(index, capability=f"other-{n}") for n in range(100)]
    greet = watcher(index, capability="greet")
    by_service = watcher(index, service="r1")
    by_tag = watcher(index, tag="blue")
    by_namespace = watcher(index, namespace="a")
    unfiltered = watcher(index)
    elsewhere = watcher(index, namespace="b")

    index.observe("ADDED", body("r1", capabilities=["greet"], tags=["blue"]))

    assert all(not s.pending for s in [*others, elsewhere])
    for concerned in (greet, by_service, by_tag, by_namespace, unfiltered):
        assert [c.kind for c in concerned.take()] == ["registered"]


def test_an_item_leaving_a_filter_still_reaches_its_subscriber() -> None:
    index = Index()
    index.observe("ADDED", body("r1", capabilities=["greet"]))
    greet = watcher(index, capability="greet")
    index.observe("MODIFIED", body("r1", generation=2, capabilities=["other"]))
    [change] = greet.take()
    assert change.previous is not None and change.instance.capabilities[0][0] == "other"


def test_a_reader_that_falls_behind_is_told_to_list_again() -> None:
    index = Index()
    subscription = index.router.subscribe(parse(MultiDict(), "watch"), limit=3)
    for n in range(5):
        index.observe("ADDED", body(f"r{n}"))
    assert subscription.overflowed
    assert len(subscription.pending) <= 3  # bounded whatever the reader does


async def test_a_long_poll_is_not_woken_by_a_change_it_cannot_see() -> None:
    index = Index()
    greet = watcher(index, capability="greet")
    index.observe("ADDED", body("r1", capabilities=["other"]))
    assert not await greet.wait(0.01)
    waiting = asyncio.create_task(greet.wait(30))
    index.observe("ADDED", body("r2", capabilities=["greet"]))
    assert await waiting


def test_unsubscribed_readers_are_forgotten() -> None:
    index = Index()
    subscriptions = [watcher(index, capability="greet") for _ in range(3)]
    for subscription in subscriptions:
        index.router.unsubscribe(subscription)
    assert len(index.router) == 0
    index.observe("ADDED", body("r1", capabilities=["greet"]))
    assert all(not s.pending for s in subscriptions)


def test_a_long_poll_waits_through_changes_it_cannot_see() -> None:
    index = Index()
    start = index.index
    index.observe("ADDED", body("r1", capabilities=["greet"]))
    seen = index.index
    greet = parse(MultiDict(), "capability", capability="greet")
    for n in range(5):
        index.observe("ADDED", body(f"other-{n}", capabilities=["other"]))
    assert index.index > seen  # the index moved ...
    assert not index.router.changed_since(greet, seen)  # ... but not for this query: it waits
    assert index.router.changed_since(greet, start)  # r1 came after start
    assert index.router.changed_since(greet, start - 5)  # from before this process: answer now
    index.observe("MODIFIED", body("r1", generation=2, capabilities=["greet"]))
    assert index.router.changed_since(greet, seen)
