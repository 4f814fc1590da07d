"""The status writer: the one place the operator writes registrations' and ServicePolicies'
status, Events and deletes to the API, with the metrics of each.

The prober group's Leases are written by ``membership`` itself: a Lease renewal is the group's
own heartbeat, on its own deadline, and must never wait behind a queue of status writes.

Contracts:

- A status patch carries the resourceVersion last seen as its precondition, so a registration
  deleted and recreated under the same name (or changed meanwhile) never receives a verdict
  worked out for another object: the API server answers 409 and the write is made again from
  what the watch says now.
- ``write_status`` reports whether the write landed. The caller remembers a verdict only
  then; a write that failed (a 5xx, a 409, a 429, no answer within the deadline) is retried
  with backoff (``RetryBackoff``) until it lands or the object is gone.
- Events are best effort: a failed Event is counted and logged, never retried. At most
  ``inline_events`` are posted at once by their callers; beyond that an Event waits in a
  bounded queue for one background poster and its caller goes on at once, so a burst of
  transitions (ten thousand new registrations turning Healthy) spends the API server's write
  capacity on status first, and a full queue drops Events (counted), never status writes.
  This is how client-go's event broadcaster behaves under pressure too.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from typing import Any

from svcreg.core.keys import Key
from svcreg.core.model import POLICY_PLURAL, ServiceRegistrationStatus
from svcreg.kube import errors
from svcreg.kube.api import KubeApi
from svcreg.operator import status as status_mod
from svcreg.operator.reconcile import EventSpec
from svcreg.telemetry.metrics import Metrics

logger = logging.getLogger(__name__)


@dataclass
class RetryBackoff:
    """Delays between attempts of one failing write: doubling from ``first`` up to ``limit``."""

    first: float = 0.5
    limit: float = 30.0
    failures: dict[Key, int] = field(default_factory=dict)

    def failed(self, key: Key) -> float:
        """Record a failure of ``key``'s write; the seconds to wait before the next attempt."""
        count = self.failures.get(key, 0) + 1
        self.failures[key] = count
        return min(self.limit, self.first * 2.0 ** (count - 1))

    def landed(self, key: Key) -> None:
        self.failures.pop(key, None)


class WriteOutcome:
    LANDED = "ok"
    GONE = "notfound"
    FAILED = "error"


INLINE_EVENTS = 8  # Events posted at once by their callers
QUEUED_EVENTS = 5_000  # Events waiting for the background poster; more are dropped (counted)
_Posting = tuple[Key, str, EventSpec, str | None]


class StatusWriter:
    def __init__(
        self,
        api: KubeApi,
        metrics: Metrics,
        *,
        inline_events: int = INLINE_EVENTS,
        queued_events: int = QUEUED_EVENTS,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.backoff = RetryBackoff()
        self._inline, self._queue_bound = inline_events, queued_events
        self._posting = 0
        self._queued: collections.deque[_Posting] = collections.deque()
        self._poster: asyncio.Task[None] | None = None

    async def write_status(
        self,
        key: Key,
        resource_version: str,
        previous: ServiceRegistrationStatus | None,
        wanted: ServiceRegistrationStatus,
    ) -> tuple[str, dict[str, Any] | None]:
        """Patch ``wanted`` onto the object as it was at ``resource_version``. Returns the
        outcome and, when it landed, the stored object."""
        namespace, name = key
        try:
            stored = await self.api.patch_status(
                namespace,
                name,
                status_mod.to_patch(previous, wanted),
                resource_version=resource_version or None,
            )
        except errors.NotFound:
            self.metrics.status_writes.labels(WriteOutcome.GONE).inc()
            self.backoff.landed(key)
            return WriteOutcome.GONE, None
        except (errors.KubeApiError, errors.Unreachable) as error:
            self.metrics.status_writes.labels(WriteOutcome.FAILED).inc()
            logger.warning("status of %s/%s not written (will retry): %s", namespace, name, error)
            return WriteOutcome.FAILED, None
        self.metrics.status_writes.labels(WriteOutcome.LANDED).inc()
        self.backoff.landed(key)
        return WriteOutcome.LANDED, stored

    async def write_policy_status(self, key: Key, body: dict[str, Any]) -> bool:
        """Merge-patch ``body`` onto the ServicePolicy ``key``'s status; whether it landed. No
        precondition: a policy's status is recomputed whole from the index on every pass, so a
        write that fails is simply made again on the next one."""
        namespace, name = key
        try:
            await self.api.patch_status(namespace, name, body, plural=POLICY_PLURAL)
        except (errors.KubeApiError, errors.Unreachable) as error:
            self.metrics.status_writes.labels(WriteOutcome.FAILED).inc()
            logger.warning("ServicePolicy %s/%s: status not written (will retry): %s", namespace, name, error)
            return False
        self.metrics.status_writes.labels(WriteOutcome.LANDED).inc()
        return True

    async def post_event(self, key: Key, uid: str, event: EventSpec, kind: str | None = None) -> None:
        """Post ``event`` about the object ``key``/``uid`` now, or queue it when
        ``inline_events`` are being posted already (see the module's contract)."""
        if self._posting < self._inline:
            self._posting += 1
            try:
                await self._post(key, uid, event, kind)
            finally:
                self._posting -= 1
            return
        if len(self._queued) >= self._queue_bound:
            self.metrics.events_dropped.inc()
            return
        self._queued.append((key, uid, event, kind))
        if self._poster is None or self._poster.done():
            self._poster = asyncio.get_running_loop().create_task(self._drain(), name="svcreg-event-poster")

    def events_waiting(self) -> int:
        return len(self._queued)

    async def events_posted(self) -> None:
        """Return once the background poster has posted every queued Event."""
        if self._poster is not None:
            await self._poster

    async def _drain(self) -> None:
        while self._queued:
            await self._post(*self._queued.popleft())

    async def _post(self, key: Key, uid: str, event: EventSpec, kind: str | None) -> None:
        namespace, name = key
        about = {"kind": kind} if kind else {}
        try:
            await self.api.post_event(
                namespace=namespace,
                name=name,
                uid=uid,
                event_type=event.type,
                reason=event.reason,
                message=event.message,
                action=event.action,
                **about,
            )
            self.metrics.events.labels(event.type).inc()
        except (errors.KubeApiError, errors.Unreachable) as error:
            logger.warning("event for %s/%s not posted: %s", namespace, name, error)

    async def delete(self, key: Key, uid: str) -> bool | None:
        """Delete exactly ``uid``: True when deleted, False when already gone or replaced,
        None when the API did not take it (retried on a later round)."""
        namespace, name = key
        try:
            deleted = await self.api.delete_registration(namespace, name, uid)
        except (errors.KubeApiError, errors.Unreachable) as error:
            logger.warning("deregistering %s/%s failed: %s", namespace, name, error)
            return None
        if deleted:
            self.metrics.deregistrations.inc()
        return deleted
