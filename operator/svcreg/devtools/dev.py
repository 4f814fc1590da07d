"""``svcreg dev``: everything needed to try svcreg on one machine, in the foreground.

It starts the local control plane (unless one is running), installs the CRD, starts one small
HTTP demo target per example and applies the examples pointed at them, creates a reader
ServiceAccount, runs the operator and discovery with loopback probes allowed, sends the ttl
example's heartbeats, and prints a curl that works as pasted. Ctrl-C stops all of it, the
control plane included when this command started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from svcreg.core import model
from svcreg.devtools import kubectl as kube
from svcreg.devtools.controlplane import cluster, pki, progress
from svcreg.devtools.controlplane.ports import free_port
from svcreg.settings import Settings

logger = logging.getLogger("svcreg.devtools.dev")
NAMESPACE = "default"
ACCOUNT = "svcreg-dev"
# The consumer roles the Helm chart ships, for the local control plane (no Helm needed here).
CONSUMER_ROLES = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "svcreg-reader"},
        "rules": [
            {"apiGroups": [model.GROUP], "resources": [model.PLURAL], "verbs": ["get", "list", "watch"]}
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "svcreg-heartbeat"},
        "rules": [{"apiGroups": [model.GROUP], "resources": [model.PLURAL], "verbs": ["heartbeat"]}],
    },
]


@dataclass
class DemoTargets:
    """One tiny HTTP server per example on 127.0.0.1: 200 on every path (so /health, /healthz
    and /ready all pass), answering with who it is so ``request()`` shows where it landed."""

    runners: list[web.AppRunner] = field(default_factory=list)

    async def start(self, name: str) -> str:
        async def answer(request: web.Request) -> web.Response:
            return web.json_response({"instance": name, "path": request.path})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        self.runners.clear()


def example_documents(directory: Path = kube.EXAMPLES_DIR) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def rbac_documents() -> list[dict[str, Any]]:
    binding = {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}
    return [
        *CONSUMER_ROLES,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT, "namespace": NAMESPACE}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{ACCOUNT}-reads-everything"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "svcreg-reader",
            },
            "subjects": [binding],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{ACCOUNT}-heartbeats", "namespace": NAMESPACE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "svcreg-heartbeat",
            },
            "subjects": [binding],
        },
    ]


def apply(documents: list[dict[str, Any]], env: dict[str, str]) -> None:
    """kubectl apply ``documents`` (in NAMESPACE where they are namespaced)."""
    kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=_yaml(documents), env=env)


def delete(documents: list[dict[str, Any]], env: dict[str, str]) -> None:
    """kubectl delete ``documents``, those already gone included, without waiting."""
    text = _yaml(documents)
    kube.kubectl(
        "delete", "-n", NAMESPACE, "--ignore-not-found", "--wait=false", "-f", "-", input=text, env=env
    )


def _yaml(documents: list[dict[str, Any]]) -> str:
    return "\n---\n".join(yaml.safe_dump(d) for d in documents)


async def heartbeats(url: str, token: str, names: list[str]) -> None:
    """The ttl examples' heartbeats, as their services would send them."""
    from svcreg.client import AsyncDiscoveryClient, SvcregError  # noqa: PLC0415

    async with AsyncDiscoveryClient(url, token) as client:
        while True:
            for name in names:
                with contextlib.suppress(SvcregError, OSError):
                    await client.heartbeat(NAMESPACE, name, note="svcreg dev")
            await asyncio.sleep(10)


@contextlib.asynccontextmanager
async def _demo_world(env: dict[str, str]) -> AsyncIterator[list[str]]:
    """Start the demo targets, apply the examples pointed at them; yield the ttl examples."""
    targets = DemoTargets()
    ttl: list[str] = []
    try:
        documents = []
        for doc in example_documents():
            spec = doc.get("spec") or {}
            if spec.get("endpoint"):
                spec["endpoint"] = await targets.start(doc["metadata"]["name"])
            if model.ServiceRegistrationSpec.model_validate(spec).check_type() == "ttl":
                ttl.append(doc["metadata"]["name"])
            documents.append(doc)
        apply(documents, env)
        yield ttl
    finally:
        await targets.stop()


async def _serve(settings: Settings, env: dict[str, str], token: str) -> None:
    from svcreg import main as runner  # noqa: PLC0415 - Kopf is imported only when it runs

    url = f"http://127.0.0.1:{settings.port}"
    async with _demo_world(env) as ttl:
        operator = asyncio.create_task(runner.run(settings), name="svcreg-operator")
        beats = asyncio.create_task(heartbeats(url, token, ttl), name="svcreg-dev-heartbeats")
        announced = asyncio.create_task(_announce(url, token), name="svcreg-dev-announce")
        try:
            await operator
        finally:
            for task in (beats, announced, operator):
                task.cancel()
            await asyncio.gather(beats, announced, operator, return_exceptions=True)


async def _announce(url: str, token: str) -> None:
    import httpx  # noqa: PLC0415

    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    break
            await asyncio.sleep(0.2)
    curl = f"curl -s -H {shlex.quote('Authorization: Bearer ' + token)} {url}/v1/capabilities"
    print(
        "\nsvcreg dev is ready. Discovery, as the reader ServiceAccount default/svcreg-dev:\n\n"
        f"  {curl}\n\n"
        "From the shell with the client (in another terminal):\n\n"
        f"  export SVCREG_URL={url} SVCREG_TOKEN={shlex.quote(token)}\n"
        "  svcreg discover; svcreg discover --capability rest-api -o json\n\n"
        f"kubectl: {shlex.join(['export', 'KUBECONFIG=' + os.environ.get('KUBECONFIG', '')])}"
        "; kubectl get svcreg -w\n"
        "Ctrl-C stops everything svcreg dev started.\n",
        flush=True,
    )


def interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run(port: int, directory: Path | None = None) -> int:
    already = cluster.status(directory)
    try:
        running = cluster.up(directory, report=progress.stderr_reporter)
    except cluster.ClusterError as error:
        print(f"svcreg dev: {error}", file=sys.stderr)
        return 1
    env = running.env()
    os.environ["KUBECONFIG"] = running.kubeconfig
    os.environ["PATH"] = env["PATH"]
    signal.signal(signal.SIGTERM, interrupt)  # like Ctrl-C, for supervisors (Kopf takes over later)
    try:
        print("svcreg dev: installing the CRD, examples and a reader ServiceAccount", file=sys.stderr)
        kube.install_crd(env)
        apply(rbac_documents(), env)
        token = kube.kubectl(
            "create", "token", ACCOUNT, "-n", NAMESPACE, "--duration=24h", env=env
        ).stdout.strip()
        # The admission webhook, as the chart's admissionWebhook does it: a bad spec is refused
        # at kubectl apply, naming the field.
        ca, cert, key = pki.serving_pair(Path(running.directory) / "admission", ["localhost"])
        admission_port = free_port()
        kube.install_admission_webhook(
            env,
            kube.admission_webhook(
                f"https://localhost:{admission_port}/validate/serviceregistrations", ca.read_bytes()
            ),
        )
        settings = Settings(
            port=port,
            host="127.0.0.1",
            probe_allow=("127.0.0.0/8",),
            standalone=True,
            admission_port=admission_port,
            admission_cert_file=str(cert),
            admission_key_file=str(key),
        )
        asyncio.run(_serve(settings, env, token))
    except KeyboardInterrupt:
        print("\nsvcreg dev: stopping", file=sys.stderr)
    finally:
        if already is None:
            cluster.down(directory, report=progress.stderr_reporter)
        else:
            kube.kubectl(
                "delete", "validatingwebhookconfiguration", kube.WEBHOOK_NAME, "--ignore-not-found",
                env=env, check=False,
            )  # fmt: skip
    return 0
