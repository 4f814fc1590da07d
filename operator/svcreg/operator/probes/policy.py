"""The SSRF policy: which addresses the prober may connect to.

Registrations are written by many teams, so a probe must not become a way to reach the cloud
metadata service or the operator's own loopback. The check runs on *resolved* addresses, and
the probe then connects to exactly the address that was checked, so a DNS answer that changes
between check and connect (rebinding) cannot slip past it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never probed, whatever --probe-allow says: link-local (which holds most clouds' metadata
# endpoints) and the metadata addresses that live elsewhere.
ALWAYS_FORBIDDEN: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS IMDS over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
    ipaddress.ip_network("168.63.129.16/32"),  # Azure WireServer (platform and metadata)
    ipaddress.ip_network("fd20:ce::254/128"),  # GCP metadata over IPv6
)
_DNS_CACHE_SECONDS = 5.0


class TargetForbidden(Exception):
    """Every address of the target is refused by the policy; it is never connected to."""


class ResolutionFailed(Exception):
    """The host name did not resolve."""


class ProbePolicy:
    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in allow)
        self._cache: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._decisions: dict[str, str | None] = {}
        self._literals: dict[str, bool] = {}

    def refusal(self, address: str) -> str | None:
        """Why ``address`` may not be probed, or None when it may (memoised: the answer for an
        address never changes while the policy lives)."""
        try:
            return self._decisions[address]
        except KeyError:
            pass
        if len(self._decisions) > 100_000:
            self._decisions.clear()
        decision = self._decisions[address] = self._decide(address)
        return decision

    def _decide(self, address: str) -> str | None:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in ALWAYS_FORBIDDEN if network.version == ip.version):
            return f"{ip} is a link-local or cloud metadata address, which is never probed"
        opened = any(ip in network for network in self.allow if network.version == ip.version)
        if not opened:
            for kind, flag in (
                ("loopback", ip.is_loopback),
                ("unspecified", ip.is_unspecified),
                ("multicast", ip.is_multicast),
            ):
                if flag:
                    return f"{ip} is a {kind} address; allow it with --probe-allow"
        return None

    async def resolve(self, host: str, port: int) -> list[str]:
        """Addresses of ``host`` that may be probed, in resolver order.

        Raises TargetForbidden when all are refused, ResolutionFailed when there are none.
        """
        addresses = await self._lookup(host, port)
        allowed = [a for a in addresses if self.refusal(a) is None]
        if not allowed:
            reasons = "; ".join(sorted({self.refusal(a) or "" for a in addresses}))
            raise TargetForbidden(reasons)
        return allowed

    def _is_literal(self, host: str) -> bool:
        known = self._literals.get(host)
        if known is None:
            try:
                ipaddress.ip_address(host.split("%", 1)[0])
                known = True
            except ValueError:
                known = False
            if len(self._literals) > 100_000:
                self._literals.clear()
            self._literals[host] = known
        return known

    async def _lookup(self, host: str, port: int) -> list[str]:
        if self._is_literal(host):
            return [host]
        now = time.monotonic()
        cached = self._cache.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as error:
            raise ResolutionFailed(f"{host} did not resolve: {error}") from error
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[(host, port)] = (now + _DNS_CACHE_SECONDS, addresses)
        return addresses
