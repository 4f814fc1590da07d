"""The one HTTP client svcreg processes use to call each other.

Who is called: another member of the prober group (a vantage probe, a relayed write), the
operator a discovery-only replica relays to, the replicas whose consumer logs are merged. Every
such call carries a caller's or svcreg's own ServiceAccount token, verifies TLS against
``--operator-ca-file`` when one is given (and against ``server_name`` rather than the address,
since members are dialled by pod IP), and is bounded: one pool of ``limit`` connections per
client and a deadline on every call. A call that gets no answer raises ``MemberUnreachable``
saying why; an answer of any status is returned as it is, for the caller to judge.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp


class MemberUnreachable(Exception):
    """No answer from another svcreg process: refused, reset, timed out, or TLS failed."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


@dataclass(frozen=True)
class MemberAnswer:
    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class MemberClient:
    """A bounded pool of connections to other svcreg processes (see the module's contract)."""

    def __init__(
        self,
        *,
        ca_file: str | None = None,
        server_name: str | None = None,
        timeout: float = 30.0,
        limit: int = 100,
    ) -> None:
        self.ca_file, self.server_name, self.timeout, self.limit = ca_file, server_name, timeout, limit
        self._session: aiohttp.ClientSession | None = None

    async def call(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        deadline: float | None = None,
        server_name: str | None = None,
    ) -> MemberAnswer:
        """``method url`` with ``headers`` (the caller's Authorization among them); TLS is
        verified against ``server_name``, else the client's, else the URL's host; ``deadline``
        (seconds) replaces the client's own for this call."""
        name = (server_name or self.server_name) if url.startswith("https:") else None
        bound = aiohttp.ClientTimeout(total=deadline) if deadline is not None else None
        try:
            async with self._client().request(
                method,
                url,
                headers=headers,
                params=params,
                data=body,
                timeout=bound,
                server_hostname=name,
            ) as answer:
                return MemberAnswer(answer.status, await answer.read())
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as error:
            raise MemberUnreachable(url, str(error) or type(error).__name__) from error

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            trust: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
            )
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(ssl=trust, limit=self.limit),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
