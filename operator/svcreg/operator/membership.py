"""Which operators probe together: one Lease (coordination.k8s.io) per member, and a share each.

Every operator run without ``--standalone`` holds its own Lease ``svcreg-prober-<identity>``,
labelled with its group, renewed every ``renew_every`` seconds; it lists the group's Leases on
the same beat. The live members are those whose Lease changed within its duration, judged by
this process's own clock from when it saw each change (as client-go's leader election does), so
clocks that differ between nodes do not matter. Registrations are shared by rendezvous hashing
over the live members (``sharding.owner``).

Never two writers for one registration. A member acts (probes and writes) only

- on a view of the members that is at most ``stale_after`` old (its last successful round), and
- once its own Lease has existed for ``settle`` >= ``stale_after`` seconds,

so every other member has seen it arrive, and given up its share, before it starts. A member
that dies stops acting at most ``stale_after`` after its last renewal; the others take its
share over only once its Lease has not changed for its duration (> ``stale_after``). A member
that stops cleanly deletes its Lease and the others take over at their next round. The gap in
probing of a moved share is therefore at most one interval plus the Lease duration (a crash) or
``settle`` (an arrival). Status writes also carry the resourceVersion they were decided on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from svcreg.core import model
from svcreg.core.keys import Key
from svcreg.kube import errors
from svcreg.kube.api import KubeApi
from svcreg.operator import sharding

logger = logging.getLogger(__name__)

GROUP_LABEL = f"{model.GROUP}/prober-group"
URL_ANNOTATION = f"{model.GROUP}/url"
PREFIX = "svcreg-prober-"


def lease_name(identity: str) -> str:
    """A DNS-1123 name for ``identity``'s Lease."""
    slug = re.sub(r"[^a-z0-9-]+", "-", identity.lower()).strip("-")[: 253 - len(PREFIX)]
    return PREFIX + (slug or "member")


def _micro(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Member:
    identity: str
    url: str


@dataclass
class _Seen:
    version: str
    changed_at: float  # this process's clock when ``version`` was first seen
    duration: float
    member: Member


class Membership:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        identity: str,
        url: str,
        *,
        group: str = "svcreg",
        duration: float = 15.0,
        renew_every: float = 2.0,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api, self.namespace, self.identity, self.url, self.group = api, namespace, identity, url, group
        self.duration, self.renew_every = duration, renew_every
        self.stale_after = 2 * renew_every
        self.settle = self.stale_after
        self.on_change = on_change
        self._clock = clock
        self.name = lease_name(identity)
        self._lease: dict[str, Any] | None = None
        self._joined_at: float | None = None  # when this process first held its Lease
        self._ok_at: float | None = None  # the last round that renewed and listed
        self._seen: dict[str, _Seen] = {}
        self._members: tuple[Member, ...] = ()
        self._owners: dict[Key, str | None] = {}
        self._acting = False
        self._leaving = False

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    # -- what the prober asks -----------------------------------------------------------------

    def acting(self) -> bool:
        """Whether this process may probe and write now (see the module's contract)."""
        if self._ok_at is None or self._joined_at is None:
            return False
        now = self._clock()
        return now - self._ok_at < self.stale_after and now - self._joined_at >= self.settle

    def members(self) -> tuple[Member, ...]:
        return self._members

    def owner(self, key: Key) -> Member | None:
        found = self._owners.get(key, "")
        if found == "":
            found = sharding.owner(key, (m.identity for m in self._members))
            if len(self._owners) > 1_000_000:  # bounded: one entry per registration in practice
                self._owners.clear()
            self._owners[key] = found
        return next((m for m in self._members if m.identity == found), None)

    def assigned(self, key: Key) -> bool:
        """Whether ``key`` is this member's share in its latest view, acting or not."""
        owner = self.owner(key)
        return owner is not None and owner.identity == self.identity

    def owns(self, key: Key) -> bool:
        """Whether this member probes and writes ``key`` now: assigned, and acting."""
        return self.acting() and self.assigned(key)

    def vantages(self, key: Key, count: int) -> list[Member]:
        """Up to ``count`` other live members to confirm a failure of ``key``: the next ones in
        its rendezvous order, so the same members are asked each time."""
        others = [m for m in self._members if m.identity != self.identity]
        others.sort(key=lambda m: sharding.weight(m.identity, key), reverse=True)
        return others[:count]

    def owner_url(self, key: Key) -> str | None:
        """Where to send what concerns ``key`` (a heartbeat, a report): the owner's URL, or
        None when that is this process or no one."""
        owner = self.owner(key)
        return None if owner is None or owner.identity == self.identity else owner.url

    # -- the beat -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Renew and list until cancelled; deletes this member's Lease on the way out, so the
        others take its share at their next round instead of after its duration."""
        try:
            while True:
                try:
                    await self.round()
                except (errors.KubeApiError, errors.Unreachable) as error:
                    logger.warning("prober membership %s/%s: %s", self.namespace, self.name, error)
                    self._publish()
                await asyncio.sleep(self.renew_every)
        finally:
            self._ok_at = None
            self._publish()
            await self._leave()

    async def leave(self) -> None:
        """Leave the group now, at the start of a shutdown rather than at its end: stop acting
        at once (nothing more is probed or written here), delete this member's Lease so the
        others take its share at their next round, and never renew it again."""
        self._leaving = True
        self._ok_at = None
        self._publish()
        await self._leave()
        self._lease = None

    async def round(self) -> None:
        if self._leaving:
            return
        await self._renew()
        listing = (
            await self.api.call("GET", self.path, params={"labelSelector": f"{GROUP_LABEL}={self.group}"})
        ).json()
        now = self._clock()
        present = set()
        for lease in listing.get("items") or []:
            metadata, spec = lease.get("metadata") or {}, lease.get("spec") or {}
            name, holder = metadata.get("name", ""), spec.get("holderIdentity")
            if not holder:
                continue
            present.add(name)
            version = str(metadata.get("resourceVersion") or "")
            url = (metadata.get("annotations") or {}).get(URL_ANNOTATION, "")
            duration = float(spec.get("leaseDurationSeconds") or self.duration)
            seen = self._seen.get(name)
            if seen is None or seen.version != version:
                self._seen[name] = _Seen(version, now, duration, Member(holder, url))
        for gone in set(self._seen) - present:
            del self._seen[gone]
        await self._collect(now)
        self._ok_at = now
        self._publish()

    def _live(self, now: float) -> tuple[Member, ...]:
        live = {s.member for name, s in self._seen.items() if now - s.changed_at <= s.duration}
        return tuple(sorted(live, key=lambda m: m.identity))

    def _publish(self) -> None:
        members, acting = self._live(self._clock()), self.acting()
        if members == self._members and acting == self._acting:
            return
        if members != self._members:
            self._owners.clear()
        self._members, self._acting = members, acting
        logger.warning(
            "prober group %s: %d member(s) %s; this member (%s) %s",
            self.group,
            len(members),
            [m.identity for m in members],
            self.identity,
            "probes its share" if acting else "probes nothing",
        )
        if self.on_change is not None:
            self.on_change()

    async def _renew(self) -> None:
        now = _micro(datetime.datetime.now(datetime.UTC))
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {GROUP_LABEL: self.group},
                "annotations": {URL_ANNOTATION: self.url},
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.duration),
                "acquireTime": now,
                "renewTime": now,
            },
        }
        try:
            if self._lease is None:
                stored = await self.api.call("POST", self.path, json=body)
            else:
                body["metadata"]["resourceVersion"] = self._lease["metadata"]["resourceVersion"]
                body["spec"]["acquireTime"] = self._lease["spec"].get("acquireTime", now)
                stored = await self.api.call("PUT", f"{self.path}/{self.name}", json=body)
        except (errors.Conflict, errors.NotFound):
            # Someone else's write (409 on POST: left over from a process of the same identity),
            # or deleted under us: read it again and renew over it next round.
            try:
                self._lease = (await self.api.call("GET", f"{self.path}/{self.name}")).json()
            except errors.NotFound:
                self._lease = None
            raise
        self._lease = stored.json()
        if self._joined_at is None:
            self._joined_at = self._clock()

    async def _collect(self, now: float) -> None:
        """Delete Leases of members gone for four durations (a crashed pod's), each only if
        unchanged since (a resourceVersion precondition): the list stays the live members."""
        for name, seen in list(self._seen.items()):
            if now - seen.changed_at <= 4 * seen.duration or name == self.name:
                continue
            with contextlib.suppress(errors.NotFound, errors.Conflict):
                await self.api.call(
                    "DELETE",
                    f"{self.path}/{name}",
                    json={"preconditions": {"resourceVersion": seen.version}},
                )
            self._seen.pop(name, None)

    async def _leave(self) -> None:
        if self._lease is None:
            return
        try:
            await self.api.call(
                "DELETE",
                f"{self.path}/{self.name}",
                json={"preconditions": {"resourceVersion": self._lease["metadata"]["resourceVersion"]}},
                deadline_seconds=5,
            )
        except (errors.KubeApiError, errors.Unreachable) as error:
            logger.info("prober Lease %s not deleted: %s", self.name, error)
