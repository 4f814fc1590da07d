"""Keep the discovery index in step with the API server: list, then watch, forever.

Discovery replicas run this instead of Kopf: they only read, so they need no handlers, no
peering and no pausing. A list pages through every registration and replaces the index (so
objects deleted while disconnected disappear); the watch then applies each event as it comes,
with bookmarks keeping the resume point fresh. 410 Gone means the resume point is too old:
list again. ``index.synced`` turns true after the first complete list, which is what
``/readyz`` reports.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import random
from typing import Any

from svcreg import model
from svcreg.index import Index
from svcreg.kubeapi import KubeApi, KubeApiError
from svcreg.settings import has_globs

logger = logging.getLogger(__name__)
WATCH_SECONDS = 290
PAGE = 500


class Gone(Exception):
    """The watch's resourceVersion is too old (HTTP 410): re-list."""


class Informer:
    def __init__(self, api: KubeApi, index: Index, namespaces: tuple[str, ...] = ()) -> None:
        self.api = api
        self.index = index
        self.patterns = namespaces
        literal = namespaces and not has_globs(namespaces)
        # Literal namespaces are listed one by one (namespaced RBAC suffices); globs need a
        # cluster-wide list, filtered here.
        self.scopes: tuple[str | None, ...] = tuple(namespaces) if literal else (None,)
        self._partial: dict[str | None, bool] = {}

    def _path(self, namespace: str | None) -> str:
        base = f"/apis/{model.GROUP}/{model.VERSION}"
        where = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{where}/{model.PLURAL}"

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
            except Gone:
                logger.info("watch of %s expired (410); listing again", scope or "all namespaces")
            except Exception as error:
                logger.warning(
                    "watching registrations in %s failed: %s; retrying", scope or "all namespaces", error
                )
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 30.0)

    async def _list(self, scope: str | None) -> str:
        items: list[dict[str, Any]] = []
        params = {"limit": str(PAGE)}
        while True:
            answer = await self.api.request("GET", self._path(scope), params=params, deadline_seconds=120)
            if answer.status_code != 200:
                raise KubeApiError(answer.status_code, answer.text[:300])
            page = answer.json()
            items += [i for i in page.get("items", []) if self._wanted(i)]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                version = str((page.get("metadata") or {}).get("resourceVersion", ""))
                break
            params = {"limit": str(PAGE), "continue": token}
        if scope is None:
            self.index.replace_all(items)
        else:
            self._replace_scope(scope, items)
        return version

    def _replace_scope(self, scope: str, items: list[dict[str, Any]]) -> None:
        seen = {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items}
        for item in items:
            self.index.observe("MODIFIED", item)
        for key in [k for k in self.index.items if k[0] == scope and k not in seen]:
            self.index.observe("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
        self._partial[scope] = True
        if all(self._partial.get(s) for s in self.scopes):
            self.index.synced = True

    async def _watch(self, scope: str | None, version: str) -> str:
        params = {
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        async for event in self.api.stream(self._path(scope), params, read_timeout=WATCH_SECONDS + 30):
            kind = event.get("type")
            body = event.get("object") or {}
            if kind == "ERROR":
                if body.get("code") == 410:
                    raise Gone()
                raise KubeApiError(int(body.get("code") or 500), str(body.get("message")))
            version = str((body.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "BOOKMARK" or not self._wanted(body):
                continue
            self.index.observe(kind, body)
        return version
