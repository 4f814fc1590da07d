"""The write routes' shared opening step, and the ttl heartbeat and passive-health report routes.

Every write (these two and the registration API in ``registrations``) opens the same way:
the target's name is checked, the caller identified from its token and charged one request of
its rate (``open_write``); then it is authorized for the verb it performs (``Write.require``),
relayed when this process cannot take it (``Write.elsewhere``: a discovery-only replica sends it
to the operator) or another member of the prober group owns the target (``Write.to_owner``),
and its body validated by the models. The doors of other registries open the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web

from svcreg.core import wire
from svcreg.core.errors import BadParameter
from svcreg.core.keys import Key
from svcreg.core.refusals import Conflict, NotFound, Refusal, TooManyRequests
from svcreg.discovery.http.auth import Identity
from svcreg.discovery.http.bodies import parse_model
from svcreg.discovery.http.discovery import DISCOVERY_KEY, Discovery
from svcreg.discovery.http.serving import Serving
from svcreg.discovery.index import Entry, dumps

MAX_BODY = 4096  # bytes of a heartbeat or report body
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class Write:
    """A write request past its opening step: whose, on what, by whom."""

    request: web.Request
    discovery: Discovery
    key: Key
    identity: Identity

    async def require(self, verb: str) -> None:
        """Forbidden unless the caller may ``verb`` the target."""
        await self.discovery.auth.require(self.identity, verb, *self.key)

    async def elsewhere(self, code: str, message: str) -> web.Response:
        """Relayed as it came to the operator (a discovery-only replica), or Unavailable."""
        return await self.discovery.elsewhere(self.request, code, message)

    def owner(self) -> str | None:
        """The member of the prober group that owns the target, when it is not this one."""
        return self.discovery.owner_of(self.request, self.key)

    async def to_owner(self, owner: str) -> web.Response:
        return await self.discovery.forward(self.request, owner)

    def known(self) -> Entry:
        """The target's entry in discovery's index; NotFound when it has none."""
        item = self.discovery.index.items.get(self.key)
        if item is None:
            raise NotFound("NotFound", f"no registration {self.key[0]}/{self.key[1]}")
        return item

    async def small_body(self) -> bytes | None:
        """The body, at most ``MAX_BODY`` bytes; None when there is none."""
        if not self.request.can_read_body:
            return None
        if (self.request.content_length or 0) > MAX_BODY:
            raise BadParameter("body", f"at most {MAX_BODY} bytes")
        return await self.request.read()


def check_name(kind: str, value: str) -> None:
    """BadParameter naming ``kind`` unless ``value`` is a lowercase DNS name."""
    if not _DNS_NAME.match(value):
        raise BadParameter(kind, "must be a lowercase DNS name")


async def open_write(request: web.Request) -> Write:
    """The opening every write shares: the target named by the route (names checked), the
    caller identified and charged its rate (over it: TooManyRequests before any review)."""
    discovery = request.app[DISCOVERY_KEY]
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    check_name("namespace", namespace)
    check_name("name", name)
    identity = await discovery.auth.identify(request.headers.get("Authorization"), request.remote)
    discovery.admit(request, identity)
    return Write(request, discovery, (namespace, name), identity)


async def heartbeat(request: web.Request) -> web.Response:
    """A ttl heartbeat, counted as accepted or refused (svcreg_heartbeats_total)."""
    counter = request.app[DISCOVERY_KEY].metrics.heartbeats
    try:
        response = await _heartbeat(await open_write(request))
    except (Refusal, BadParameter):
        counter.inc(("refused",))
        raise
    counter.inc(("accepted",) if response.status == 200 else ("refused",))
    return response


async def _heartbeat(write: Write) -> web.Response:
    await write.require("heartbeat")
    probing = write.discovery.probing
    if probing is None:
        return await write.elsewhere(
            "NotProber", "this replica serves discovery only; send heartbeats to the operator"
        )
    item = write.known()
    if item.check_type != "ttl":
        raise Conflict(
            "NotTtl",
            f"{write.key[0]}/{write.key[1]} has healthCheck.type {item.check_type}, not ttl: heartbeats "
            "would be ignored, so none is accepted",
        )
    raw = await write.small_body()
    body = parse_model(wire.HeartbeatBody, raw) if raw is not None else wire.HeartbeatBody()
    probing.heartbeats.record(write.key, body.status, body.note)
    owner = write.owner()
    if owner is not None:  # kept here too: this member may own it next
        return await write.to_owner(owner)
    answer = wire.HeartbeatAnswer(
        namespace=write.key[0], name=write.key[1], status=body.status, accepted=True
    )
    return web.Response(body=dumps(answer.model_dump(by_alias=True)), content_type="application/json")


async def report(request: web.Request) -> web.Response:
    """A caller's report of one real call to an instance (passive health): authorized by the verb
    ``report`` on the registration, rate-limited per identity, relayed to the operator by a
    replica. The caller is the token's identity, never something the body says."""
    write = await open_write(request)
    await write.require("report")
    probing = write.discovery.probing
    if probing is None:  # relayed as it came, the body unread
        return await write.elsewhere(
            "NotProber", "this replica serves discovery only; send reports to the operator"
        )
    raw = await write.small_body()
    body = parse_model(wire.ReportBody, raw or b"")
    wait = write.discovery.report_rates.take(write.identity.username)
    if wait:
        raise TooManyRequests(
            "TooManyReports", f"{write.identity.username} is over its report rate", retry_after=wait
        )
    write.known()
    owner = write.owner()
    if owner is not None:
        return await write.to_owner(owner)
    # Evidence counts per tenant: one tenant's several ServiceAccounts are one reporter.
    ejected = probing.reports.report(write.key, write.identity.tenant, body.outcome)
    answer = wire.ReportAnswer(namespace=write.key[0], name=write.key[1], accepted=True, ejected=ejected)
    return web.Response(
        status=202, body=dumps(answer.model_dump(by_alias=True)), content_type="application/json"
    )


def add_routes(app: web.Application, serving: Serving) -> None:
    serving.add(app, "POST", "/v1/heartbeat/{namespace}/{name}", heartbeat)
    serving.add(app, "POST", "/v1/report/{namespace}/{name}", report)
