"""Discovery-only mode: informers feed the index; nothing probes or writes.

Writes that reach a replica are relayed to the operator (``--operator-url``); the replica
watches registrations and ServicePolicies itself, and ends when its informer does.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from svcreg.core import model
from svcreg.discovery.http.roles import Relaying
from svcreg.discovery.informer import Informer, PolicySink
from svcreg.main.mode import Shared


class ReplicaMode:
    """A discovery replica: ready once its index has synced, alive while it runs."""

    description = "discovery"

    def __init__(self, shared: Shared) -> None:
        settings = shared.settings
        self.shared = shared
        self.role = Relaying(settings.operator_url)
        self.registrations = Informer(
            shared.api, shared.index, settings.namespaces, watch_seconds=settings.watch_timeout_seconds
        )
        self.policies = Informer(
            shared.api,
            PolicySink(shared.index),
            settings.namespaces,
            watch_seconds=settings.watch_timeout_seconds,
            plural=model.POLICY_PLURAL,
        )

    async def start(self) -> None:
        """Nothing to open besides discovery's own listener."""

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return self.shared.index.synced, {"mode": "discovery-only", **self.shared.index_details()}

    def alive(self) -> tuple[bool, dict[str, Any]]:
        return True, {}

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [self.policies.run()]

    async def main(self) -> None:
        await self.registrations.run()

    async def close(self) -> None:
        """Nothing to close besides what ``run`` closes."""
