"""The prober group: rendezvous shares, Leases per member, and never two writers for a key."""

from __future__ import annotations

import copy
import json
from typing import Any

from svcreg.kube import errors
from svcreg.kube.api import Response
from svcreg.operator import sharding
from svcreg.operator.membership import GROUP_LABEL, Membership

KEYS = [(f"ns-{i % 7}", f"r{i}") for i in range(3000)]


def test_a_departure_moves_only_the_departed_share() -> None:
    before = {k: sharding.owner(k, ["a", "b", "c"]) for k in KEYS}
    after = {k: sharding.owner(k, ["a", "c"]) for k in KEYS}
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == "b"}
    # Shares are even enough: each member has between a quarter and half of the keys.
    assert all(len(KEYS) / 4 < list(before.values()).count(m) < len(KEYS) / 2 for m in "abc")


def test_an_arrival_takes_only_what_it_wins() -> None:
    before = {k: sharding.owner(k, ["a", "b"]) for k in KEYS}
    after = {k: sharding.owner(k, ["a", "b", "c"]) for k in KEYS}
    assert {after[k] for k in KEYS if before[k] != after[k]} == {"c"}
    assert sharding.owner(KEYS[0], []) is None


class LeaseApi:
    """The Lease subset of the API server: list by label, POST, PUT with resourceVersion
    preconditions, DELETE with preconditions."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.down = False

    async def call(
        self, method: str, path: str, *, json: Any = None, params: Any = None, **_: Any
    ) -> Response:
        if self.down:
            raise errors.Unreachable("the API server does not answer")
        name = path.rsplit("/", 1)[1] if not path.endswith("/leases") else None
        if method == "GET" and name is None:
            selector = (params or {}).get("labelSelector", "")
            label, value = selector.split("=")
            items = [v for v in self.leases.values() if v["metadata"]["labels"].get(label) == value]
            return self._answer({"items": items})
        if method == "GET":
            if name not in self.leases:
                raise errors.NotFound(404, "not found")
            return self._answer(self.leases[name])
        if method == "DELETE":
            lease = self.leases.get(name or "")
            if lease is None:
                raise errors.NotFound(404, "not found")
            if json["preconditions"]["resourceVersion"] != lease["metadata"]["resourceVersion"]:
                raise errors.Conflict(409, "precondition failed")
            del self.leases[lease["metadata"]["name"]]
            return self._answer({})
        body = copy.deepcopy(json)
        name = body["metadata"]["name"]
        if method == "POST" and name in self.leases:
            raise errors.Conflict(409, "exists")
        if method == "PUT":
            if name not in self.leases:
                raise errors.NotFound(404, "not found")
            if body["metadata"].get("resourceVersion") != self.leases[name]["metadata"]["resourceVersion"]:
                raise errors.Conflict(409, "the object has been modified")
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        self.leases[name] = body
        return self._answer(body)

    @staticmethod
    def _answer(body: Any) -> Response:
        return Response(200, json.dumps(body).encode())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def member(api: LeaseApi, clock: Clock, identity: str) -> Membership:
    return Membership(
        api,  # type: ignore[arg-type]
        "ns",
        identity,
        f"http://{identity}:8080",
        duration=15,
        renew_every=2,
        clock=clock,
    )


async def test_a_member_acts_only_after_every_other_has_seen_it() -> None:
    api, clock = LeaseApi(), Clock()
    a = member(api, clock, "a")
    await a.round()
    assert not a.acting()  # its Lease is new: it settles first
    clock.now += a.settle
    await a.round()
    assert a.acting() and all(a.owns(k) for k in KEYS[:50])
    b = member(api, clock, "b")
    await b.round()
    assert not b.acting() and not any(b.owns(k) for k in KEYS)
    await a.round()  # a sees b and gives b's share up at once, before b acts
    b_share = [k for k in KEYS if sharding.owner(k, ["a", "b"]) == "b"]
    assert b_share and not any(a.owns(k) for k in b_share)
    assert a.owner_url(b_share[0]) == "http://b:8080"
    assert a.owner_url(next(k for k in KEYS if a.owns(k))) is None  # its own: answered here
    clock.now += b.settle
    await b.round()
    await a.round()
    for key in KEYS:
        assert a.owns(key) != b.owns(key)  # exactly one member probes each registration
    assert api.leases["svcreg-prober-a"]["metadata"]["labels"] == {GROUP_LABEL: "svcreg"}


async def settled_pair(api: LeaseApi, clock: Clock) -> tuple[Membership, Membership]:
    """Two members that have seen each other and acted for a round."""
    a, b = member(api, clock, "a"), member(api, clock, "b")
    for _ in range(2):
        await a.round()
        await b.round()
        clock.now += a.settle
    await a.round()
    await b.round()
    return a, b


async def test_a_silent_member_stops_before_the_others_take_its_share_over() -> None:
    api, clock = LeaseApi(), Clock()
    a, b = await settled_pair(api, clock)
    b_share = [k for k in KEYS if b.owns(k)]
    assert b_share
    # b stops renewing (a crash, a partition): b stops acting before anyone takes its share
    # over, and a has it all once b's Lease has not changed for its duration.
    silent_since = clock.now
    while not all(a.owns(k) for k in b_share):
        clock.now += 0.5
        await a.round()
        assert not (b.acting() and any(a.owns(k) for k in b_share))
    assert clock.now - silent_since <= 15 + a.renew_every


async def test_a_member_that_cannot_reach_the_api_stops_acting() -> None:
    api, clock = LeaseApi(), Clock()
    a = member(api, clock, "a")
    await a.round()
    clock.now += a.settle
    await a.round()
    assert a.acting()
    api.down = True
    clock.now += a.stale_after
    assert not a.acting() and not a.owns(KEYS[0])


async def test_a_member_leaving_cleanly_hands_over_at_the_next_round() -> None:
    api, clock = LeaseApi(), Clock()
    a, b = await settled_pair(api, clock)
    await b._leave()
    assert "svcreg-prober-b" not in api.leases
    await a.round()
    assert all(a.owns(k) for k in KEYS[:100])


async def test_leases_of_long_gone_members_are_collected() -> None:
    api, clock = LeaseApi(), Clock()
    a, b = member(api, clock, "a"), member(api, clock, "b")
    await b.round()
    await a.round()
    clock.now += 4 * 15 + 1
    await a.round()
    assert set(api.leases) == {"svcreg-prober-a"}


def test_a_failure_counts_only_when_the_quorum_saw_it() -> None:
    from svcreg.operator.vantage import decide  # noqa: PLC0415

    # 2 of 3: one other member that also saw it fail is enough.
    agreed = decide(2, "a", {"": "ConnectionRefused"}, {"b": {"": False}})
    assert agreed.held == frozenset() and agreed.message == ""
    # It passed from b: held, and the message says who saw what.
    held = decide(2, "a", {"": "ConnectionRefused"}, {"b": {"": True}})
    assert held.held == {""}
    assert held.message == (
        "a saw the endpoint fail (ConnectionRefused); b saw it pass: not Unhealthy until 2 members agree"
    )
    # A member that did not answer is not counted: the quorum is of those that answered.
    assert decide(3, "a", {"x:80": "Timeout"}, {"b": {"x:80": False}, "c": None}).held == frozenset()
    assert decide(2, "a", {"x:80": "Timeout"}, {"b": None}).held == frozenset()
    mixed = decide(3, "a", {"x:80": "Timeout"}, {"b": {"x:80": True}, "c": {"x:80": False}})
    assert mixed.held == {"x:80"} and "b saw it pass" in mixed.message
    # Capped at the members there are: alone, a member decides alone.
    assert decide(3, "a", {"": "Timeout"}, {}).held == frozenset()


async def test_leaving_stops_acting_at_once_and_hands_the_share_over_at_the_next_round() -> None:
    """A member that shuts down leaves at the start: it stops acting, its Lease is deleted and
    never renewed again, and the other member has everything after one round."""
    api, clock = LeaseApi(), Clock()
    a, b = await settled_pair(api, clock)
    changes: list[bool] = []
    b.on_change = lambda: changes.append(b.acting())
    assert any(b.owns(k) for k in KEYS)
    await b.leave()
    assert not b.acting() and not any(b.owns(k) for k in KEYS) and changes == [False]
    assert "svcreg-prober-b" not in api.leases
    await b.round()  # a round still scheduled does not bring it back
    assert "svcreg-prober-b" not in api.leases
    await a.round()
    assert all(a.owns(k) for k in KEYS)
