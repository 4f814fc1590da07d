"""Ready addresses of Services, from watched EndpointSlices, for serviceRef registrations."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from svcreg.core.keys import Key

SERVICE_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, order=True)
class Address:
    ip: str
    port: int
    target_ref: str = ""


@dataclass(frozen=True)
class _Slice:
    service: str
    ports: tuple[tuple[str, int], ...]
    ready_ips: tuple[tuple[str, str], ...]  # (ip, targetRef)


class EndpointCache:
    def __init__(self) -> None:
        self._slices: dict[Key, _Slice] = {}
        self._by_service: dict[Key, set[str]] = defaultdict(set)

    def observe(self, event_type: str | None, body: dict[str, Any]) -> Key | None:
        """Apply one watch event; return the (namespace, service) whose addresses may have changed."""
        metadata = body.get("metadata") or {}
        namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
        service = (metadata.get("labels") or {}).get(SERVICE_LABEL)
        key = (namespace, name)
        old = self._slices.pop(key, None)
        if old is not None:
            self._by_service[(namespace, old.service)].discard(name)
        if event_type == "DELETED" or not service:
            return (namespace, old.service) if old else None
        ports = tuple((p.get("name") or "", int(p["port"])) for p in body.get("ports") or [] if p.get("port"))
        ready = []
        for endpoint in body.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            ref = endpoint.get("targetRef") or {}
            target = f"{ref.get('kind', '')}/{ref.get('name', '')}" if ref else ""
            ready += [(ip, target) for ip in endpoint.get("addresses") or []]
        self._slices[key] = _Slice(service, ports, tuple(ready))
        self._by_service[(namespace, service)].add(name)
        return (namespace, service)

    def addresses(self, namespace: str, service: str, port: int | str | None) -> list[Address] | None:
        """Ready addresses on the selected port; None when the Service has no EndpointSlices."""
        names = self._by_service.get((namespace, service))
        if not names:
            return None
        found: set[Address] = set()
        for name in names:
            piece = self._slices[(namespace, name)]
            chosen = _pick_port(piece.ports, port)
            if chosen is None:
                continue
            found |= {Address(ip, chosen, ref) for ip, ref in piece.ready_ips}
        return sorted(found)


def _pick_port(ports: tuple[tuple[str, int], ...], wanted: int | str | None) -> int | None:
    if wanted is None:
        return ports[0][1] if len(ports) == 1 else None
    if isinstance(wanted, int):
        return wanted if any(number == wanted for _, number in ports) or not ports else None
    return next((number for name, number in ports if name == wanted), None)
