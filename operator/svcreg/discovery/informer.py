"""Keep the discovery index in step with the API server: list, then watch, forever.

Discovery-only replicas run this instead of Kopf: they only read, so they need no handlers, no
peering and no pausing. In operator mode Kopf's watch feeds the index and this module only
confirms when Kopf's first listing has fully landed (``confirm_listed``), so the process
watches registrations once. A list pages through every registration and replaces the index (so
objects deleted while disconnected disappear); the watch then applies each event as it comes,
with bookmarks keeping the resume point fresh. 410 Gone means the resume point is too old:
list again. ``index.synced`` turns true after the first complete list, which is what
``/readyz`` reports.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import random
from collections.abc import Iterable
from typing import Any, Protocol

from svcreg.core import model
from svcreg.core.keys import Key
from svcreg.core.scope import has_globs
from svcreg.discovery.index import Index
from svcreg.kube import errors
from svcreg.kube.api import KubeApi

logger = logging.getLogger(__name__)
WATCH_SECONDS = 290  # default; --watch-timeout-seconds sets it
# The API server sends a watch bookmark about once a minute (and just before the watch's own
# deadline): a watch that delivered nothing, not even a bookmark, for this long is taken for
# dead, the index is marked stale and the scope listed again. So a stalled-but-open watch
# serves at most this long without saying so, whatever --watch-timeout-seconds is.
QUIET_SECONDS = 90.0
PAGE = 500


class Sink(Protocol):
    """Where an informer's lists and events go: the index, or its book of ServicePolicies."""

    synced: bool

    def replace(self, bodies: Iterable[dict[str, Any]], namespace: str | None = None) -> None: ...

    def observe(self, event_type: str | None, body: dict[str, Any]) -> Any: ...

    def mark_stale(self, reason: str) -> None: ...

    def mark_fresh(self) -> None: ...


class PolicySink:
    """ServicePolicies into the index's policy book. A failing policy watch is logged, not
    made the index's staleness: registrations are still current."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.synced = False

    def replace(self, bodies: Iterable[dict[str, Any]], namespace: str | None = None) -> None:
        self.index.replace_policies(bodies, namespace)

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        self.index.observe_policy(event_type, body)

    def mark_stale(self, reason: str) -> None:
        logger.warning("ServicePolicies may be out of date: %s", reason)

    def mark_fresh(self) -> None:
        return None


class Informer:
    def __init__(
        self,
        api: KubeApi,
        index: Sink,
        namespaces: tuple[str, ...] = (),
        *,
        watch_seconds: float = WATCH_SECONDS,
        plural: str = model.PLURAL,
    ) -> None:
        self.api = api
        self.index = index
        self.plural = plural
        # A watch asks the server to end it after this long, and one that delivers nothing
        # (not even a bookmark) for a little longer is taken for dead and listed again.
        self.watch_seconds = watch_seconds
        self._failing: set[str | None] = set()
        self.patterns = namespaces
        literal = namespaces and not has_globs(namespaces)
        # Literal namespaces are listed one by one (namespaced RBAC suffices); globs need a
        # cluster-wide list, filtered here.
        self.scopes: tuple[str | None, ...] = tuple(namespaces) if literal else (None,)
        self._partial: dict[str | None, bool] = {}

    def _path(self, namespace: str | None) -> str:
        base = f"/apis/{model.GROUP}/{model.VERSION}"
        where = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{where}/{self.plural}"

    def _wanted(self, body: dict[str, Any]) -> bool:
        if not self.patterns or len(self.scopes) > 1 or self.scopes[0] is not None:
            return True
        namespace = (body.get("metadata") or {}).get("namespace", "")
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.patterns)

    async def run(self) -> None:
        await asyncio.gather(*(self._run_scope(scope) for scope in self.scopes))

    async def _run_scope(self, scope: str | None) -> None:
        backoff = 1.0
        while True:
            try:
                version = await self._list(scope)
                backoff = 1.0
                while True:
                    version = await self._watch(scope, version)
            except asyncio.CancelledError:
                raise
            except errors.Gone:
                logger.info("watch of %s expired (410); listing again", scope or "all namespaces")
            except Exception as error:
                logger.warning(
                    "watching registrations in %s failed: %s; retrying", scope or "all namespaces", error
                )
                self._failing.add(scope)
                self.index.mark_stale(f"watching {scope or 'all namespaces'} failed: {error}"[:300])
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 30.0)

    async def _list(self, scope: str | None) -> str:
        items: list[dict[str, Any]] = []
        params = {"limit": str(PAGE)}
        while True:
            page = (await self.api.call("GET", self._path(scope), params=params, deadline_seconds=120)).json()
            items += [i for i in page.get("items") or () if self._wanted(i)]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                version = str((page.get("metadata") or {}).get("resourceVersion", ""))
                break
            params = {"limit": str(PAGE), "continue": token}
        self.index.replace(items, scope)
        self._failing.discard(scope)
        if not self._failing:
            self.index.mark_fresh()
        self._partial[scope] = True
        if all(self._partial.get(s) for s in self.scopes):
            self.index.synced = True
        return version

    async def _keys(self) -> set[Key]:
        """Every registration's key, from a metadata-only list (no specs, no statuses)."""
        keys: set[Key] = set()
        accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
        for scope in self.scopes:
            params = {"limit": str(PAGE)}
            while True:
                page = (
                    await self.api.call(
                        "GET", self._path(scope), params=params, deadline_seconds=120, accept=accept
                    )
                ).json()
                keys |= {
                    (i["metadata"].get("namespace", ""), i["metadata"]["name"])
                    for i in page.get("items") or ()  # an empty metadata list has "items": null
                    if self._wanted(i)
                }
                token = (page.get("metadata") or {}).get("continue")
                if not token:
                    break
                params = {"limit": str(PAGE), "continue": token}
        return keys

    async def confirm_listed(self, recheck: float = 5.0) -> None:
        """Operator mode: mark the index synced once it has seen every registration that
        exists, fed by Kopf's watch. Kopf does not say when its first listing ends, so the keys
        are listed here (metadata only) and awaited; one deleted meanwhile is dropped from the
        wait by a fresh list every ``recheck`` seconds."""
        backoff = 1.0
        while True:
            try:
                expected = await self._keys()
                break
            except Exception as error:  # whatever went wrong, readiness depends on retrying
                logger.warning("listing registrations failed: %s; retrying", error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
        waited = 0.0
        seen: set[Key] = getattr(self.index, "seen", set())
        while expected - seen:
            await asyncio.sleep(0.1)
            waited += 0.1
            if waited >= recheck:
                waited = 0.0
                try:
                    expected &= await self._keys()
                except Exception as error:
                    logger.warning("listing registrations failed: %s; retrying", error)
        self.index.synced = True

    async def _watch(self, scope: str | None, version: str) -> str:
        params = {
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(int(self.watch_seconds)),
        }
        quiet = min(self.watch_seconds + 5, QUIET_SECONDS)
        async for event in self.api.stream(self._path(scope), params, read_timeout=quiet):
            kind = event.get("type")
            body = event.get("object") or {}
            if kind == "ERROR":
                raise errors.error_for(int(body.get("code") or 500), json.dumps(body).encode())
            version = str((body.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "BOOKMARK" or not self._wanted(body):
                continue
            self.index.observe(kind, body)
        return version
