"""Real local probe targets that tests can switch between behaviours.

Each server runs its own event loop in a thread, so synchronous integration tests and async
unit tests can both flip a target between healthy, failing, hanging, slow, resetting and lying,
while an operator (in-process or a subprocess) probes it over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from svcreg.devtools.controlplane import pki


class HttpTarget:
    """An HTTP server whose ``mode`` is one of ok, fail, hang, slow, reset, garbage."""

    def __init__(self, tls_dir: Path | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.mode = "ok"
        self.slow_seconds = 0.3
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._ssl: ssl.SSLContext | None = None
        if tls_dir is not None:
            keys = pki.generate(tls_dir)
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.load_cert_chain(keys.serving_cert, keys.serving_key)
            self.ca_file = keys.ca_cert
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(
                self._handle, self.host, self.port, ssl=self._ssl, backlog=1024, reuse_address=True
            )
        )
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        mode = self.mode
        try:
            if mode == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            await reader.readuntil(b"\r\n\r\n")
            if mode == "hang":
                await asyncio.sleep(3600)
            if mode == "slow":
                await asyncio.sleep(self.slow_seconds)
            if mode == "garbage":
                writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
            else:
                code = b"200 OK" if mode in ("ok", "slow") else b"503 Service Unavailable"
                writer.write(b"HTTP/1.1 " + code + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


class TcpListener:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


class GrpcTarget:
    """A gRPC server with the standard health service; ``set(status)`` changes its answer."""

    def __init__(self, tls_dir: Path | None = None) -> None:
        """With ``tls_dir``: served over TLS with a certificate of a fresh CA (``ca_file``)."""
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if tls_dir is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            keys = pki.generate(tls_dir)
            self.ca_file = keys.ca_cert
            credentials = grpc.ssl_server_credentials(
                [(keys.serving_key.read_bytes(), keys.serving_cert.read_bytes())]
            )
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()
        self.set(serving=True)

    def set(self, serving: bool, service: str = "") -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set(service, status)

    def close(self) -> None:
        self.server.stop(0)


def host_address() -> str:
    """A non-loopback IPv4 address of this machine (EndpointSlices refuse loopback)."""
    answer = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True, check=True
    )
    for interface in json.loads(answer.stdout):
        for info in interface.get("addr_info", []):
            if info.get("local"):
                return str(info["local"])
    raise RuntimeError("this machine has no non-loopback IPv4 address for EndpointSlice tests")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def http_target(tls_dir: Path | None = None, *, host: str = "127.0.0.1") -> Iterator[HttpTarget]:
    target = HttpTarget(tls_dir, host=host)
    try:
        yield target
    finally:
        target.close()


class AppTarget:
    """An aiohttp app in its own thread for client tests: /health is 200; /flaky answers 503
    ``fail_first`` times, then 200; /missing is 404; every answer names the target and each
    path's calls are counted. ``failing[path] = n`` makes the next n calls to a path answer 503
    (a negative n: every call); ``bodies[path]`` is a JSON document a path answers instead."""

    def __init__(self, name: str, fail_first: int = 0) -> None:
        from aiohttp import web  # noqa: PLC0415

        self.name, self.fail_first = name, fail_first
        self.calls: dict[str, int] = {}
        self.failing: dict[str, int] = {}
        self.bodies: dict[str, object] = {}
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def answer(request: web.Request) -> web.Response:
            path = request.path
            self.calls[path] = self.calls.get(path, 0) + 1
            left = self.failing.get(path, 0)
            if left:
                self.failing[path] = left - 1 if left > 0 else left
                return web.json_response({"target": self.name}, status=503)
            if path in self.bodies:
                return web.json_response(self.bodies[path])
            if path == "/missing":
                return web.json_response({"target": self.name}, status=404)
            if path == "/flaky" and self.calls[path] <= self.fail_first:
                return web.json_response({"target": self.name}, status=503)
            return web.json_response({"target": self.name, "path": path})

        async def start() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", answer)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = self._runner.addresses[0][1]

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
