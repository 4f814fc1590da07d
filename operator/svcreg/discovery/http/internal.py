"""Routes between members of the prober group, not part of the public API."""

from __future__ import annotations

from aiohttp import web

from svcreg.core.refusals import Forbidden, NotFound
from svcreg.discovery.http.discovery import DISCOVERY_KEY
from svcreg.discovery.http.serving import Serving
from svcreg.discovery.index import dumps


async def vantage(request: web.Request) -> web.Response:
    """``POST /internal/v1/vantage/{namespace}/{name}``: a member of the prober group asks what
    this member's own probe of a registration sees now (quorum). Members only: the caller's
    token must be the operator's own identity."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    probing = request.app[DISCOVERY_KEY].probing
    group = probing.group if probing is not None else None
    if group is None or group.username is None:
        raise NotFound("NotAMember", "this process is not a member of a prober group")
    identity = await group.auth.identify(request.headers.get("Authorization"), request.remote)
    if identity.username != group.username:
        raise Forbidden("NotAMember", f"{identity.username} is not a member of the prober group")
    instances = await group.vantage((namespace, name))
    if instances is None:
        raise NotFound("NotFound", f"no registration {namespace}/{name}")
    return web.Response(body=dumps({"instances": instances}), content_type="application/json")


def add_routes(app: web.Application, serving: Serving) -> None:
    serving.add(app, "POST", "/internal/v1/vantage/{namespace}/{name}", vantage)
