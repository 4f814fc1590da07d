"""``svcreg ui``: the dashboard in a browser, signed in with a short-lived token, the token never
in a URL.

A loopback proxy carries the token: ``svcreg ui`` listens on 127.0.0.1, forwards the page and
discovery's GET routes to the discovery URL with ``Authorization: Bearer`` added, and opens the
browser at a one-time sign-in link. The link holds a random code, not the token; the code is
exchanged once for an HttpOnly, SameSite=Strict cookie, and every request without that cookie
gets 401, so neither another local user nor a page of another origin can borrow the proxy. The
page finds itself signed in (its first ``/v1/stats`` answers 200) and never sees the token.

Where the token comes from, first match wins:

1. ``--token``, ``--token-file`` or ``SVCREG_TOKEN``: used as it is;
2. ``--service-account NAMESPACE/NAME``: a TokenRequest of the current kubeconfig user for that
   ServiceAccount, for ``TOKEN_SECONDS`` (the API server's minimum), renewed before it expires;
3. the current kubeconfig user's own bearer token; when it is a ServiceAccount's, it is first
   exchanged for a short-lived one of the same ServiceAccount where the cluster allows it (the
   user may create its own ``serviceaccounts/token``), else used as it is.

A kubeconfig user who signs in with a client certificate has no token discovery could review:
``svcreg ui`` says so and asks for ``--service-account``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import json
import os
import secrets
import ssl
import sys
import time
import webbrowser
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from svcreg.core.keys import Key

if TYPE_CHECKING:
    from svcreg.kube.api import KubeApi

TOKEN_SECONDS = 600  # the shortest lifetime the API server grants a requested token
RENEW_BEFORE = 120.0  # ask for a new token this long before the current one expires
COOKIE = "svcreg-ui"
# What the page needs and nothing else: the dashboard itself and discovery's reads.
FORWARDED_PREFIXES = ("/ui/", "/v1/")
FORWARDED_REQUEST_HEADERS = ("Accept", "If-None-Match", "Last-Event-ID", "X-Request-Id")
KEPT_RESPONSE_HEADERS = (
    "Content-Type",
    "ETag",
    "Cache-Control",
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "X-Frame-Options",
    "X-Svcreg-Index",
    "Retry-After",
)

TokenSource = Callable[[], Awaitable[str]]


class UiError(Exception):
    """Why ``svcreg ui`` cannot sign in; printed without a traceback."""


def _claims(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified: only to learn which ServiceAccount a token names."""
    try:
        payload = token.split(".")[1]
        decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return decoded
    except (IndexError, ValueError, binascii.Error):
        return {}


def service_account_of(token: str) -> Key | None:
    """(namespace, name) of the ServiceAccount a token was issued to, if it says so."""
    subject = str(_claims(token).get("sub", ""))
    parts = subject.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return parts[2], parts[3]
    return None


@dataclass
class RequestedToken:
    """A ServiceAccount's token from the TokenRequest API, renewed ``RENEW_BEFORE`` its expiry."""

    kube: KubeApi
    namespace: str
    name: str
    audiences: list[str]
    seconds: int = TOKEN_SECONDS
    _token: str = ""
    _renew_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def __call__(self) -> str:
        async with self._lock:
            if not self._token or time.monotonic() >= self._renew_at:
                self._token = await self._request()
                self._renew_at = time.monotonic() + max(1.0, self.seconds - RENEW_BEFORE)
            return self._token

    async def _request(self) -> str:
        # Imported here, not at module level: the kubernetes package reads KUBECONFIG when it is
        # imported, and building svcreg's CLI must not freeze it before svcreg dev sets it.
        from svcreg.kube import errors as kube_errors  # noqa: PLC0415

        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": self.audiences, "expirationSeconds": self.seconds},
        }
        path = f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{self.name}/token"
        try:
            answer = await self.kube.call("POST", path, json=body)
        except (kube_errors.KubeApiError, kube_errors.Unreachable) as error:
            raise UiError(
                f"cannot request a token for ServiceAccount {self.namespace}/{self.name}: {error}"
            ) from error
        token: str = answer.json()["status"]["token"]
        return token


def _fixed(token: str) -> TokenSource:
    async def source() -> str:
        return token

    return source


def given_token(args: argparse.Namespace) -> str | None:
    """A token given outright (``--token``, ``--token-file``, ``SVCREG_TOKEN``), if any."""
    if args.token:
        return str(args.token)
    if args.token_file:
        return Path(args.token_file).read_text().strip()
    return os.environ.get("SVCREG_TOKEN") or None


async def token_source(
    args: argparse.Namespace, given: str | None, kube: Callable[[], KubeApi]
) -> TokenSource:
    """The token the proxy signs in with, chosen as the module docstring says."""
    if given:
        return _fixed(given)
    audiences = args.audience or ["svcreg"]
    if args.service_account:
        namespace, _, name = args.service_account.partition("/")
        if not namespace or not name:
            raise UiError(f"--service-account: {args.service_account!r} is not NAMESPACE/NAME")
        requested = RequestedToken(kube(), namespace, name, audiences)
        await requested()  # fail now, with the API server's reason, not in the browser
        return requested
    api = kube()
    authorization = api.configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    if not authorization:
        raise UiError(
            "the current kubeconfig user has no bearer token (a client certificate, say), which "
            "discovery cannot review: pass --service-account NAMESPACE/NAME to sign in as a "
            "ServiceAccount you may create tokens for, or --token"
        )
    own = authorization.removeprefix("Bearer ").strip()
    account = service_account_of(own)
    if account is not None:
        shorter = RequestedToken(api, *account, audiences)
        try:
            await shorter()
            return shorter
        except UiError:
            pass  # the cluster does not let it mint its own: use the token it has
    return _fixed(own)


@dataclass
class UiProxy:
    """The loopback proxy: one-time sign-in code, session cookie, GET-only forwarding."""

    upstream: str
    token: TokenSource
    ssl_context: ssl.SSLContext | None = None
    code: str | None = field(default_factory=lambda: secrets.token_urlsafe(32))
    session_id: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    _client: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/sign-in/{code}", self.sign_in)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _app: web.Application) -> None:
        if self._client is not None:
            await self._client.close()

    async def sign_in(self, request: web.Request) -> web.Response:
        code = request.match_info["code"]
        if self.code is None or not hmac.compare_digest(code, self.code):
            return web.json_response(
                {"error": {"code": "Forbidden", "message": "this sign-in link was used already"}}, status=403
            )
        self.code = None  # one browser, once
        response = web.HTTPFound("/ui/")
        response.set_cookie(COOKIE, self.session_id, httponly=True, samesite="Strict", path="/")
        raise response

    async def forward(self, request: web.Request) -> web.StreamResponse:
        cookie = request.cookies.get(COOKIE, "")
        if not hmac.compare_digest(cookie, self.session_id):
            return web.json_response(
                {"error": {"code": "Unauthorized", "message": "open the sign-in link svcreg ui printed"}},
                status=401,
            )
        if request.method != "GET":
            return web.json_response(
                {"error": {"code": "MethodNotAllowed", "message": "the dashboard only reads"}},
                status=405,
                headers={"Allow": "GET"},
            )
        path = request.path if request.path != "/" else "/ui/"
        if path == "/ui":
            path = "/ui/"
        if not path.startswith(FORWARDED_PREFIXES):
            return web.json_response(
                {"error": {"code": "NotFound", "message": f"no route {path}"}}, status=404
            )
        headers = {
            name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers
        }
        headers["Authorization"] = f"Bearer {await self.token()}"
        if self._client is None:
            # Bounded like every pool of svcreg's: one viewer needs a handful of connections.
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=16, ssl=self.ssl_context if self.ssl_context else True),
                timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=None),
            )
        async with self._client.get(
            self.upstream + path, params=request.rel_url.query, headers=headers, allow_redirects=False
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={
                    name: upstream.headers[name] for name in KEPT_RESPONSE_HEADERS if name in upstream.headers
                },
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (ConnectionResetError, aiohttp.ClientError):
                pass  # either side went away: the stream is over
            return response


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="discovery URL (default $SVCREG_URL)")
    parser.add_argument("--token", help="sign in with this token (default $SVCREG_TOKEN)")
    parser.add_argument("--token-file", help="sign in with the token in this file")
    parser.add_argument(
        "--service-account",
        metavar="NAMESPACE/NAME",
        help="sign in as this ServiceAccount with a 10-minute token requested by the kubeconfig user",
    )
    parser.add_argument(
        "--audience", action="append", help="audience of requested tokens (default svcreg; repeatable)"
    )
    parser.add_argument("--ca-file", help="CA bundle of an HTTPS discovery URL (default $SVCREG_CA_FILE)")
    parser.add_argument("--port", type=int, default=0, help="loopback port (default: any free one)")
    parser.add_argument("--no-browser", action="store_true", help="print the sign-in link, open nothing")


async def _serve(args: argparse.Namespace, given: str | None) -> int:
    upstream = (args.url or os.environ.get("SVCREG_URL") or "").rstrip("/")
    if not upstream:
        raise UiError(
            "no discovery URL: pass --url or set SVCREG_URL (from outside the cluster, for example "
            "kubectl port-forward -n svcreg svc/svcreg 8080:80, then --url http://127.0.0.1:8080)"
        )
    ca_file = args.ca_file or os.environ.get("SVCREG_CA_FILE")
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    kube: KubeApi | None = None

    def make_kube() -> KubeApi:
        from svcreg.kube.api import KubeApi  # noqa: PLC0415 - see RequestedToken._request

        nonlocal kube
        kube = kube or KubeApi()
        return kube

    try:
        proxy = UiProxy(upstream, await token_source(args, given, make_kube), context)
        runner = web.AppRunner(proxy.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        await site.start()
        port = runner.addresses[0][1]
        link = f"http://127.0.0.1:{port}/sign-in/{proxy.code}"
        print(f"svcreg ui: the dashboard of {upstream} at http://127.0.0.1:{port}/ui/", flush=True)
        print(f"svcreg ui: sign in once with {link}", flush=True)
        if not args.no_browser:
            webbrowser.open(link)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
    finally:
        if kube is not None:
            await kube.close()
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_serve(args, given_token(args)))
    except UiError as error:
        print(f"svcreg ui: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
