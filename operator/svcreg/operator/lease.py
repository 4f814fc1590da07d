"""Which process probes: the holder of a Lease (coordination.k8s.io), when not --standalone.

Kopf's peering freezes Kopf's handlers, not tasks svcreg starts itself, so two operators
without ``--standalone`` would both probe and both write status. This elector makes exactly
one of them the prober: the one holding the Lease ``svcreg-prober``. It renews every
``renew_every`` seconds; a Lease not renewed for ``duration`` seconds may be taken over.
Every write of the Lease carries its resourceVersion, so two candidates racing for it cannot
both win (the loser gets a 409). A holder that cannot renew in time stops probing before its
Lease can expire, so the old and the new holder never probe at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from svcreg.kube import errors
from svcreg.kube.api import KubeApi

logger = logging.getLogger(__name__)

NAME = "svcreg-prober"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    for pattern in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.datetime.strptime(value, pattern).replace(tzinfo=datetime.UTC)
        except ValueError:
            continue
    return None


class LeaseElector:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        identity: str,
        *,
        duration: float = 15.0,
        renew_every: float = 5.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.identity = identity
        self.duration = duration
        self.renew_every = renew_every
        self.on_change = on_change
        self.leader = False
        self._renewed_at = 0.0  # monotonic

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    def holds(self) -> bool:
        """Whether this process may probe and write now: it holds the Lease and renewed it
        recently enough that no one else can have taken it over."""
        return self.leader and time.monotonic() - self._renewed_at < self.duration - self.renew_every

    async def run(self) -> None:
        """Acquire and renew until cancelled; gives the Lease up (if held) on the way out."""
        try:
            while True:
                try:
                    await self._round()
                except (errors.KubeApiError, errors.Unreachable) as error:
                    logger.warning("lease %s/%s: %s", self.namespace, NAME, error)
                    if self.leader and not self.holds():
                        self._set(False)
                await asyncio.sleep(self.renew_every)
        finally:
            if self.leader:
                self._set(False)
                await self._release()

    async def _round(self) -> None:
        try:
            lease: dict[str, Any] | None = (await self.api.call("GET", f"{self.path}/{NAME}")).json()
        except errors.NotFound:
            lease = None
        now = _now()
        if lease is None:
            await self.api.call("POST", self.path, json=self._body(now, now, 0))
            self._won(now)
            return
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        expired = renewed is None or (now - renewed).total_seconds() > duration
        if holder != self.identity and holder and not expired:
            self._set(False)
            return
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        acquired = _parse(spec.get("acquireTime")) if holder == self.identity else now
        body = self._body(acquired or now, now, transitions)
        body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
        try:
            await self.api.call("PUT", f"{self.path}/{NAME}", json=body)
        except errors.Conflict:
            self._set(False)  # someone else wrote it first
            return
        self._won(now)

    def _won(self, now: datetime.datetime) -> None:
        self._renewed_at = time.monotonic()
        self._set(True)

    def _body(
        self, acquired: datetime.datetime, renewed: datetime.datetime, transitions: int
    ) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": NAME, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.duration),
                "acquireTime": _micro(acquired),
                "renewTime": _micro(renewed),
                "leaseTransitions": transitions,
            },
        }

    def _set(self, leader: bool) -> None:
        if leader == self.leader:
            return
        self.leader = leader
        logger.warning(
            "%s the prober lease %s/%s as %s",
            "holding" if leader else "not holding",
            self.namespace,
            NAME,
            self.identity,
        )
        if self.on_change is not None:
            self.on_change(leader)

    async def _release(self) -> None:
        """Let a successor take over at once instead of after ``duration``."""
        try:
            lease = (await self.api.call("GET", f"{self.path}/{NAME}")).json()
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = None
            await self.api.call("PUT", f"{self.path}/{NAME}", json=lease, deadline_seconds=5)
        except (errors.KubeApiError, errors.Unreachable) as error:
            logger.info("lease not released: %s", error)
