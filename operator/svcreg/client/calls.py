"""What each client method sends and how its answer is read: the part both clients share.

A method is described as a ``Call`` (method, path, parameters, body, parser) or, when it takes
more than one round trip, as a flow: a generator that yields Calls and receives their parsed
answers, in the manner of ``httpx.Auth.auth_flow``. ``DiscoveryClient`` and
``AsyncDiscoveryClient`` only send Calls and drive flows, so they cannot drift apart.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.parse
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypedDict, TypeVar

import httpx
from httpx_sse import ServerSentEvent

from svcreg.client.errors import NoHealthyInstance, UnknownCapability, UnknownService, raise_for
from svcreg.core import wire

T = TypeVar("T")
DEFAULT_URL = "http://svcreg.svcreg-system.svc:8080"
Flow = Generator["Call[Any]", Any, T]


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[bytes], T]
    params: httpx.QueryParams | None = None
    body: Any = None


def default_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("SVCREG_URL") or DEFAULT_URL).rstrip("/")


def verification(ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext | bool:
    """How an https discovery URL is verified: against ``ca_file`` (or SVCREG_CA_FILE) when
    given, for a private CA such as cert-manager's; else against the system's trust store."""
    path = ca_file or os.environ.get("SVCREG_CA_FILE")
    return ssl.create_default_context(cafile=os.fspath(path)) if path else True


class Filters(TypedDict, total=False):
    """The filters of ``/v1/services`` and ``/v1/watch``, as keyword arguments of the clients'
    ``services`` and ``watch``; repeatable ones take a string or a list."""

    service: str | None
    namespace: str | None
    capability: str | Sequence[str] | None
    tag: str | Sequence[str] | None
    version: str | None
    health: str | None
    meta: Mapping[str, str] | None
    verified: bool | None  # with capability: only instances whose contract of it passed


def query_params(
    *,
    service: str | None = None,
    namespace: str | None = None,
    capability: str | Sequence[str] | None = None,
    tag: str | Sequence[str] | None = None,
    version: str | None = None,
    health: str | None = None,
    meta: Mapping[str, str] | None = None,
    verified: bool | None = None,
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
    if verified is not None:
        params.append(("verified", "true" if verified else "false"))
    return httpx.QueryParams(params)


def _part(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def answer(response: httpx.Response, call: Call[T]) -> T:
    """The parsed answer to ``call``, or its typed error."""
    raise_for(response)
    return call.parse(response.content)


def services(params: httpx.QueryParams) -> Call[wire.ServiceList]:
    return Call("GET", "/v1/services", wire.ServiceList.model_validate_json, params)


def explain(params: httpx.QueryParams) -> Call[wire.ExplainAnswer]:
    return Call("GET", "/v1/explain", wire.ExplainAnswer.model_validate_json, params)


def consumers(service: str | None, capability: str | None) -> Call[wire.ConsumerList]:
    params = httpx.QueryParams({k: v for k, v in (("service", service), ("capability", capability)) if v})
    return Call("GET", "/v1/consumers", wire.ConsumerList.model_validate_json, params)


def service(namespace: str, name: str) -> Call[wire.RegistrationAnswer]:
    return Call(
        "GET", f"/v1/services/{_part(namespace)}/{_part(name)}", wire.RegistrationAnswer.model_validate_json
    )


def capabilities(namespace: str | None) -> Call[wire.CapabilityList]:
    return Call(
        "GET", "/v1/capabilities", wire.CapabilityList.model_validate_json, query_params(namespace=namespace)
    )


def capability(name: str, params: httpx.QueryParams) -> Call[wire.CapabilityAnswer]:
    return Call("GET", f"/v1/capabilities/{_part(name)}", wire.CapabilityAnswer.model_validate_json, params)


def catalog(namespace: str | None) -> Call[wire.Catalog]:
    params = httpx.QueryParams({"namespace": namespace} if namespace else {})
    return Call("GET", "/v1/catalog", wire.Catalog.model_validate_json, params)


def stats(namespace: str | None) -> Call[wire.Stats]:
    return Call("GET", "/v1/stats", wire.Stats.model_validate_json, query_params(namespace=namespace))


def heartbeat(namespace: str, name: str, status: str, note: str) -> Call[wire.HeartbeatAnswer]:
    body = wire.HeartbeatBody.model_validate({"status": status, "note": note})
    return Call(
        "POST",
        f"/v1/heartbeat/{_part(namespace)}/{_part(name)}",
        wire.HeartbeatAnswer.model_validate_json,
        body=body.model_dump(by_alias=True),
    )


def report(namespace: str, name: str, outcome: str, latency_ms: float | None) -> Call[wire.ReportAnswer]:
    body = wire.ReportBody.model_validate({"outcome": outcome, "latencyMs": latency_ms})
    return Call(
        "POST",
        f"/v1/report/{_part(namespace)}/{_part(name)}",
        wire.ReportAnswer.model_validate_json,
        body=body.model_dump(by_alias=True, exclude_none=True),
    )


def register(
    namespace: str, name: str, spec: Mapping[str, Any], labels: Mapping[str, str] | None
) -> Call[wire.RegistrationWrite]:
    # Validated here, where the mistake is made, with the same model the server uses.
    body = wire.RegistrationBody.model_validate({"spec": dict(spec), "labels": dict(labels or {})})
    return Call(
        "PUT",
        f"/v1/registrations/{_part(namespace)}/{_part(name)}",
        wire.RegistrationWrite.model_validate_json,
        body={"spec": dict(spec), "labels": body.labels},
    )


def update(
    namespace: str, name: str, spec: Mapping[str, Any] | None, labels: Mapping[str, str | None] | None
) -> Call[wire.RegistrationWrite]:
    """A JSON merge patch: the keys given replace, ``None`` removes, the rest is kept."""
    body: dict[str, Any] = {}
    if spec is not None:
        body["spec"] = dict(spec)
    if labels is not None:
        body["labels"] = dict(labels)
    return Call(
        "PATCH",
        f"/v1/registrations/{_part(namespace)}/{_part(name)}",
        wire.RegistrationWrite.model_validate_json,
        body=body,
    )


def deregister(namespace: str, name: str) -> Call[wire.RegistrationWrite]:
    return Call(
        "DELETE",
        f"/v1/registrations/{_part(namespace)}/{_part(name)}",
        wire.RegistrationWrite.model_validate_json,
    )


def providers(name: str, version: str | None, namespace: str | None) -> Flow[list[wire.Registration]]:
    """Served instances providing capability ``name``; UnknownCapability when nothing readable
    provides it, NoHealthyInstance when something does but none is served."""
    found: wire.CapabilityAnswer = yield capability(name, query_params(version=version, namespace=namespace))
    if found.items:
        return list(found.items)
    known: wire.CapabilityList = yield capabilities(namespace)
    if not any(c.name == name for c in known.capabilities):
        raise UnknownCapability(name)
    raise NoHealthyInstance(name, version)


def instances_of(name: str, version: str | None, namespace: str | None) -> Flow[list[wire.Registration]]:
    """Served instances of logical service ``name``; UnknownService when it has none at all."""
    found: wire.ServiceList = yield services(query_params(service=name, version=version, namespace=namespace))
    if found.items:
        return list(found.items)
    every: wire.ServiceList = yield services(query_params(service=name, namespace=namespace, health="any"))
    if not every.items:
        raise UnknownService(name)
    raise NoHealthyInstance(name, version)


def watch_headers(position: int | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if position is not None:
        headers["Last-Event-ID"] = str(position)
    return headers


def watch_event(sse: ServerSentEvent) -> wire.WatchEvent | None:
    """The event's typed data; None for a frame that carries none (a ``retry:`` hint)."""
    if not sse.data:
        return None
    data = json.loads(sse.data)
    return wire.WatchEvent.model_validate({**data, "type": data.get("type") or sse.event})
