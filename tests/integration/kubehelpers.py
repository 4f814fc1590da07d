"""What integration tests need from a real API server: namespaces, ServiceAccounts, tokens, RBAC."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from kubernetes import client

from svcreg.devtools import kubectl as kube
from svcreg.devtools.controlplane.cluster import Cluster

_counter = itertools.count()


@dataclass
class Kube:
    cluster: Cluster
    api: client.ApiClient
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.env = self.cluster.env()

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def rbac(self) -> client.RbacAuthorizationV1Api:
        return client.RbacAuthorizationV1Api(self.api)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return kube.kubectl(*args, env=self.env, input=input, check=check)

    def apply(
        self, manifest: dict[str, Any] | str, namespace: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.kubectl("apply", "-n", namespace, "-f", "-", input=text, check=check)

    def create_namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    def create_service_account(self, namespace: str, name: str) -> None:
        self.core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )

    def token(
        self, namespace: str, service_account: str, audiences: list[str] | None = None, seconds: int = 3600
    ) -> str:
        """A real ServiceAccount token from the TokenRequest API."""
        spec = client.V1TokenRequestSpec(audiences=audiences or [], expiration_seconds=seconds)
        answer = self.core.create_namespaced_service_account_token(
            service_account, namespace, client.AuthenticationV1TokenRequest(spec=spec)
        )
        token: str = answer.status.token
        return token

    def revoke(self, namespace: str, service_account: str) -> None:
        """Delete every RoleBinding in ``namespace`` that names the ServiceAccount."""
        for binding in self.rbac.list_namespaced_role_binding(namespace).items:
            if any(s.kind == "ServiceAccount" and s.name == service_account for s in binding.subjects or ()):
                self.rbac.delete_namespaced_role_binding(binding.metadata.name, namespace)

    def grant(
        self, namespace: str, service_account: str, verbs: list[str], sa_namespace: str | None = None
    ) -> None:
        """A Role on serviceregistrations with ``verbs``, bound to the ServiceAccount."""
        role = f"svcreg-{'-'.join(verbs)}-{uuid.uuid4().hex[:5]}"
        self.rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name=role),
                rules=[
                    client.V1PolicyRule(
                        api_groups=["svcreg.io"], resources=["serviceregistrations"], verbs=verbs
                    )
                ],
            ),
        )
        self.rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name=role),
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=role),
                subjects=[
                    client.RbacV1Subject(
                        kind="ServiceAccount", name=service_account, namespace=sa_namespace or namespace
                    )
                ],
            ),
        )

    def kubeconfig_as(self, namespace: str, service_account: str, path: Path) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount with a TokenRequest token, as
        a pod's mounted token would."""
        admin = yaml.safe_load(Path(self.cluster.kubeconfig).read_text())
        server = admin["clusters"][0]["cluster"]
        token = self.token(namespace, service_account)
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "local", "cluster": server}],
                    "users": [{"name": service_account, "user": {"token": token}}],
                    "contexts": [{"name": "sa", "context": {"cluster": "local", "user": service_account}}],
                    "current-context": "sa",
                }
            )
        )
        return path

    def get_registration(self, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            "svcreg.io", "v1alpha1", namespace, "serviceregistrations", name
        )
        return obj


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def expired_token(helper: Kube, namespace: str, service_account: str, audiences: list[str]) -> str:
    """A genuinely expired ServiceAccount token: a real token's claims with ``exp`` in the past,
    re-signed with the control plane's own signing key (TokenRequest will not issue one)."""
    real = helper.token(namespace, service_account, audiences)
    header, claims, _ = real.split(".")
    payload = json.loads(_unb64(claims))
    now = int(time.time())
    payload.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    signing_input = f"{header}.{_b64(json.dumps(payload).encode())}".encode()
    key_file = Path(helper.cluster.directory) / "pki" / "sa.key"
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input.decode()}.{_b64(signature)}"


def registration(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A ServiceRegistration manifest (no namespace: ``Kube.apply`` places it)."""
    return {
        "apiVersion": "svcreg.io/v1alpha1",
        "kind": "ServiceRegistration",
        "metadata": {"name": name},
        "spec": spec,
    }
