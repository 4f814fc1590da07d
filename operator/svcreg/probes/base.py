"""What a probe is asked to check and what it reports.

Outcomes carry a structured reason (CamelCase, as Kubernetes condition reasons are) and say
whether the failure happened before the target could answer at all (``connection_level``):
the partition guard counts only those, since a prober cut off from the network sees every
target fail that way, while a target that answers badly is a fact about the target.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from svcreg.model import CheckType


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


@dataclass(frozen=True)
class Target:
    """One address to probe, with everything the probe kind needs."""

    kind: CheckType
    host: str
    port: int
    timeout: float
    tls: bool = False
    path: str = "/"
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    expected: tuple[tuple[int, int], ...] = ((200, 399),)
    grpc_service: str = ""
    heartbeat_key: tuple[str, str] = ("", "")
    ttl_seconds: float = 30.0

    @property
    def display(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
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
