"""A discovery process's role: what it does with writes and with questions only a prober answers.

Every process serves the read routes from its own index. The rest depends on one role, chosen
once by ``svcreg.main`` for the mode it runs in, so no route asks which mode it is in by
looking for a missing field:

- ``Probing``: this process probes (the operator). Heartbeats and reports land in its prober,
  registration writes go to the API server as the caller, last probes come from memory. In a
  prober group (``Group``), what concerns another member's share is sent on to that member,
  and the other members may ask this one what its own probe sees (quorum).
- ``Relaying``: a discovery-only replica. Writes and last-probe questions go, as they came and
  with the caller's own token, to the operator at ``operator_url``; with none set, writes are
  refused with 503 saying where to send them.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from svcreg.core import wire
from svcreg.core.keys import Key
from svcreg.discovery.http.auth import Authorizer
from svcreg.kube.api import KubeApi


class ReportSink(typing.Protocol):
    """Where callers' reports go: the prober's outlier detection, in the operator."""

    def report(self, key: Key, caller: str, outcome: str) -> bool: ...


class HeartbeatSink(typing.Protocol):
    """Where accepted heartbeats go: the prober's heartbeat store, in the operator."""

    def record(self, key: Key, status: wire.HeartbeatStatus, note: str) -> None: ...


@dataclass(frozen=True)
class Group:
    """This process is one member of a prober group."""

    # The URL of the member that probes a registration, when it is not this process.
    # Heartbeats, reports and last probes concern that member; they are sent on to it (one hop:
    # a request that was sent on is answered where it lands).
    owner_url: Callable[[Key], str | None]
    # Another member asks this one to probe a registration now (multi-vantage quorum).
    vantage: Callable[[Key], Awaitable[dict[str, bool] | None]]
    # Members present their pod's own ServiceAccount token, whose audience is the API server's,
    # not --token-audience: reviewed by an authorizer of its own.
    auth: Authorizer
    # The members' own identity (the operator's ServiceAccount), the only one that may ask for
    # a vantage probe; None when it could not be learnt, and then no member is answered.
    username: str | None
    # The name a member's https certificate is checked for (its URL holds a pod address).
    server_name: str | None = None


@dataclass(frozen=True)
class Probing:
    """The role of the process that probes: writes land here."""

    heartbeats: HeartbeatSink
    reports: ReportSink
    # The prober's last probe of each instance of a registration, served on
    # GET /v1/services/{ns}/{name} from memory, so steady state makes no status writes for it.
    last_probes: Callable[[Key], list[dict[str, Any]] | None]
    # The operator's API client, for the registration API's writes.
    api: KubeApi
    group: Group | None = None


@dataclass(frozen=True)
class Relaying:
    """The role of a discovery-only replica: writes are relayed to the operator.

    Ttl state lives in the one prober, only the operator's ServiceAccount may write, and
    callers should not need to know which pod answers."""

    operator_url: str | None = None


Role = Probing | Relaying
