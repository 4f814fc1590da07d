"""What to probe for a registration: one target for an endpoint, one per ready address for a
serviceRef."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from svcreg.core.hosts import authority
from svcreg.core.keys import Key
from svcreg.core.model import ServiceRegistrationSpec
from svcreg.operator.endpoints import Address, EndpointCache
from svcreg.operator.probes.base import GrpcConfig, HttpConfig, KindConfig, Target, TtlConfig

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Plan:
    """The targets of one registration, keyed by instance id ("" for an endpoint)."""

    targets: dict[str, Target] = field(default_factory=dict)
    addresses: dict[str, Address] = field(default_factory=dict)
    accepted: bool = True
    reason: str = "Valid"
    message: str = "spec is valid"
    service_ref: Key | None = None


def _config(spec: ServiceRegistrationSpec, key: Key, created_at: float | None) -> KindConfig:
    """The settings of the registration's check kind, and only those."""
    check, kind = spec.health_check, spec.check_type()
    if kind == "http":
        return HttpConfig(
            path=check.path,
            method=check.method,
            headers=tuple(sorted(check.headers.items())),
            expected=tuple(check.expected_codes()),
        )
    if kind == "grpc":
        return GrpcConfig(service=check.grpc_service)
    if kind == "ttl":
        return TtlConfig(key=key, ttl_seconds=float(check.ttl_seconds), created_at=created_at)
    return None


def _tls_parts(
    spec: ServiceRegistrationSpec, key: Key
) -> tuple[str | None, tuple[str, str, str, str] | None]:
    """healthCheck.tls as (server name, CA bundle reference), the bundle always in the
    registration's own namespace."""
    probe_tls = spec.health_check.tls
    if probe_tls is None:
        return None, None
    ref = probe_tls.ca_bundle_ref
    return probe_tls.server_name, (key[0], ref.kind.lower(), ref.name, ref.key) if ref is not None else None


def _target(
    spec: ServiceRegistrationSpec,
    key: Key,
    host: str,
    port: int,
    *,
    tls: bool = False,
    created_at: float | None = None,
) -> Target:
    check = spec.health_check
    server_name, ca = _tls_parts(spec, key)
    return Target(
        kind=spec.check_type(),
        host=host,
        port=check.port or port,
        timeout=check.timeout_seconds,
        tls=tls or check.tls is not None,
        config=_config(spec, key, created_at),
        server_name=server_name,
        ca=ca,
    )


def _endpoint(endpoint: str) -> tuple[str, str, int]:
    """An endpoint URL as (scheme, host, port), the port defaulted by scheme (0 when it has
    none: the model requires one for grpc:// and tcp://)."""
    parts = urlsplit(endpoint)
    return parts.scheme, parts.hostname or "", parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)


def plan(
    spec: ServiceRegistrationSpec,
    key: Key,
    endpoints: EndpointCache,
    created_at: float | None = None,
) -> Plan:
    """What to probe for ``spec``; ``created_at`` (wall-clock seconds) starts a ttl's grace."""
    namespace, _ = key
    if spec.endpoint is not None:
        scheme, host, port = _endpoint(spec.endpoint)
        target = _target(spec, key, host, port, tls=scheme == "https", created_at=created_at)
        return Plan(targets={"": target})
    assert spec.service_ref is not None
    ref = (namespace, spec.service_ref.name)
    if spec.check_type() == "ttl":
        return Plan(targets={"": _target(spec, key, "", 0, created_at=created_at)}, service_ref=ref)
    addresses = endpoints.addresses(namespace, spec.service_ref.name, spec.service_ref.port)
    if addresses is None:
        return Plan(
            accepted=False,
            reason="NoEndpoints",
            message=f"no EndpointSlices for Service {spec.service_ref.name} (does it exist and select pods?)",
            service_ref=ref,
        )
    targets = {}
    by_id = {}
    for address in addresses:
        instance = authority(address.ip, address.port)
        targets[instance] = _target(spec, key, address.ip, address.port)
        by_id[instance] = address
    return Plan(targets=targets, addresses=by_id, service_ref=ref)


def contract_targets(
    spec: ServiceRegistrationSpec, key: Key, plan: Plan, timeout: float
) -> dict[str, Target] | None:
    """Where capability contracts are sent: the endpoint itself (not a health check's own
    port), or each ready address of a serviceRef; TLS as healthCheck.tls says. None when the
    endpoint does not speak HTTP (grpc://, tcp://)."""
    server_name, ca = _tls_parts(spec, key)
    if spec.endpoint is not None:
        scheme, host, port = _endpoint(spec.endpoint)
        if scheme not in _DEFAULT_PORTS:
            return None
        tls = scheme == "https" or spec.health_check.tls is not None
        return {"": Target("http", host, port, timeout, tls=tls, server_name=server_name, ca=ca)}
    tls = spec.health_check.tls is not None
    return {
        iid: Target("http", address.ip, address.port, timeout, tls=tls, server_name=server_name, ca=ca)
        for iid, address in sorted(plan.addresses.items())
    }
