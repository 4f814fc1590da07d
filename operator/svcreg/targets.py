"""What to probe for a registration: one target for an endpoint, one per ready address for a
serviceRef."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from svcreg.endpoints import Address, EndpointCache
from svcreg.model import ServiceRegistrationSpec
from svcreg.probes.base import Target

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Plan:
    """The targets of one registration, keyed by instance id ("" for an endpoint)."""

    targets: dict[str, Target] = field(default_factory=dict)
    addresses: dict[str, Address] = field(default_factory=dict)
    accepted: bool = True
    reason: str = "Valid"
    message: str = "spec is valid"
    service_ref: tuple[str, str] | None = None


def _target(spec: ServiceRegistrationSpec, key: tuple[str, str], host: str, port: int, tls: bool) -> Target:
    check = spec.health_check
    return Target(
        kind=spec.check_type(),
        host=host,
        port=check.port or port,
        timeout=check.timeout_seconds,
        tls=tls,
        path=check.path,
        method=check.method,
        headers=tuple(sorted(check.headers.items())),
        expected=tuple(check.expected_codes()),
        grpc_service=check.grpc_service,
        heartbeat_key=key,
        ttl_seconds=float(check.ttl_seconds),
    )


def plan(spec: ServiceRegistrationSpec, key: tuple[str, str], endpoints: EndpointCache) -> Plan:
    namespace, _ = key
    if spec.endpoint is not None:
        parts = urlsplit(spec.endpoint)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
        host = parts.hostname or ""
        return Plan(targets={"": _target(spec, key, host, port, parts.scheme == "https")})
    assert spec.service_ref is not None
    ref = (namespace, spec.service_ref.name)
    if spec.check_type() == "ttl":
        return Plan(targets={"": _target(spec, key, "", 0, False)}, service_ref=ref)
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
        instance = f"[{address.ip}]:{address.port}" if ":" in address.ip else f"{address.ip}:{address.port}"
        targets[instance] = _target(spec, key, address.ip, address.port, False)
        by_id[instance] = address
    return Plan(targets=targets, addresses=by_id, service_ref=ref)
