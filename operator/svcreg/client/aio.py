"""``AsyncDiscoveryClient``: the awaitable twin. Everything but I/O lives in ``calls`` and
``failover``; this module sends Calls, drives flows and sleeps."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeVar, Unpack

import httpx
from httpx_sse import aconnect_sse

from svcreg.client import calls
from svcreg.client.auth import ServiceAccountAuth
from svcreg.client.errors import AllInstancesFailed, NoHealthyInstance, SvcregError, raise_for
from svcreg.client.failover import Attempts, Reporter, RetryPolicy, candidate_urls, join, outcome_of, owners
from svcreg.core import wire
from svcreg.core.keys import Key

T = TypeVar("T")


class AsyncDiscoveryClient:
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
        ca_file: str | os.PathLike[str] | None = None,
        report_outcomes: bool = True,
    ) -> None:
        self.base_url = calls.default_url(base_url)
        self.auth = ServiceAccountAuth(token, token_file)
        self.retry = retry or RetryPolicy()
        # Passive health: failures of real calls are reported (POST /v1/report) unless turned off.
        self.reporter = Reporter(enabled=report_outcomes)
        self.http = http or httpx.AsyncClient(timeout=timeout, verify=calls.verification(ca_file))

    async def __aenter__(self) -> AsyncDiscoveryClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(self, call: calls.Call[T]) -> T:
        response = await self.http.request(
            call.method, self.base_url + call.path, params=call.params, json=call.body, auth=self.auth
        )
        return calls.answer(response, call)

    async def _drive(self, flow: calls.Flow[T]) -> T:
        try:
            call = next(flow)
            while True:
                call = flow.send(await self._send(call))
        except StopIteration as done:
            result: T = done.value
            return result

    # -- discovery --------------------------------------------------------------------------------

    async def services(self, **filters: Unpack[calls.Filters]) -> wire.ServiceList:
        params = calls.query_params(**filters)
        return await self._send(calls.services(params))

    async def service(self, namespace: str, name: str) -> wire.RegistrationAnswer:
        return await self._send(calls.service(namespace, name))

    async def capabilities(self, namespace: str | None = None) -> wire.CapabilityList:
        return await self._send(calls.capabilities(namespace))

    async def capability(
        self,
        name: str,
        *,
        namespace: str | None = None,
        version: str | None = None,
        tag: str | Sequence[str] | None = None,
        health: str | None = None,
        verified: bool | None = None,
    ) -> wire.CapabilityAnswer:
        """Served instances providing ``name``; ``version`` is a semver range on the capability;
        ``verified=True``: only those whose contract of it passed."""
        params = calls.query_params(
            namespace=namespace, version=version, tag=tag, health=health, verified=verified
        )
        return await self._send(calls.capability(name, params))

    async def explain(self, **filters: Unpack[calls.Filters]) -> wire.ExplainAnswer:
        """Why each candidate is or is not in the answer to ``services(**filters)``."""
        return await self._send(calls.explain(calls.query_params(**filters)))

    async def consumers(
        self, *, service: str | None = None, capability: str | None = None
    ) -> wire.ConsumerList:
        """Who asked for ``service`` or ``capability`` lately (its owners may ask)."""
        return await self._send(calls.consumers(service, capability))

    async def catalog(self, namespace: str | None = None) -> wire.Catalog:
        """Every logical service you may read, with its tags, versions and instances by health."""
        return await self._send(calls.catalog(namespace))

    async def stats(self, namespace: str | None = None) -> wire.Stats:
        return await self._send(calls.stats(namespace))

    async def resolve(self, capability: str, version: str | None = None, namespace: str | None = None) -> str:
        """The URL of one served instance providing ``capability``, chosen by weight."""
        urls = candidate_urls(await self._drive(calls.providers(capability, version, namespace)))
        if not urls:
            raise NoHealthyInstance(capability, version)
        return urls[0]

    async def resolve_service(
        self, name: str, version: str | None = None, namespace: str | None = None
    ) -> str:
        """The URL of one served instance of logical service ``name``, chosen by weight."""
        urls = candidate_urls(await self._drive(calls.instances_of(name, version, namespace)))
        if not urls:
            raise NoHealthyInstance(name, version)
        return urls[0]

    async def is_healthy(self, name: str, namespace: str | None = None) -> bool:
        """Whether logical service ``name`` has a served instance now."""
        return bool((await self.services(service=name, namespace=namespace)).items)

    async def request(
        self, capability: str, method: str, path: str = "", *, version: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Call ``path`` on an instance of ``capability``. Connection errors, timeouts and 5xx
        are retried with backoff on the next instance in weighted order; any other answer,
        4xx included, is returned as it is."""
        items = await self._drive(calls.providers(capability, version, None))
        return await self._call(capability, items, method, path, kwargs)

    async def request_service(self, name: str, method: str, path: str = "", **kwargs: Any) -> httpx.Response:
        """``request`` by logical service name instead of capability."""
        return await self._call(
            name, await self._drive(calls.instances_of(name, None, None)), method, path, kwargs
        )

    async def get(self, service: str, path: str = "", **kwargs: Any) -> httpx.Response:
        """``request_service(service, "GET", path)``: seed 001's ``client.get("backend-api", ...)``."""
        return await self.request_service(service, "GET", path, **kwargs)

    async def post(self, service: str, path: str = "", **kwargs: Any) -> httpx.Response:
        """``request_service(service, "POST", path)``: seed 001's ``client.post("backend-api", ...)``."""
        return await self.request_service(service, "POST", path, **kwargs)

    async def put(self, service: str, path: str = "", **kwargs: Any) -> httpx.Response:
        """``request_service(service, "PUT", path)``: seed 001's ``client.put("backend-api", ...)``."""
        return await self.request_service(service, "PUT", path, **kwargs)

    async def patch(self, service: str, path: str = "", **kwargs: Any) -> httpx.Response:
        """``request_service(service, "PATCH", path)``: seed 001's ``client.patch("backend-api", ...)``."""
        return await self.request_service(service, "PATCH", path, **kwargs)

    async def delete(self, service: str, path: str = "", **kwargs: Any) -> httpx.Response:
        """``request_service(service, "DELETE", path)``: seed 001's ``client.delete("backend-api", ...)``."""
        return await self.request_service(service, "DELETE", path, **kwargs)

    async def _call(
        self, target: str, items: list[wire.Registration], method: str, path: str, kwargs: dict[str, Any]
    ) -> httpx.Response:
        attempts = Attempts(target, candidate_urls(items), self.retry)
        owner = owners(items)
        while (step := attempts.next_url()) is not None:
            url, delay = step
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                response = await self.http.request(method, join(url, path), **kwargs)
            except httpx.TransportError as error:
                attempts.failed(None, error)
                await self._report(owner.get(url), outcome_of(None, error), started)
                continue
            await self._report(owner.get(url), outcome_of(response, None), started)
            if not attempts.failed(response):
                return response
        if not attempts.made:
            raise NoHealthyInstance(target)
        raise AllInstancesFailed(target, attempts.made, attempts.last, attempts.error)

    async def watch(
        self, *, index: int | None = None, **filters: Unpack[calls.Filters]
    ) -> AsyncIterator[wire.WatchEvent]:
        """Events after ``index`` (a list answer's, or now), forever; reconnects and resumes with
        ``Last-Event-ID``. A ``reset`` event says the resume point was unknown to the server
        (a restart, another replica, too old): list again."""
        params = calls.query_params(**filters)
        position, failures = index, 0
        while True:
            try:
                async with aconnect_sse(
                    self.http, "GET", self.base_url + "/v1/watch", params=params,
                    headers=calls.watch_headers(position), auth=self.auth,
                    timeout=httpx.Timeout(10.0, read=60.0),
                ) as source:  # fmt: skip
                    if source.response.status_code >= 400:
                        await source.response.aread()
                        raise_for(source.response)
                    failures = 0
                    async for sse in source.aiter_sse():
                        event = calls.watch_event(sse)
                        if event is None:
                            continue
                        position = event.index
                        yield event
            except httpx.TransportError:
                failures += 1
                await asyncio.sleep(self.retry.delay(min(failures, 6)))

    # -- writes -----------------------------------------------------------------------------------

    async def report(
        self, namespace: str, name: str, outcome: str, latency_ms: float | None = None
    ) -> wire.ReportAnswer:
        """Report the outcome of one real call to an instance (``success``, ``connection-error``,
        ``timeout`` or ``5xx``); ``request`` does this on its own for failures."""
        return await self._send(calls.report(namespace, name, outcome, latency_ms))

    async def _report(self, key: Key | None, outcome: str, started: float) -> None:
        """Best effort: a report that fails never fails the call it describes."""
        if key is None or not self.reporter.wants(key, outcome):
            return
        try:
            await self.report(*key, outcome, round((time.monotonic() - started) * 1000, 3))
        except SvcregError as error:
            self.reporter.refused(getattr(error, "status", 0) or 0)
        except httpx.HTTPError:
            pass

    async def heartbeat(
        self, namespace: str, name: str, status: str = "passing", note: str = ""
    ) -> wire.HeartbeatAnswer:
        return await self._send(calls.heartbeat(namespace, name, status, note))

    async def register(
        self, namespace: str, name: str, spec: Mapping[str, Any], labels: Mapping[str, str] | None = None
    ) -> wire.RegistrationWrite:
        """Create or replace a registration through the discovery endpoint's registration API."""
        return await self._send(calls.register(namespace, name, spec, labels))

    async def update(
        self,
        namespace: str,
        name: str,
        spec: Mapping[str, Any] | None = None,
        labels: Mapping[str, str | None] | None = None,
    ) -> wire.RegistrationWrite:
        """Change part of a registration (a JSON merge patch: given keys replace, None removes);
        the merged result is checked as a whole by the server (400 naming the field)."""
        return await self._send(calls.update(namespace, name, spec, labels))

    async def deregister(self, namespace: str, name: str) -> wire.RegistrationWrite:
        return await self._send(calls.deregister(namespace, name))
