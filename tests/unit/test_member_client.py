"""The one client between svcreg's processes: answers as they are, no answer as a typed error."""

from __future__ import annotations

import socket

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from svcreg.members.client import MemberClient, MemberUnreachable


async def test_an_answer_of_any_status_is_returned_and_no_answer_is_a_typed_refusal() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"who": request.headers["Authorization"]}, status=409)

    app = web.Application()
    app.router.add_post("/v1/x", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = MemberClient(timeout=2)
    try:
        url = str(server.make_url("/v1/x"))
        answer = await client.call("POST", url, headers={"Authorization": "Bearer t"})
        assert (answer.status, answer.json()) == (409, {"who": "Bearer t"})
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        with pytest.raises(MemberUnreachable) as refused:
            await client.call("GET", f"http://127.0.0.1:{port}/", headers={})
        assert refused.value.url.endswith(f":{port}/") and refused.value.reason
    finally:
        await client.close()
        await server.close()
