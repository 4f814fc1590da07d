"""Discovery's HTTP server, the same in every mode: the aiohttp app behind the front.

Repeated lookups are answered by the front on the connection; everything else, and every
connection after its first request the front declines, by aiohttp (discovery/http/front.py).
With --no-fast-lookups (or --access-log) the front answers nothing and hands every connection
to aiohttp at once, still counted against --max-connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from svcreg.discovery.http.app import build_app, runner
from svcreg.discovery.http.discovery import Discovery
from svcreg.discovery.http.front import Front
from svcreg.discovery.http.tls import ServingTls
from svcreg.main.mode import Mode, Shared


class HttpServer:
    """Discovery's listener, with the readiness and liveness of ``mode``."""

    def __init__(self, shared: Shared, discovery: Discovery, mode: Mode) -> None:
        self.settings = settings = shared.settings
        self.discovery = discovery
        self.runner = runner(
            build_app(
                shared.metrics,
                mode.ready,
                discovery,
                registration_api=settings.registration_api,
                alive=mode.alive,
                access_log=settings.access_log,
            )
        )
        self.tls = (
            ServingTls(settings.tls_cert_file, settings.tls_key_file)
            if settings.tls_cert_file and settings.tls_key_file
            else None
        )
        self.front: Front | None = None
        self.listener: asyncio.Server | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.settings.host}:{self.settings.port}"

    async def start(self) -> None:
        await self.runner.setup()
        assert self.runner.server is not None
        self.front = Front(
            self.discovery,
            self.runner.server,
            max_connections=self.settings.max_connections,
            answers=self.settings.fast_lookups,
        )
        self.listener = await asyncio.get_running_loop().create_server(
            self.front.protocol,
            host=self.settings.host,
            port=self.settings.port,
            ssl=self.tls.context if self.tls else None,
            backlog=128,
            reuse_address=True,
        )

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """The serving certificate, reloaded as it changes."""
        return [self.tls.watch()] if self.tls is not None else []

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.front is not None:
            self.front.close()
        await self.runner.cleanup()
