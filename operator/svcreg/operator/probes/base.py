"""What a probe is asked to check, what it reports, and the one signature every kind has.

Outcomes carry a structured reason (CamelCase, as Kubernetes condition reasons are) and say
whether the failure happened before the target could answer at all (``connection_level``):
the partition guard counts only those, since a prober cut off from the network sees every
target fail that way, while a target that answers badly is a fact about the target.
"""

from __future__ import annotations

import enum
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from svcreg.core.hosts import authority
from svcreg.core.keys import Key
from svcreg.core.model import CheckType
from svcreg.operator.probes.policy import ProbePolicy


class Reason(enum.StrEnum):
    PROBE_SUCCEEDED = "ProbeSucceeded"
    SLOW_RESPONSE = "SlowResponse"
    DNS_FAILURE = "DNSFailure"
    CONNECTION_REFUSED = "ConnectionRefused"
    CONNECTION_RESET = "ConnectionReset"
    NETWORK_UNREACHABLE = "NetworkUnreachable"
    TIMEOUT = "Timeout"
    TLS_ERROR = "TLSError"
    BAD_STATUS = "BadStatus"
    PROTOCOL_ERROR = "ProtocolError"
    NOT_SERVING = "NotServing"
    TARGET_FORBIDDEN = "TargetForbidden"
    HEARTBEAT_PASSING = "HeartbeatPassing"
    HEARTBEAT_WARNING = "HeartbeatWarning"
    HEARTBEAT_CRITICAL = "HeartbeatCritical"
    HEARTBEAT_EXPIRED = "HeartbeatExpired"
    NO_HEALTH_CHECK = "NoHealthCheck"


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """What an http check sends and accepts."""

    path: str = "/"
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    expected: tuple[tuple[int, int], ...] = ((200, 399),)


@dataclass(frozen=True, slots=True)
class GrpcConfig:
    """The grpc.health.v1 service name to ask about ("" is the server as a whole)."""

    service: str = ""


@dataclass(frozen=True, slots=True)
class TtlConfig:
    """Which registration's heartbeats count, and how long one lasts."""

    key: Key = ("", "")
    ttl_seconds: float = 30.0
    created_at: float | None = None  # wall-clock seconds: the grace counts from here


KindConfig = HttpConfig | GrpcConfig | TtlConfig | None


@dataclass(frozen=True, slots=True)
class Target:
    """One address to probe, with the settings of its kind in ``config``."""

    kind: CheckType
    host: str
    port: int
    timeout: float
    tls: bool = False
    config: KindConfig = None
    # healthCheck.tls: the name the certificate must carry (else ``host``), and the CA bundle to
    # verify it with, as (namespace, "configmap" | "secret", name, key) (else the system's).
    server_name: str | None = None
    ca: tuple[str, str, str, str] | None = None

    @property
    def display(self) -> str:
        return authority(self.host, self.port)

    @property
    def http(self) -> HttpConfig:
        return self.config if isinstance(self.config, HttpConfig) else HttpConfig()

    @property
    def grpc(self) -> GrpcConfig:
        return self.config if isinstance(self.config, GrpcConfig) else GrpcConfig()

    @property
    def ttl(self) -> TtlConfig:
        return self.config if isinstance(self.config, TtlConfig) else TtlConfig()


@dataclass(frozen=True, slots=True)
class Outcome:
    passed: bool
    reason: Reason
    message: str
    latency: float = 0.0
    connection_level: bool = False
    degraded: bool = field(default=False)  # passing, but the target itself says it is impaired

    @staticmethod
    def ok(latency: float, message: str = "probe succeeded") -> Outcome:
        return Outcome(True, Reason.PROBE_SUCCEEDED, message, latency)

    @staticmethod
    def fail(
        reason: Reason, message: str, latency: float = 0.0, *, connection_level: bool = False
    ) -> Outcome:
        return Outcome(False, reason, message, latency, connection_level)


class Phase:
    """Where a probe got to, so a timeout can say whether the target ever answered."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.connected = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Heartbeats(Protocol):
    """What the ttl kind reads: the last heartbeats (``svcreg.operator.probes.ttl``)."""

    def evaluate(self, target: Target) -> Outcome | None: ...

    def forget(self, key: Key) -> None: ...

    def grant(self, key: Key) -> None: ...


class TlsUnavailable(Exception):
    """What a probe needs for TLS cannot be had (a CA bundle missing, say): a TLSError outcome
    with this message."""


class Trust(Protocol):
    """Where private CA bundles come from (probes/trust.py)."""

    async def context(self, ref: tuple[str, str, str, str]) -> ssl.SSLContext: ...

    async def bundle(self, ref: tuple[str, str, str, str]) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Context:
    """What probes share: the SSRF policy, the TLS context, the heartbeat store."""

    policy: ProbePolicy
    ssl_context: ssl.SSLContext
    heartbeats: Heartbeats
    trust: Trust | None = None

    async def tls_for(self, target: Target) -> ssl.SSLContext:
        """The client context that verifies ``target``: its own CA bundle, or the system's."""
        if target.ca is None or self.trust is None:
            return self.ssl_context
        return await self.trust.context(target.ca)


Probe = Callable[[Target, Context, Phase], Awaitable["Outcome | None"]]
"""Every kind's signature. None means "no verdict yet" (a ttl check within its grace)."""
