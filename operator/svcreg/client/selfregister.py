"""Self-registration the Kubernetes way: an app creates its own ServiceRegistration when it
starts, deletes it when it stops, and sends ttl heartbeats in between.

There is no second source of truth: the helper writes the same resource ``kubectl apply`` would,
with the pod's own ServiceAccount (which needs create, patch and delete on
serviceregistrations in its namespace, plus the ``heartbeat`` verb for ttl checks). In a pod
the name defaults to the pod name and the registration is owned by the pod, so the garbage
collector removes it even if the process dies without cleaning up.

    registration = SelfRegistration({"endpoint": "http://my-pod:8080", "capabilities": ["x"]})
    app.cleanup_ctx.append(registration.aiohttp)            # aiohttp
    app = FastAPI(lifespan=registration.lifespan)           # FastAPI / any ASGI lifespan
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from svcreg.client import fromenv
from svcreg.client.aio import AsyncDiscoveryClient
from svcreg.client.errors import NotFound, SvcregError
from svcreg.core import model

if TYPE_CHECKING:  # loaded only when used: the kube extra
    from svcreg.kube.api import KubeApi

logger = logging.getLogger(__name__)

FIELD_MANAGER = "svcreg-self-registration"
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _default_namespace() -> str:
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return NAMESPACE_FILE.read_text().strip()
    except OSError:
        return "default"


def _pod_owner() -> list[dict[str, Any]] | None:
    """The pod as owner, when the downward API gives its name and uid (POD_NAME, POD_UID)."""
    name, uid = os.environ.get("POD_NAME"), os.environ.get("POD_UID")
    if not (name and uid):
        return None
    return [{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid, "blockOwnerDeletion": False}]


class SelfRegistration:
    def __init__(
        self,
        spec: dict[str, Any],
        *,
        name: str | None = None,
        namespace: str | None = None,
        labels: dict[str, str] | None = None,
        api: KubeApi | None = None,
        discovery: AsyncDiscoveryClient | None = None,
        heartbeat_interval: float | None = None,
    ) -> None:
        # Validate now, where the mistake is made, rather than as a 422 at start-up.
        parsed = model.ServiceRegistrationSpec.model_validate(spec)
        self.spec = spec
        self.name = name or os.environ.get("POD_NAME") or socket.gethostname().split(".")[0].lower()
        self.namespace = namespace or _default_namespace()
        self.labels = labels or {}
        self._api = api
        self._discovery = discovery
        ttl = parsed.check_type() == "ttl"
        self.heartbeat_interval = heartbeat_interval or (
            max(1.0, parsed.health_check.ttl_seconds / 3) if ttl else None
        )
        self.uid: str | None = None
        self._beating: asyncio.Task[None] | None = None
        self._owned: list[Any] = []

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> SelfRegistration:
        """A registration described by ``SVCREG_SERVICE_*`` variables (see ``svcreg.client.fromenv``
        for the list), named by SVCREG_REGISTRATION_NAME or POD_NAME; ``options`` as for the
        constructor. ValueError naming the variable when a value is refused."""
        env = os.environ if environ is None else environ
        return cls(
            fromenv.spec_from_env(env),
            name=options.pop("name", None) or fromenv.name_from_env(env),
            **options,
        )

    async def start(self) -> None:
        if self._api is None:
            from svcreg.kube.api import KubeApi  # noqa: PLC0415 - needs the kube extra

            api = KubeApi()
            self._api = api
            self._owned.append(api)
        stored = await self._api.apply_registration(
            self.namespace,
            self.name,
            self.spec,
            field_manager=FIELD_MANAGER,
            labels={**self.labels, "app.kubernetes.io/managed-by": FIELD_MANAGER},
            owner_references=_pod_owner(),
        )
        self.uid = stored["metadata"]["uid"]
        logger.info("registered %s/%s", self.namespace, self.name)
        if self.heartbeat_interval:
            if self._discovery is None:
                self._discovery = AsyncDiscoveryClient()
                self._owned.append(self._discovery)
            self._beating = asyncio.create_task(self._heartbeats(), name="svcreg-heartbeats")

    async def beat(self, status: str = "passing", note: str = "") -> None:
        assert self._discovery is not None
        await self._discovery.heartbeat(self.namespace, self.name, status, note)

    async def _heartbeats(self) -> None:
        """Beat at once (Healthy without waiting a period), then every interval. Until discovery
        has seen the new registration it answers 404: retry that quickly."""
        assert self.heartbeat_interval is not None
        while True:
            pause = self.heartbeat_interval
            try:
                await self.beat()
            except NotFound:
                pause = min(0.2, pause)
            except (SvcregError, OSError, httpx.HTTPError) as error:  # keep beating: the next may pass
                logger.warning("heartbeat for %s/%s failed: %s", self.namespace, self.name, error)
            await asyncio.sleep(pause)

    async def stop(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
            self._beating = None
        if self._api is not None and self.uid is not None:
            # The uid precondition deletes exactly what this process created, never a successor
            # that a new pod with the same name registered meanwhile.
            await self._api.delete_registration(self.namespace, self.name, self.uid)
            logger.info("deregistered %s/%s", self.namespace, self.name)
            self.uid = None
        for owned in reversed(self._owned):
            await (owned.aclose() if isinstance(owned, AsyncDiscoveryClient) else owned.close())
        self._owned.clear()

    async def __aenter__(self) -> SelfRegistration:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def aiohttp(self, _app: object) -> AsyncIterator[None]:
        """For ``aiohttp.web.Application.cleanup_ctx``."""
        async with self:
            yield

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: object) -> AsyncIterator[None]:
        """An ASGI lifespan (``FastAPI(lifespan=registration.lifespan)``, Starlette likewise)."""
        async with self:
            yield
