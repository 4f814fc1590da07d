"""An open ``/v1/watch`` over real HTTP, with the API server's reviews answered in process."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from svcreg.discovery.http.app import build_app
from svcreg.discovery.http.auth import Authorizer
from svcreg.discovery.http.discovery import Discovery
from svcreg.discovery.index import Index
from svcreg.kube.api import Response
from svcreg.telemetry.metrics import Metrics
from tests.unit.test_discovery_units import FakeApi, body


def jwt(expires: float) -> str:
    """A token shaped like a ServiceAccount token, expiring at ``expires`` (wall clock)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'exp': int(expires), 'sub': 'a:r'})}.signature"


class JwtApi(FakeApi):
    """Accepts every JWT-shaped token, as the API server accepts a valid one."""

    async def request(self, method: str, path: str, *, json: Any = None, **kwargs: Any) -> Response:
        if path.endswith("tokenreviews") and json["spec"]["token"].count(".") == 2:
            json = {**json, "spec": {**json["spec"], "token": "good"}}
        return await super().request(method, path, json=json, **kwargs)


async def test_a_watch_ends_when_the_token_it_was_opened_with_expires() -> None:
    index = Index()
    index.observe("ADDED", body("r1"))
    index.synced = True
    metrics = Metrics()
    discovery = Discovery(index, Authorizer(JwtApi(), metrics=metrics), metrics)  # type: ignore[arg-type]
    app = build_app(metrics, lambda: (True, {}), discovery, registration_api=False)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/v1/watch", headers={"Authorization": f"Bearer {jwt(time.time() + 2)}"})
        assert response.status == 200
        exposed = await (await client.get("/metrics")).text()
        assert "svcreg_watch_streams 1.0" in exposed  # what an operator of svcreg sees
        assert re.search(r"^svcreg_asyncio_tasks [1-9]", exposed, re.M)
        async with asyncio.timeout(20):  # keep-alives come every 15 s; expiry ends it first
            received = await response.content.read()  # returns at the end of the stream
        assert received.startswith(b": svcreg watch from index")
        assert discovery.watchers.held == 0
