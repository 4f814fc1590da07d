"""A small async Kubernetes API client for the writes and reviews svcreg makes itself.

Kopf owns the watches; status patches, Events, deletes and (for discovery) TokenReviews and
SubjectAccessReviews go through this client so that they can be issued from the scheduler and
the HTTP server without a thread per call. Credentials come from the same places as kubectl's:
in-cluster ServiceAccount (token re-read as it rotates) or the current kubeconfig.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from svcreg import model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Response:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class KubeApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def _load_configuration() -> k8s_client.Configuration:
    configuration = k8s_client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        # Pass KUBECONFIG explicitly: the kubernetes package reads it once, at import time.
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    return configuration


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeApi:
    """aiohttp underneath: its connection pool stays cheap with hundreds of callers waiting,
    which matters when thousands of registrations change health at once."""

    def __init__(
        self, configuration: k8s_client.Configuration | None = None, *, max_connections: int = 32
    ) -> None:
        self.configuration = configuration or _load_configuration()
        context = ssl.create_default_context(cafile=self.configuration.ssl_ca_cert or None)
        if self.configuration.cert_file:
            context.load_cert_chain(self.configuration.cert_file, self.configuration.key_file)
        if not self.configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._ssl = context
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self.base_url = self.configuration.host.rstrip("/")
        self.instance = socket.gethostname()

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running event loop that will use it.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=30, connect=10),
                json_serialize=json.dumps,
            )
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        # Calls the in-cluster refresh hook, so a rotated ServiceAccount token is picked up. The
        # kubernetes package files bearer tokens under "BearerToken" (older ones: "authorization").
        authorization = self.configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
        if authorization:
            headers["Authorization"] = authorization
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        deadline_seconds: float | None = None,
    ) -> Response:
        """One API call; ``deadline_seconds`` overrides the 30 s default for slow calls (bulk deletes)."""
        body = None if json is None else _dumps(json)
        async with self._client().request(
            method,
            self.base_url + path,
            data=body,
            params=params,
            headers=self._headers(content_type if json is not None else None),
            timeout=aiohttp.ClientTimeout(total=deadline_seconds, connect=10) if deadline_seconds else None,
        ) as answer:
            return Response(answer.status, await answer.read())

    async def stream(
        self, path: str, params: dict[str, str], read_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The JSON lines of a watch response."""
        async with self._client().get(
            self.base_url + path,
            params=params,
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=read_timeout),
        ) as answer:
            if answer.status != 200:
                raise KubeApiError(answer.status, (await answer.read()).decode(errors="replace")[:500])
            buffer = b""
            async for chunk in answer.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)

    @staticmethod
    def registration_path(namespace: str, name: str) -> str:
        return f"/apis/{model.GROUP}/{model.VERSION}/namespaces/{namespace}/{model.PLURAL}/{name}"

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch the status subresource; None when the resource is gone (not an error)."""
        response = await self.request(
            "PATCH",
            self.registration_path(namespace, name) + "/status",
            json={"status": status},
            content_type="application/merge-patch+json",
        )
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise KubeApiError(response.status_code, response.text[:500])
        answer: dict[str, Any] = response.json()
        return answer

    async def apply_registration(
        self,
        namespace: str,
        name: str,
        spec: dict[str, Any],
        *,
        field_manager: str,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        owner_references: list[dict[str, Any]] | None = None,
    ) -> Response:
        """Create or update a registration with server-side apply: the fields this manager sets
        are its own, and fields other managers (kubectl, GitOps) own are left alone."""
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        for key, value in (
            ("labels", labels),
            ("annotations", annotations),
            ("ownerReferences", owner_references),
        ):
            if value:
                metadata[key] = value
        manifest = {"apiVersion": model.API_VERSION, "kind": model.KIND, "metadata": metadata, "spec": spec}
        return await self.request(
            "PATCH",
            self.registration_path(namespace, name),
            json=manifest,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": field_manager, "force": "true"},
        )

    async def delete_registration(self, namespace: str, name: str, uid: str) -> bool:
        """Delete exactly this object (uid precondition), never a same-named successor."""
        response = await self.request(
            "DELETE",
            self.registration_path(namespace, name),
            json={"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}},
        )
        if response.status_code in (404, 409):
            return False
        if response.status_code >= 400:
            raise KubeApiError(response.status_code, response.text[:500])
        return True

    async def post_event(
        self, *, namespace: str, name: str, uid: str, event_type: str, reason: str, message: str, action: str
    ) -> None:
        now = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": model.API_VERSION,
                "kind": model.KIND,
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "action": action,
            "source": {"component": "svcreg-operator", "host": self.instance},
            "reportingComponent": "svcreg.io/operator",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        response = await self.request("POST", f"/api/v1/namespaces/{namespace}/events", json=event)
        if response.status_code >= 400 and response.status_code != 404:
            raise KubeApiError(response.status_code, response.text[:500])
