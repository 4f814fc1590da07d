"""The dashboard's files as served, and the ``svcreg ui`` proxy in front of a stand-in upstream."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from svcreg.devtools import ui as ui_proxy
from svcreg.discovery.http import ui
from svcreg.discovery.http.serving import Serving
from svcreg.telemetry.metrics import Metrics


def test_every_file_the_page_loads_is_shipped() -> None:
    """index.html refers to exactly the files served; a renamed file would be a 404 in the
    browser, so this fails first."""
    files = ui.load()
    page = files["index.html"].decode()
    assert 'src="/ui/app.js"' in page and 'href="/ui/app.css"' in page
    assert set(files) == {"index.html", "app.js", "app.css"}
    script = files["app.js"].decode()
    # Tenant-written fields are rendered as text: the script never assigns markup.
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script
    assert "sessionStorage" in script and "localStorage" not in script


async def test_files_carry_the_strict_policy_and_nothing_else_is_served() -> None:
    app = web.Application()
    serving = Serving(Metrics())
    ui.add_routes(app, serving)
    serving.finish(app)
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/ui/")
        assert page.status == 200 and page.headers["Content-Security-Policy"] == ui.CONTENT_SECURITY_POLICY
        assert page.headers["Content-Type"].startswith("text/html")
        script = await client.get("/ui/app.js")
        assert script.headers["Content-Type"].startswith("text/javascript")
        assert (await client.get("/ui/app.py")).status == 404
        assert (await client.get("/ui/%2e%2e%2fsecret")).status == 404
        moved = await client.get("/ui", allow_redirects=False)
        assert moved.status == 302 and moved.headers["Location"] == "/ui/"


def _jwt(claims: dict[str, Any]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{payload}.sig"


def test_service_account_of_a_token() -> None:
    assert ui_proxy.service_account_of(_jwt({"sub": "system:serviceaccount:team-a:viewer"})) == (
        "team-a",
        "viewer",
    )
    assert ui_proxy.service_account_of(_jwt({"sub": "alice"})) is None
    assert ui_proxy.service_account_of("opaque-token") is None


@pytest.fixture
async def proxied() -> AsyncIterator[
    tuple[TestClient[web.Request, web.Application], ui_proxy.UiProxy, list[Any]]
]:
    seen: list[Any] = []

    async def upstream_handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.path_qs, request.headers.get("Authorization")))
        return web.json_response({"items": []}, headers={"ETag": '"1"', "Set-Cookie": "leak=1"})

    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", upstream_handler)
    async with TestServer(upstream_app) as upstream:

        async def token() -> str:
            return "the-token"

        proxy = ui_proxy.UiProxy(str(upstream.make_url("")).rstrip("/"), token)
        async with TestClient(TestServer(proxy.app())) as client:
            yield client, proxy, seen


async def test_proxy_lends_its_token_only_to_the_signed_in_browser(
    proxied: tuple[TestClient[web.Request, web.Application], ui_proxy.UiProxy, list[Any]],
) -> None:
    client, proxy, seen = proxied
    assert (await client.get("/v1/services")).status == 401 and seen == []
    code = proxy.code
    signed_in = await client.get(f"/sign-in/{code}", allow_redirects=False)
    assert signed_in.status == 302 and signed_in.headers["Location"] == "/ui/"
    cookie = signed_in.cookies[ui_proxy.COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    # Once only: a second use of the link is refused.
    assert (await client.get(f"/sign-in/{code}", allow_redirects=False)).status == 403
    answer = await client.get("/v1/services?health=any")
    assert answer.status == 200 and answer.headers["ETag"] == '"1"' and "Set-Cookie" not in answer.headers
    assert seen == [("GET", "/v1/services?health=any", "Bearer the-token")]
    # Reads only, and only the page and discovery's routes.
    assert (await client.post("/v1/heartbeat/a/b")).status == 405
    assert (await client.get("/metrics")).status == 404
    assert len(seen) == 1
