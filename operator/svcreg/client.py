"""Discovery clients for Python callers: sync (``DiscoveryClient``) and async
(``AsyncDiscoveryClient``), on httpx.

In a pod they need no arguments: the URL comes from ``SVCREG_URL`` (or the chart's in-cluster
Service name), the token from the mounted ServiceAccount token file, re-read when the kubelet
rotates it. Outside a cluster, pass ``base_url`` and ``token`` or set ``SVCREG_URL`` and
``SVCREG_TOKEN`` (``svcreg dev`` prints both).

The two classes share everything but I/O: parameters, parsing, errors and the retry plan live
in plain functions here, so the sync and async paths cannot drift apart.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://svcreg.svcreg-system.svc:8080"
TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


# --- errors ---------------------------------------------------------------------------------------


class SvcregError(Exception):
    """Base of every error the client raises."""


class ApiError(SvcregError):
    """The discovery endpoint answered with an error: ``status``, ``code`` and ``message`` are
    its own (``{"error": {"code", "message"}}``)."""

    def __init__(self, status: int, code: str, message: str, parameter: str | None = None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message, self.parameter = status, code, message, parameter


class Unauthorized(ApiError):
    """401: no token, a malformed or expired one, or one with the wrong audience."""


class Forbidden(ApiError):
    """403: RBAC lets the caller read nothing there (or not send this heartbeat)."""


class BadRequest(ApiError):
    """400: ``parameter`` names what was wrong."""


class NotFound(ApiError):
    """404: no such registration."""


class UnknownCapability(SvcregError, LookupError):
    """No readable registration provides the capability at all."""

    def __init__(self, capability: str) -> None:
        super().__init__(f"unknown capability {capability!r}: no registration provides it")
        self.capability = capability


class NoHealthyInstance(SvcregError, LookupError):
    """The capability exists, but no instance is healthy, matching and weighted above 0."""

    def __init__(self, capability: str, version: str | None = None) -> None:
        wanted = f" (version {version})" if version else ""
        super().__init__(f"no healthy instance provides capability {capability!r}{wanted}")
        self.capability, self.version = capability, version


class AllInstancesFailed(SvcregError):
    """``request`` tried every instance it was allowed to and none answered without a
    connection error, timeout or 5xx. ``last`` is the final response, if there was one."""

    def __init__(self, capability: str, attempts: int, last: httpx.Response | None, error: Exception | None):
        reason = f"HTTP {last.status_code}" if last is not None else repr(error)
        super().__init__(f"capability {capability!r}: {attempts} attempts failed; last: {reason}")
        self.capability, self.attempts, self.last, self.error = capability, attempts, last, error


_ERRORS: dict[int, type[ApiError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound}


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    kind = _ERRORS.get(response.status_code, ApiError)
    raise kind(
        response.status_code,
        str(error.get("code") or response.reason_phrase),
        str(error.get("message") or response.text[:300]),
        error.get("parameter"),
    )


# --- typed results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capability:
    name: str
    version: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Instance:
    """A registration as discovery serves it."""

    namespace: str
    name: str
    service: str
    version: str | None
    endpoint: str | None
    capabilities: tuple[Capability, ...]
    tags: tuple[str, ...]
    metadata: Mapping[str, str]
    weight: int
    health: str
    ready: bool
    maintenance: bool = False
    addresses: tuple[tuple[str, int, str], ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> Instance:
        return cls(
            namespace=str(doc["namespace"]),
            name=str(doc["name"]),
            service=str(doc.get("service") or doc["name"]),
            version=doc.get("version"),
            endpoint=doc.get("endpoint"),
            capabilities=tuple(Capability(**c) for c in doc.get("capabilities") or ()),
            tags=tuple(doc.get("tags") or ()),
            metadata=dict(doc.get("metadata") or {}),
            weight=int(doc.get("weight", 100)),
            health=str(doc.get("health") or "Unknown"),
            ready=bool(doc.get("ready")),
            maintenance=bool(doc.get("maintenance")),
            addresses=tuple(
                (str(i["address"]), int(i["port"]), str(i["health"])) for i in doc.get("instances") or ()
            ),
            raw=dict(doc),
        )

    @property
    def url(self) -> str:
        """Where to call it: the endpoint, or for a serviceRef registration its first healthy
        address."""
        if self.endpoint:
            return self.endpoint
        for address, port, health in self.addresses:
            if health in ("Healthy", "Degraded"):
                host = f"[{address}]" if ":" in address else address
                return f"http://{host}:{port}"
        raise NoHealthyInstance(self.capabilities[0].name if self.capabilities else self.name)


@dataclass(frozen=True)
class InstanceList:
    items: tuple[Instance, ...]
    index: int

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class CapabilitySummary:
    name: str
    versions: tuple[str, ...]
    instances: Mapping[str, int]
    total: int


@dataclass(frozen=True)
class Stats:
    total: int
    by_health: Mapping[str, int]
    services: int
    namespaces: int
    unique_capabilities: int
    capabilities_per_service: Mapping[str, int]


@dataclass(frozen=True)
class WatchEvent:
    """One server-sent event: registered, updated, deleted, health-changed, or reset (the
    client fell too far behind: list again)."""

    type: str
    index: int
    registration: Instance | None


@dataclass(frozen=True)
class Heartbeat:
    namespace: str
    name: str
    status: str
    accepted: bool


def _instances(body: Mapping[str, Any]) -> InstanceList:
    return InstanceList(tuple(Instance.parse(d) for d in body.get("items") or ()), int(body.get("index", 0)))


def _capabilities(body: Mapping[str, Any]) -> list[CapabilitySummary]:
    return [
        CapabilitySummary(
            c["name"], tuple(c.get("versions") or ()), dict(c.get("instances") or {}), c["total"]
        )
        for c in body.get("capabilities") or ()
    ]


def _stats(body: Mapping[str, Any]) -> Stats:
    return Stats(
        total=body["total"],
        by_health=dict(body.get("byHealth") or {}),
        services=body.get("services", 0),
        namespaces=body.get("namespaces", 0),
        unique_capabilities=body.get("uniqueCapabilities", 0),
        capabilities_per_service=dict(body.get("capabilitiesPerService") or {}),
    )


# --- parameters -----------------------------------------------------------------------------------


def query_params(
    *,
    service: str | None = None,
    namespace: str | None = None,
    capability: str | Sequence[str] | None = None,
    tag: str | Sequence[str] | None = None,
    version: str | None = None,
    health: str | None = None,
    meta: Mapping[str, str] | None = None,
) -> httpx.QueryParams:
    """Filters as the API spells them; repeatable ones accept a string or a list."""
    params: list[tuple[str, str | int | float | bool | None]] = []
    for key, value in (
        ("service", service),
        ("namespace", namespace),
        ("version", version),
        ("health", health),
    ):
        if value is not None:
            params.append((key, value))
    for key, values in (("capability", capability), ("tag", tag)):
        if values is not None:
            params.extend((key, v) for v in ([values] if isinstance(values, str) else values))
    params.extend((f"meta.{k}", v) for k, v in (meta or {}).items())
    return httpx.QueryParams(params)


def _path_part(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# --- configuration --------------------------------------------------------------------------------


class TokenSource:
    """A bearer token: fixed, or read from a file and re-read when the file changes (the kubelet
    rotates projected tokens by swapping a symlink, so the path's mtime moves)."""

    def __init__(self, token: str | None = None, token_file: str | os.PathLike[str] | None = None) -> None:
        self._fixed = token or os.environ.get("SVCREG_TOKEN") or None
        self._file = Path(token_file or os.environ.get("SVCREG_TOKEN_FILE") or TOKEN_FILE)
        self._cached: tuple[float, str] | None = None

    def get(self) -> str | None:
        if self._fixed:
            return self._fixed
        try:
            mtime = self._file.stat().st_mtime
        except OSError:
            return None
        if self._cached is None or self._cached[0] != mtime:
            self._cached = (mtime, self._file.read_text().strip())
        return self._cached[1]

    def headers(self) -> dict[str, str]:
        token = self.get()
        return {"Authorization": f"Bearer {token}"} if token else {}


def default_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("SVCREG_URL") or DEFAULT_URL).rstrip("/")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter between attempts; every attempt after a failure goes
    to an instance not yet tried while any is left."""

    attempts: int = 4
    base_delay: float = 0.1
    max_delay: float = 2.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


def weighted_order(items: Sequence[Instance], rng: random.Random | None = None) -> list[Instance]:
    """Instances in a random order where heavier ones tend to come first (weight 0 excluded):
    the first is the weighted pick, the rest are the failover order."""
    rng = rng or random.Random()
    # Efraimidis-Spirakis: sort by u ** (1 / w), a weighted sample without replacement.
    keyed = [(rng.random() ** (1.0 / i.weight), i) for i in items if i.weight > 0]
    return [i for _, i in sorted(keyed, key=lambda pair: pair[0], reverse=True)]


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/") if path else base


def _parse_sse(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    event: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            event[key] = value.removeprefix(" ")


def _watch_event(raw: Mapping[str, str]) -> WatchEvent:
    data = json.loads(raw["data"])
    registration = data.get("registration")
    return WatchEvent(
        type=raw.get("event") or data.get("type", "message"),
        index=int(data.get("index", raw.get("id", 0))),
        registration=Instance.parse(registration) if registration else None,
    )


def _heartbeat_body(status: str, note: str) -> dict[str, str]:
    return {"status": status, **({"note": note} if note else {})}


class _Base:
    def __init__(
        self,
        base_url: str | None,
        token: str | None,
        token_file: str | os.PathLike[str] | None,
        retry: RetryPolicy | None,
    ) -> None:
        self.base_url = default_url(base_url)
        self.tokens = TokenSource(token, token_file)
        self.retry = retry or RetryPolicy()

    def _url(self, path: str) -> str:
        return self.base_url + path


# --- sync -----------------------------------------------------------------------------------------


class DiscoveryClient(_Base):
    """Blocking client. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        token_file: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, token, token_file, retry)
        self.http = http or httpx.Client(timeout=timeout)

    def __enter__(self) -> DiscoveryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, params: httpx.QueryParams | None = None) -> Any:
        response = self.http.get(self._url(path), params=params, headers=self.tokens.headers())
        _raise_for(response)
        return response.json()

    def services(self, **filters: Any) -> InstanceList:
        """``service``, ``namespace``, ``capability``, ``tag``, ``version``, ``health``, ``meta``."""
        return _instances(self._get("/v1/services", query_params(**filters)))

    def service(self, namespace: str, name: str) -> Instance:
        return Instance.parse(self._get(f"/v1/services/{_path_part(namespace)}/{_path_part(name)}"))

    def capabilities(self, namespace: str | None = None) -> list[CapabilitySummary]:
        return _capabilities(self._get("/v1/capabilities", query_params(namespace=namespace)))

    def capability(self, name: str, **filters: Any) -> InstanceList:
        """Healthy instances providing ``name``; ``version`` is a semver range on the capability."""
        return _instances(self._get(f"/v1/capabilities/{_path_part(name)}", query_params(**filters)))

    def stats(self, namespace: str | None = None) -> Stats:
        return _stats(self._get("/v1/stats", query_params(namespace=namespace)))

    def heartbeat(self, namespace: str, name: str, status: str = "passing", note: str = "") -> Heartbeat:
        response = self.http.post(
            self._url(f"/v1/heartbeat/{_path_part(namespace)}/{_path_part(name)}"),
            json=_heartbeat_body(status, note),
            headers=self.tokens.headers(),
        )
        _raise_for(response)
        return Heartbeat(**{k: v for k, v in response.json().items() if k in Heartbeat.__dataclass_fields__})

    def _instances_for(self, capability: str, version: str | None) -> list[Instance]:
        found = self.capability(capability, version=version)
        if found.items:
            return list(found.items)
        if not any(c.name == capability for c in self.capabilities()):
            raise UnknownCapability(capability)
        raise NoHealthyInstance(capability, version)

    def resolve(self, capability: str, version: str | None = None) -> str:
        """The URL of one healthy instance providing ``capability``, chosen by weight."""
        ordered = weighted_order(self._instances_for(capability, version))
        if not ordered:
            raise NoHealthyInstance(capability, version)
        return ordered[0].url

    def request(
        self, capability: str, method: str, path: str = "", *, version: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Call ``path`` on an instance of ``capability``. Connection errors, timeouts and 5xx
        are retried with backoff on the next instance in weighted order; any other answer,
        4xx included, is returned as it is."""
        ordered = weighted_order(self._instances_for(capability, version))
        if not ordered:
            raise NoHealthyInstance(capability, version)
        last: httpx.Response | None = None
        error: Exception | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                time.sleep(self.retry.delay(attempt - 1))
            instance = ordered[attempt % len(ordered)]
            try:
                last = self.http.request(method, _join(instance.url, path), **kwargs)
            except (httpx.TransportError, NoHealthyInstance) as caught:
                error, last = caught, None
                continue
            if last.status_code not in RETRYABLE_STATUS:
                return last
        raise AllInstancesFailed(capability, self.retry.attempts, last, error)

    def watch(self, *, index: int | None = None, **filters: Any) -> Iterator[WatchEvent]:
        """Events as they happen, forever; reconnects and resumes with ``Last-Event-ID``."""
        position = index
        failures = 0
        while True:
            headers = self.tokens.headers() | {"Accept": "text/event-stream"}
            if position is not None:
                headers["Last-Event-ID"] = str(position)
            try:
                with self.http.stream(
                    "GET",
                    self._url("/v1/watch"),
                    params=query_params(**filters),
                    headers=headers,
                    timeout=httpx.Timeout(10.0, read=60.0),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        _raise_for(response)
                    failures = 0
                    for raw in _parse_sse(response.iter_lines()):
                        event = _watch_event(raw)
                        position = event.index
                        yield event
            except httpx.TransportError:
                failures += 1
                time.sleep(self.retry.delay(min(failures, 6)))


# --- async ----------------------------------------------------------------------------------------


class AsyncDiscoveryClient(_Base):
    """The same API as ``DiscoveryClient``, awaitable. Use ``async with`` or ``await aclose()``."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        token_file: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, token, token_file, retry)
        self.http = http or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> AsyncDiscoveryClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _get(self, path: str, params: httpx.QueryParams | None = None) -> Any:
        response = await self.http.get(self._url(path), params=params, headers=self.tokens.headers())
        _raise_for(response)
        return response.json()

    async def services(self, **filters: Any) -> InstanceList:
        return _instances(await self._get("/v1/services", query_params(**filters)))

    async def service(self, namespace: str, name: str) -> Instance:
        return Instance.parse(await self._get(f"/v1/services/{_path_part(namespace)}/{_path_part(name)}"))

    async def capabilities(self, namespace: str | None = None) -> list[CapabilitySummary]:
        return _capabilities(await self._get("/v1/capabilities", query_params(namespace=namespace)))

    async def capability(self, name: str, **filters: Any) -> InstanceList:
        return _instances(await self._get(f"/v1/capabilities/{_path_part(name)}", query_params(**filters)))

    async def stats(self, namespace: str | None = None) -> Stats:
        return _stats(await self._get("/v1/stats", query_params(namespace=namespace)))

    async def heartbeat(
        self, namespace: str, name: str, status: str = "passing", note: str = ""
    ) -> Heartbeat:
        response = await self.http.post(
            self._url(f"/v1/heartbeat/{_path_part(namespace)}/{_path_part(name)}"),
            json=_heartbeat_body(status, note),
            headers=self.tokens.headers(),
        )
        _raise_for(response)
        return Heartbeat(**{k: v for k, v in response.json().items() if k in Heartbeat.__dataclass_fields__})

    async def _instances_for(self, capability: str, version: str | None) -> list[Instance]:
        found = await self.capability(capability, version=version)
        if found.items:
            return list(found.items)
        if not any(c.name == capability for c in await self.capabilities()):
            raise UnknownCapability(capability)
        raise NoHealthyInstance(capability, version)

    async def resolve(self, capability: str, version: str | None = None) -> str:
        ordered = weighted_order(await self._instances_for(capability, version))
        if not ordered:
            raise NoHealthyInstance(capability, version)
        return ordered[0].url

    async def request(
        self, capability: str, method: str, path: str = "", *, version: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        ordered = weighted_order(await self._instances_for(capability, version))
        if not ordered:
            raise NoHealthyInstance(capability, version)
        last: httpx.Response | None = None
        error: Exception | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                await asyncio.sleep(self.retry.delay(attempt - 1))
            instance = ordered[attempt % len(ordered)]
            try:
                last = await self.http.request(method, _join(instance.url, path), **kwargs)
            except (httpx.TransportError, NoHealthyInstance) as caught:
                error, last = caught, None
                continue
            if last.status_code not in RETRYABLE_STATUS:
                return last
        raise AllInstancesFailed(capability, self.retry.attempts, last, error)

    async def watch(self, *, index: int | None = None, **filters: Any) -> AsyncIterator[WatchEvent]:
        position = index
        failures = 0
        while True:
            headers = self.tokens.headers() | {"Accept": "text/event-stream"}
            if position is not None:
                headers["Last-Event-ID"] = str(position)
            try:
                async with self.http.stream(
                    "GET",
                    self._url("/v1/watch"),
                    params=query_params(**filters),
                    headers=headers,
                    timeout=httpx.Timeout(10.0, read=60.0),
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        _raise_for(response)
                    failures = 0
                    lines: list[str] = []
                    async for line in response.aiter_lines():
                        lines.append(line)
                        if line:
                            continue
                        for raw in _parse_sse(iter(lines)):
                            event = _watch_event(raw)
                            position = event.index
                            yield event
                        lines = []
            except httpx.TransportError:
                failures += 1
                await asyncio.sleep(self.retry.delay(min(failures, 6)))
