"""An HTTP-aware fault-injecting proxy in front of the real kube-apiserver.

The API server stays real: this proxy forwards every request to it (as the control plane's
admin, over TLS) and answers chosen ones with a fault instead, so integration tests can show
what svcreg does when a status PATCH fails, a review hangs, or a watch goes silent.

    proxy = FaultProxy(cluster)                       # serves plain HTTP on loopback
    env = proxy.env(tmp_path)                         # KUBECONFIG pointing at the proxy
    proxy.inject(Fault("PATCH", r"/status$", "503", times=2))

Faults: ``"503"``, ``"409"``, ``"429"`` (a Kubernetes Status answer with that code), ``"hang"``
(accept, never answer), ``"stall"`` (forward the response head, then forward nothing more:
a watch that keeps its connection and delivers nothing), ``"reset"`` (close the connection).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from svcreg.devtools.controlplane.cluster import Cluster

_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}


@dataclass
class Fault:
    method: str | None  # None: any method
    path: str  # a regular expression searched in the path
    action: str
    times: int = 1  # how many matching requests it applies to; -1 until cleared
    query: str = ""  # a regular expression searched in the query string
    hits: int = field(default=0, compare=False)

    def matches(self, request: web.Request) -> bool:
        if self.times != -1 and self.hits >= self.times:
            return False
        if self.method is not None and request.method != self.method:
            return False
        return bool(re.search(self.path, request.path)) and bool(re.search(self.query, request.query_string))


class FaultProxy:
    def __init__(self, cluster: Cluster) -> None:
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=cluster.kubeconfig, client_configuration=configuration)
        self.upstream = configuration.host.rstrip("/")
        self._ssl = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        self._ssl.load_cert_chain(configuration.cert_file, configuration.key_file)
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._started.wait(10)

    # -- control, from the test's thread -------------------------------------------------------

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return sum(1 for m, p in self.seen if m == method and re.search(path, p))

    def env(self, directory: Path, base: dict[str, str]) -> dict[str, str]:
        """``base`` with KUBECONFIG pointing at this proxy (no credentials: it adds them)."""
        kubeconfig = directory / "proxied-kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
                    "users": [{"name": "proxy", "user": {}}],
                    "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
                    "current-context": "proxy",
                }
            )
        )
        return {**base, "KUBECONFIG": str(kubeconfig)}

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- the proxy, on its own loop --------------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._open_session())
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._started.set()
        self._loop.run_forever()

    async def _open_session(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    def _match(self, request: web.Request) -> Fault | None:
        with self._lock:
            self.seen.append((request.method, request.path))
            for fault in self.faults:
                if fault.matches(request):
                    fault.hits += 1
                    return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._match(request)
        if fault is not None and fault.action.isdigit():
            code = int(fault.action)
            reason = {409: "Conflict", 429: "TooManyRequests", 503: "ServiceUnavailable"}.get(code, "Fault")
            body: dict[str, Any] = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": f"injected {code}",
                "reason": reason,
                "code": code,
            }
            return web.json_response(body, status=code)
        if fault is not None and fault.action == "hang":
            await asyncio.sleep(3600)
        if fault is not None and fault.action == "reset":
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError("injected reset")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        data = await request.read() if request.can_read_body else None
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=data, headers=headers
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP},
            )
            await response.prepare(request)
            if fault is not None and fault.action == "stall":
                await asyncio.sleep(3600)  # the connection stays; nothing more is forwarded
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
