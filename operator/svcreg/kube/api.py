"""A small async Kubernetes API client for the calls svcreg makes itself.

Kopf owns the operator's watches; status patches, Events, deletes, TokenReviews,
SubjectAccessReviews and the discovery-only informer's lists and watches go through this client,
so they can be issued from the scheduler and the HTTP server without a thread per call.
Credentials come from the same places as kubectl's: in-cluster ServiceAccount (token re-read as
it rotates) or the current kubeconfig.

Contracts: every call has a deadline (``DEFAULT_DEADLINE`` unless the caller gives one; a watch
has a read timeout instead); a transport failure or a passed deadline raises
``errors.Unreachable``; ``call`` raises the typed error of ``errors`` for any answer of 400 or
more, mapped in one place. The connection pool is bounded and watches never take more than
half of it, so reviews and status writes always find a connection.
"""

from __future__ import annotations

import contextlib
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

from svcreg.core import model
from svcreg.kube import errors
from svcreg.kube.errors import NotFound

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


DEFAULT_DEADLINE = 30.0
MAX_WATCHES = 256  # the watch pool's bound: one connection per watched namespace
CONNECT_TIMEOUT = 10.0


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


def _manifest(namespace: str, name: str, spec: dict[str, Any], **metadata_fields: Any) -> dict[str, Any]:
    """A ServiceRegistration with only the metadata given (empty fields left out)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    metadata |= {key: value for key, value in metadata_fields.items() if value}
    return {"apiVersion": model.API_VERSION, "kind": model.KIND, "metadata": metadata, "spec": spec}


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeApi:
    """aiohttp underneath: its connection pool stays cheap with hundreds of callers waiting,
    which matters when thousands of registrations change health at once."""

    def __init__(
        self,
        configuration: k8s_client.Configuration | None = None,
        *,
        max_connections: int = 32,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        self.configuration = configuration or _load_configuration()
        self.deadline = deadline  # seconds: the default deadline of every call
        context = ssl.create_default_context(cafile=self.configuration.ssl_ca_cert or None)
        if self.configuration.cert_file:
            context.load_cert_chain(self.configuration.cert_file, self.configuration.key_file)
        if not self.configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._ssl = context
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self.base_url = self.configuration.host.rstrip("/")
        self.instance = socket.gethostname()

    def _client(self, *, watch: bool = False) -> aiohttp.ClientSession:
        """The session for ordinary calls, or the one for watches. Watches hold their connection
        for minutes, so they get a pool of their own: however many namespaces are watched,
        reviews and status writes never wait behind them."""
        # Created on first use, inside the running event loop that will use it.
        session = self._watch_session if watch else self._session
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    ssl=self._ssl, limit=MAX_WATCHES if watch else self._max_connections
                ),
                timeout=aiohttp.ClientTimeout(total=self.deadline, connect=CONNECT_TIMEOUT),
                json_serialize=json.dumps,
            )
            if watch:
                self._watch_session = session
            else:
                self._session = session
        return session

    def authorization(self) -> str | None:
        """This client's ``Authorization`` header value (a bearer token), None with certificates:
        how a member of the prober group proves itself to another (same ServiceAccount)."""
        value = self.configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
        return value or None

    def _headers(
        self,
        content_type: str | None = None,
        accept: str = "application/json",
        impersonate: str | None = None,
    ) -> dict[str, str]:
        headers = {"Accept": accept}
        if impersonate:
            # Only the username: the API server derives a ServiceAccount's groups itself, and
            # constrained impersonation (``impersonate:serviceaccount``) allows nothing more.
            headers["Impersonate-User"] = impersonate
        # Calls the in-cluster refresh hook, so a rotated ServiceAccount token is picked up. The
        # kubernetes package files bearer tokens under "BearerToken" (older ones: "authorization").
        authorization = self.configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
        if authorization:
            headers["Authorization"] = authorization
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def close(self) -> None:
        for session in (self._session, self._watch_session):
            if session is not None:
                await session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        deadline_seconds: float | None = None,
        accept: str = "application/json",
        impersonate: str | None = None,
    ) -> Response:
        """One API call, whatever its answer; ``errors.Unreachable`` when none came within
        ``deadline_seconds`` (default: this client's ``deadline``). With ``impersonate`` (a
        username) the API server authorizes, admits and audits the call as that user."""
        body = None if json is None else _dumps(json)
        deadline = deadline_seconds or self.deadline
        try:
            async with self._client().request(
                method,
                self.base_url + path,
                data=body,
                params=params,
                headers=self._headers(content_type if json is not None else None, accept, impersonate),
                timeout=aiohttp.ClientTimeout(total=deadline, connect=min(CONNECT_TIMEOUT, deadline)),
            ) as answer:
                return Response(answer.status, await answer.read())
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise errors.Unreachable(f"{method} {path}: {type(error).__name__}: {error}") from error

    async def call(self, method: str, path: str, **options: Any) -> Response:
        """``request`` (same options), raising the typed error of ``svcreg.kube.errors`` for
        an answer of 400 and above."""
        response = await self.request(method, path, **options)
        if response.status_code >= 400:
            raise errors.error_for(response.status_code, response.content)
        return response

    async def stream(
        self, path: str, params: dict[str, str], read_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The JSON lines of a watch response. A watch that sends nothing (not even a bookmark)
        for ``read_timeout`` seconds raises ``errors.Unreachable``: a silent watch is a dead one."""
        try:
            async with self._client(watch=True).get(
                self.base_url + path,
                params=params,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=read_timeout),
            ) as answer:
                if answer.status != 200:
                    raise errors.error_for(answer.status, await answer.read())
                buffer = b""
                async for chunk in answer.content.iter_any():
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.strip():
                            yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise errors.Unreachable(f"watch {path}: {type(error).__name__}: {error}") from error

    @staticmethod
    def registration_path(namespace: str, name: str) -> str:
        return f"/apis/{model.GROUP}/{model.VERSION}/namespaces/{namespace}/{model.PLURAL}/{name}"

    async def patch_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        resource_version: str | None = None,
        plural: str = model.PLURAL,
    ) -> dict[str, Any]:
        """Merge-patch the status subresource (of a registration, or of ``plural``) and return
        the stored object. With
        ``resource_version``, the patch applies only to the object as last seen: anything
        written since, a same-named successor above all, answers ``errors.Conflict``. (The
        status subresource keeps the stored metadata, so a uid in the patch would be ignored;
        the resourceVersion is the precondition the API server enforces there.)"""
        patch: dict[str, Any] = {"status": status}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        response = await self.call(
            "PATCH",
            f"/apis/{model.GROUP}/{model.VERSION}/namespaces/{namespace}/{plural}/{name}/status",
            json=patch,
            content_type="application/merge-patch+json",
        )
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
        impersonate: str | None = None,
    ) -> dict[str, Any]:
        """Create or update a registration with server-side apply and return the stored object:
        the fields this manager sets are its own, and fields other managers (kubectl, GitOps)
        own are left alone. Refusals raise the typed errors of ``svcreg.kube.errors``."""
        manifest = _manifest(
            namespace, name, spec, labels=labels, annotations=annotations, ownerReferences=owner_references
        )
        answer = await self.call(
            "PATCH",
            self.registration_path(namespace, name),
            json=manifest,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": field_manager, "force": "true"},
            impersonate=impersonate,
        )
        stored: dict[str, Any] = answer.json()
        return stored

    async def create_registration(
        self,
        namespace: str,
        name: str,
        spec: dict[str, Any],
        *,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        impersonate: str | None = None,
    ) -> dict[str, Any]:
        """Create a registration that must not exist yet (``errors.Conflict`` when it does)."""
        manifest = _manifest(namespace, name, spec, labels=labels, annotations=annotations)
        answer = await self.call(
            "POST",
            f"/apis/{model.GROUP}/{model.VERSION}/namespaces/{namespace}/{model.PLURAL}",
            json=manifest,
            impersonate=impersonate,
        )
        stored: dict[str, Any] = answer.json()
        return stored

    async def delete_registration(self, namespace: str, name: str, uid: str) -> bool:
        """Delete exactly this object (uid precondition), never a same-named successor; False
        when it is already gone or replaced."""
        try:
            await self.call(
                "DELETE",
                self.registration_path(namespace, name),
                json={"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}},
            )
        except (NotFound, errors.Conflict):
            return False
        return True

    async def post_event(
        self,
        *,
        namespace: str,
        name: str,
        uid: str,
        event_type: str,
        reason: str,
        message: str,
        action: str,
        kind: str = model.KIND,
    ) -> None:
        now = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": model.API_VERSION,
                "kind": kind,
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
        with contextlib.suppress(NotFound):  # the namespace is going away
            await self.call("POST", f"/api/v1/namespaces/{namespace}/events", json=event)
