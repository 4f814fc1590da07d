"""Route each change of the index to the watchers and long polls it may concern, and no others.

A subscriber (an open ``/v1/watch`` or a waiting long poll) is filed under one route derived from
its filter: the first capability it names, else its service, tag or namespace, else ``all``. A
change is handed to the subscribers filed under its item's routes (and its previous version's,
so a subscriber hears an item leave its filter). The cost of a change is therefore proportional
to the subscribers it may concern, not to every open watch: 1,000 watchers of other capabilities
cost a change nothing. The route is coarse; the subscriber still applies its whole filter and
its caller's rights to what it receives.

Each subscriber's inbox is bounded: a consumer that falls ``INBOX`` changes behind (a stalled
reader) loses them and is told so (``overflowed``), and its watch sends ``reset``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar

Route = tuple[str, str]
ALL: Route = ("all", "")
INBOX = 1_000
MAX_ROUTES = 100_000


class Filter(Protocol):
    """The parts of a query a route is chosen from."""

    @property
    def capabilities(self) -> tuple[str, ...]: ...
    @property
    def tags(self) -> tuple[str, ...]: ...
    @property
    def service(self) -> str | None: ...
    @property
    def namespace(self) -> str | None: ...


class Item(Protocol):
    """What routes are read from (``svcreg.discovery.index.Entry``)."""

    @property
    def capabilities(self) -> tuple[tuple[str, object, object], ...]: ...
    @property
    def service(self) -> str: ...
    @property
    def tags(self) -> Iterable[str]: ...
    @property
    def namespace(self) -> str: ...


class Published(Protocol):
    """What is routed (``svcreg.discovery.index.Change``): an item and its previous version."""

    @property
    def instance(self) -> Item: ...
    @property
    def previous(self) -> Item | None: ...


C = TypeVar("C", bound=Published)


def route_of(query: Filter) -> Route:
    """The one route a subscriber with this filter is filed under: a value every item it
    selects must carry."""
    if query.capabilities:
        return ("capability", query.capabilities[0])
    if query.service:
        return ("service", query.service)
    if query.tags:
        return ("tag", query.tags[0])
    if query.namespace:
        return ("namespace", query.namespace)
    return ALL


def routes_of(item: Item) -> Iterator[Route]:
    """Every route under which a subscriber may select ``item``."""
    for name, _, _ in item.capabilities:
        yield ("capability", name)
    yield ("service", item.service)
    for tag in item.tags:
        yield ("tag", tag)
    yield ("namespace", item.namespace)
    yield ALL


class Subscription(Generic[C]):
    """The changes routed to one subscriber since it subscribed, in order, at most ``limit``."""

    def __init__(self, route: Route, limit: int = INBOX) -> None:
        self.route = route
        self.limit = limit
        self.pending: collections.deque[C] = collections.deque()
        self.overflowed = False
        self._ready = asyncio.Event()

    def deliver(self, change: C) -> None:
        if len(self.pending) >= self.limit:
            self.pending.clear()
            self.overflowed = True
        else:
            self.pending.append(change)
        self._ready.set()

    def take(self) -> list[C]:
        """What arrived since the last take (empty after an overflow; see ``overflowed``)."""
        taken = list(self.pending)
        self.pending.clear()
        self._ready.clear()
        return taken

    async def wait(self, seconds: float) -> bool:
        """Wait for a delivery; False when ``seconds`` pass first."""
        if self.pending or self.overflowed:
            return True
        try:
            async with asyncio.timeout(seconds):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True


class Router(Generic[C]):
    """The subscribers by route, and the index of the last change seen on each route."""

    def __init__(self, start: int = 0) -> None:
        self._by_route: dict[Route, set[Subscription[C]]] = collections.defaultdict(set)
        # Index of the newest change on each route, so a long poll whose index is older than
        # the index but newer than every change it may concern still waits. Bounded: past
        # MAX_ROUTES the map is cleared and ``start`` moves to now, which only makes waiting
        # polls answer once (as for an unknown index), never miss a change.
        self.start = start
        self._last: dict[Route, int] = {}

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_route.values())

    def subscribe(self, query: Filter, limit: int = INBOX) -> Subscription[C]:
        subscription: Subscription[C] = Subscription(route_of(query), limit)
        self._by_route[subscription.route].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription[C]) -> None:
        subscribers = self._by_route.get(subscription.route)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._by_route[subscription.route]

    def changed_since(self, query: Filter, index: int) -> bool:
        """Whether a change that may concern ``query`` came after ``index`` (True when that
        cannot be known: an index from before this router's memory)."""
        if index < self.start:
            return True
        return self._last.get(route_of(query), self.start) > index

    def publish(self, change: C, index: int) -> int:
        """Hand ``change`` (at ``index``) to every subscriber it may concern; return how many."""
        if len(self._last) > MAX_ROUTES:
            self._last.clear()
            self.start = index - 1
        concerned: set[Subscription[C]] = set()
        items: Iterable[Item] = (
            (change.instance,) if change.previous is None else (change.instance, change.previous)
        )
        for item in items:
            for route in routes_of(item):
                self._last[route] = index
                subscribers = self._by_route.get(route)
                if subscribers:
                    concerned.update(subscribers)
        for subscription in concerned:
            subscription.deliver(change)
        return len(concerned)
