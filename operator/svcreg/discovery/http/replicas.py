"""The discovery replicas a process asks for their part of ``GET /v1/consumers``.

Each replica remembers only its own callers; the operator (or any process given
``--consumer-replica``) merges their answers into its own, so one question covers the whole
Deployment. A replica is a URL; a host name that resolves to several addresses (a headless
Service of the replicas) stands for each of them, resolved on every question, so replicas that
come and go are followed without a watch.

Each replica is asked with the caller's own token (so it authorizes exactly as here), at most
``MAX_REPLICAS`` of them, concurrently, each within ``REPLICA_TIMEOUT``; a replica that does not answer
200 in time is counted as not answered, never waited for.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from svcreg.core.hosts import authority
from svcreg.members.client import MemberClient, MemberUnreachable

logger = logging.getLogger(__name__)
MAX_REPLICAS = 64
REPLICA_TIMEOUT = 2.0


@dataclass(frozen=True)
class ReplicaAnswers:
    asked: int
    answered: int
    consumers: list[list[dict[str, Any]]]


@dataclass
class Replicas:
    urls: tuple[str, ...]
    ca_file: str | None = None

    def __post_init__(self) -> None:
        self.client = MemberClient(ca_file=self.ca_file, timeout=REPLICA_TIMEOUT, limit=MAX_REPLICAS)

    async def _expand(self, url: str) -> list[tuple[str, str]]:
        """(URL to connect to, host name to verify TLS against) for each address ``url`` names."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
            return [(url.rstrip("/"), host)]
        except ValueError:
            pass
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            logger.warning("replica %s does not resolve: %s", url, error)
            return []
        addresses = sorted({str(info[4][0]) for info in found})
        return [
            (
                urlunsplit((parts.scheme, authority(a, port), parts.path, "", "")).rstrip("/"),
                host,
            )
            for a in addresses
        ]

    async def consumers(self, authorization: str, params: dict[str, str]) -> ReplicaAnswers:
        targets: list[tuple[str, str]] = []
        for url in self.urls:
            targets.extend(await self._expand(url))
        targets = targets[:MAX_REPLICAS]

        async def ask(url: str, host: str) -> list[dict[str, Any]] | None:
            try:
                answer = await self.client.call(
                    "GET",
                    url + "/v1/consumers",
                    params={**params, "scope": "local"},
                    headers={"Authorization": authorization},
                    server_name=host,
                )
            except MemberUnreachable as error:
                logger.info("replica %s did not answer: %s", url, error.reason)
                return None
            body = answer.json() if answer.status == 200 else None
            found = body.get("consumers") if isinstance(body, dict) else None
            return found if isinstance(found, list) else None

        answers = await asyncio.gather(*(ask(url, host) for url, host in targets))
        got = [a for a in answers if a is not None]
        return ReplicaAnswers(asked=len(targets), answered=len(got), consumers=got)

    async def close(self) -> None:
        await self.client.close()
