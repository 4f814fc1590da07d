"""The prober Lease: one holder, takeover only after expiry, a lost race is not a win."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from svcreg.kube import errors
from svcreg.kube.api import Response
from svcreg.operator import lease as lease_mod
from svcreg.operator.lease import LeaseElector


class LeaseApi:
    """The Lease subset of the API server: GET, POST, PUT with resourceVersion preconditions."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.race = False  # the next PUT loses to someone else's write

    async def call(self, method: str, path: str, *, json: Any = None, **_: Any) -> Response:
        import json as json_mod  # noqa: PLC0415

        if method == "GET":
            if self.lease is None:
                raise errors.NotFound(404, "not found")
            return Response(200, json_mod.dumps(self.lease).encode())
        if method == "POST":
            if self.lease is not None:
                raise errors.Conflict(409, "exists")
        elif self.race or json["metadata"].get("resourceVersion") != str(self.version):
            self.race = False
            raise errors.Conflict(409, "the object has been modified")
        self.version += 1
        self.lease = copy.deepcopy(json) | {
            "metadata": {**json["metadata"], "resourceVersion": str(self.version)}
        }
        return Response(200, json_mod.dumps(self.lease).encode())


async def test_one_holder_and_takeover_only_after_expiry() -> None:
    api = LeaseApi()
    a = LeaseElector(api, "ns", "a", duration=15, renew_every=5)  # type: ignore[arg-type]
    b = LeaseElector(api, "ns", "b", duration=15, renew_every=5)  # type: ignore[arg-type]
    await a._round()
    await b._round()
    assert a.holds() and not b.holds()
    await a._round()  # a renews
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] == "a"
    # a stops renewing: once its renewTime is older than the duration, b takes over.
    stale = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=20)
    api.lease["spec"]["renewTime"] = lease_mod._micro(stale)
    await b._round()
    assert b.holds() and api.lease["spec"]["holderIdentity"] == "b"
    assert api.lease["spec"]["leaseTransitions"] == 1
    await a._round()
    assert not a.leader


async def test_a_lost_race_is_not_a_win() -> None:
    api = LeaseApi()
    a = LeaseElector(api, "ns", "a")  # type: ignore[arg-type]
    await a._round()
    api.lease["spec"]["holderIdentity"] = None  # type: ignore[index]  # released
    b = LeaseElector(api, "ns", "b")  # type: ignore[arg-type]
    api.race = True
    await b._round()
    assert not b.leader
