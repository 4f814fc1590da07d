"""The Python client, the HTTP registration API and self-registration, against a real operator,
a real API server and real targets."""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web
from kubernetes import config as k8s_config

from svcreg import client
from svcreg.client.selfregister import SelfRegistration
from svcreg.devtools.controlplane.cluster import Cluster
from svcreg.kube.api import KubeApi
from tests.targets import AppTarget, free_port

from .kubehelpers import Kube, registration
from .operator_process import OperatorProcess

FAST = client.RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


@dataclass
class World:
    operator: OperatorProcess
    ns: str
    other: str
    targets: dict[str, AppTarget]
    k8s: Kube

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.operator.port}"

    def token(self, who: str, namespace: str | None = None) -> str:
        return self.k8s.token(namespace or self.ns, who)

    def client(self, who: str = "reader") -> client.DiscoveryClient:
        return client.DiscoveryClient(self.url, self.token(who), retry=FAST)


def _ready(k8s: Kube, namespace: str, *names: str) -> None:
    for name in names:
        k8s.kubectl("wait", "--for=condition=Ready", f"svcreg/{name}", "-n", namespace, "--timeout=60s")


@pytest.fixture(scope="module")
def world(k8s: Kube, control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ns, other = k8s.create_namespace("c"), k8s.create_namespace("c")
    for sa in ("reader", "writer", "stranger", "creator"):
        k8s.create_service_account(ns, sa)
    k8s.create_service_account(other, "writer")
    k8s.grant(ns, "reader", ["get", "list", "watch"])
    k8s.grant(ns, "writer", ["get", "list", "watch", "create", "update", "patch", "delete", "heartbeat"])
    k8s.grant(ns, "creator", ["create"])
    targets = {name: AppTarget(name) for name in ("heavy", "light", "zero", "flaky", "live")}
    targets["flaky"].fail_first = 2
    refused = free_port()  # nothing listens here
    check = {"intervalSeconds": 1, "timeoutSeconds": 0.5, "path": "/health"}
    specs: dict[str, dict[str, Any]] = {
        "heavy": {"capabilities": ["pick"], "weight": 300},
        "light": {"capabilities": ["pick"], "weight": 100},
        "zero": {"capabilities": ["pick"], "weight": 0},
        "flaky": {"capabilities": ["flaky"]},
        "live": {"capabilities": ["failover"], "weight": 1},
    }
    for name, spec in specs.items():
        spec |= {"endpoint": targets[name].url, "healthCheck": check}
        k8s.apply(registration(name, spec), ns)
    # Healthy by its health port, but its endpoint refuses connections.
    k8s.apply(
        registration(
            "dead",
            {
                "endpoint": f"http://127.0.0.1:{refused}",
                "capabilities": ["failover"],
                "weight": 1000,
                "healthCheck": {**check, "port": targets["live"].port},
            },
        ),
        ns,
    )
    operator = OperatorProcess(
        control_plane,
        tmp_path_factory.mktemp("client") / "operator.log",
        "--namespace",
        ns,
        "--namespace",
        other,
        "--probe-allow",
        "127.0.0.0/8",
        "--cors-origin",
        "https://ui.example",
    ).start()
    _ready(k8s, ns, *specs, "dead")
    yield World(operator, ns, other, targets, k8s)
    operator.stop()
    for target in targets.values():
        target.close()
    assert "Traceback" not in operator.log_text(), operator.log_text()[-4000:]


# --- the client -----------------------------------------------------------------------------------


def test_resolve_follows_weights(world: World) -> None:
    with world.client() as c:
        picks = collections.Counter(c.resolve("pick") for _ in range(400))
    heavy, light = picks[world.targets["heavy"].url], picks[world.targets["light"].url]
    assert picks[world.targets["zero"].url] == 0
    assert heavy + light == 400
    assert 2.0 < heavy / light < 4.5, picks


def test_request_retries_5xx_then_succeeds(world: World) -> None:
    with world.client() as c:
        answer = c.request("flaky", "GET", "/flaky")
    assert answer.status_code == 200 and answer.json()["target"] == "flaky"
    assert world.targets["flaky"].calls["/flaky"] == 3


def test_request_fails_over_from_a_refusing_instance(world: World) -> None:
    with world.client() as c:
        answers = [c.request("failover", "GET", "/work").json()["target"] for _ in range(5)]
    assert answers == ["live"] * 5


def test_request_never_retries_4xx(world: World) -> None:
    before = world.targets["heavy"].calls.get("/missing", 0) + world.targets["light"].calls.get("/missing", 0)
    with world.client() as c:
        assert c.request("pick", "GET", "/missing").status_code == 404
    after = world.targets["heavy"].calls.get("/missing", 0) + world.targets["light"].calls.get("/missing", 0)
    assert after - before == 1


def test_typed_errors(world: World) -> None:
    with world.client() as c:
        with pytest.raises(client.UnknownCapability, match="'no-such-thing'"):
            c.resolve("no-such-thing")
        with pytest.raises(client.BadRequest) as bad:
            c.services(version="not a range")
        assert bad.value.parameter == "version"
    with client.DiscoveryClient(world.url, world.token("stranger")) as c, pytest.raises(client.Forbidden):
        c.services()
    with client.DiscoveryClient(world.url, "garbage") as c, pytest.raises(client.Unauthorized):
        c.services()


def test_typed_results(world: World) -> None:
    with world.client() as c:
        found = c.services(capability="pick", health="any")
        assert {i.name for i in found.items} == {"heavy", "light", "zero"}
        assert found.index > 0
        heavy = c.service(world.ns, "heavy")
        assert (heavy.weight, heavy.health, heavy.ready) == (300, "Healthy", True)
        summary = {s.name: s for s in c.capabilities().capabilities}
        assert summary["pick"].total == 3
        assert c.stats().total == 6


def test_token_file_rotation(world: World, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("not-a-token")
    c = client.DiscoveryClient(world.url, token_file=token_file)
    with c:
        with pytest.raises(client.Unauthorized):
            c.services()
        token_file.write_text(world.token("reader"))
        stat = token_file.stat()
        os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert c.services(capability="pick").count == 3


async def test_async_client_resolves_and_watches(world: World) -> None:
    async with client.AsyncDiscoveryClient(world.url, world.token("reader"), retry=FAST) as c:
        assert await c.resolve("flaky") == world.targets["flaky"].url
        events = c.watch(index=(await c.services()).index, capability="pick")
        world.k8s.kubectl(
            "patch", "svcreg/light", "-n", world.ns, "--type=merge", "-p", '{"spec":{"tags":["x"]}}'
        )
        event = await asyncio.wait_for(anext(events), 60)
        assert event.type == "updated" and event.registration is not None
        assert event.registration.name == "light" and event.registration.tags == ["x"]
        await events.aclose()


# --- the HTTP registration API --------------------------------------------------------------------


def _put(world: World, who: str, name: str, body: Any, namespace: str | None = None) -> httpx.Response:
    return httpx.put(
        f"{world.url}/v1/registrations/{namespace or world.ns}/{name}",
        headers={"Authorization": f"Bearer {world.token(who)}"},
        json=body,
        timeout=30,
    )


def test_registration_api_rbac_matrix(world: World) -> None:
    body = {"spec": {"endpoint": world.targets["live"].url, "capabilities": ["via-http"]}}
    assert _put(world, "reader", "via-http", body).status_code == 403
    assert _put(world, "writer", "via-http", body, namespace=world.other).status_code == 403
    created = _put(world, "writer", "via-http", body)
    assert created.status_code == 201, created.text
    assert created.json()["registeredBy"] == f"system:serviceaccount:{world.ns}:writer"
    stored = world.k8s.get_registration(world.ns, "via-http")
    assert stored["metadata"]["annotations"]["svcreg.io/registered-by"].endswith(":writer")
    assert stored["spec"]["capabilities"] == ["via-http"]
    body["spec"]["weight"] = 7
    updated = _put(world, "writer", "via-http", body)
    assert updated.status_code == 200 and updated.json()["created"] is False
    assert world.k8s.get_registration(world.ns, "via-http")["spec"]["weight"] == 7

    def delete(who: str) -> httpx.Response:
        return httpx.delete(
            f"{world.url}/v1/registrations/{world.ns}/via-http",
            headers={"Authorization": f"Bearer {world.token(who)}"},
            timeout=30,
        )

    assert delete("reader").status_code == 403
    assert delete("writer").json() == {"namespace": world.ns, "name": "via-http", "deleted": True}
    assert delete("writer").status_code == 404


def test_registration_api_is_no_confused_deputy(world: World) -> None:
    """RBAC is asked before any lookup, about the verb actually performed."""
    body = {"spec": {"endpoint": world.targets["live"].url, "capabilities": ["deputy"]}}
    assert _put(world, "writer", "deputy-taken", body).status_code == 201
    # A caller with no rights learns nothing about which names exist.
    taken, free = _put(world, "reader", "deputy-taken", body), _put(world, "reader", "deputy-free", body)
    assert taken.status_code == free.status_code == 403
    assert taken.json()["error"]["message"] == free.json()["error"]["message"]
    # A caller that may only create gets create-only semantics: never an overwrite.
    assert _put(world, "creator", "deputy-new", body).status_code == 201
    body["spec"]["weight"] = 1
    clash = _put(world, "creator", "deputy-taken", body)
    assert clash.status_code == 409, clash.text
    assert world.k8s.get_registration(world.ns, "deputy-taken")["spec"].get("weight", 100) == 100


def test_registration_api_writes_as_the_caller(world: World) -> None:
    """Admission sees the calling ServiceAccount, not svcreg: a policy that refuses one caller
    refuses that caller's write through the API too, and the caller hears the policy's reason."""
    k8s, ns = world.k8s, world.ns
    k8s.create_service_account(ns, "audited")
    k8s.grant(ns, "audited", ["create", "patch", "get", "delete"])
    audited = f"system:serviceaccount:{ns}:audited"
    policy = f"svcreg-deny-audited-{ns}"
    k8s.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["svcreg.io"],
                            "apiVersions": ["*"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["serviceregistrations"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": f"request.userInfo.username != '{audited}'",
                        "message": "audited callers may not register here",
                        "reason": "Forbidden",
                    }
                ],
            },
        },
        ns,
    )
    k8s.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
            },
        },
        ns,
    )
    try:
        manifest = yaml.safe_dump(registration("as-kubectl", {"endpoint": world.targets["live"].url}))
        # The policy is in force once kubectl, acting as the same ServiceAccount, is refused (a
        # server-side dry run: every attempt is a CREATE that admission sees).
        command = ("create", "--dry-run=server", "--as", audited, "-n", ns, "-f", "-")
        deadline = time.monotonic() + 60
        refusal = "audited callers may not register here"
        while refusal not in k8s.kubectl(*command, input=manifest, check=False).stderr:
            assert time.monotonic() < deadline, "the admission policy never took effect"
            time.sleep(0.2)
        body = {"spec": {"endpoint": world.targets["live"].url, "capabilities": ["audited"]}}
        refused = _put(world, "audited", "audited-write", body)
        assert refused.status_code == 403, refused.text
        assert "audited callers may not register here" in refused.json()["error"]["message"]
        # Another caller of the same rights is not refused: the policy saw who asked.
        assert _put(world, "writer", "audited-write", body).status_code == 201
        stored = k8s.get_registration(ns, "audited-write")
        assert (
            stored["metadata"]["annotations"]["svcreg.io/registered-by"]
            == f"system:serviceaccount:{ns}:writer"
        )
    finally:
        k8s.kubectl(
            "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy, check=False
        )


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"spec": {"endpoint": "http://x:80", "weight": -1}}, "spec.weight"),
        ({"spec": {"endpoint": "ftp://x"}}, "spec.endpoint"),
        (
            {"spec": {"endpoint": "http://x:80", "healthCheck": {"intervalSeconds": "often"}}},
            "spec.healthCheck.intervalSeconds",
        ),
        ({"spec": {"endpoint": "http://x:80", "unknown": 1}}, "spec.unknown"),
        (
            {
                "spec": {
                    "endpoint": "http://x:80",
                    "capabilities": [{"name": "c", "inputSchema": {"minLength": -1}}],
                }
            },
            "spec.capabilities[0].inputSchema",
        ),
        ({"endpoint": "http://x:80"}, "endpoint"),
        ({}, "spec"),
        ([], "body"),
    ],
)
def test_registration_api_names_the_bad_field(world: World, body: Any, parameter: str) -> None:
    answer = _put(world, "writer", "bad", body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["parameter"] == parameter
    assert world.k8s.kubectl("get", "svcreg/bad", "-n", world.ns, check=False).returncode != 0


def test_registration_api_patches_part_of_a_registration(world: World) -> None:
    """register, update (a JSON merge patch) and deregister through the client, as the writer;
    the reader may do none of it."""
    writer, reader = world.client("writer"), world.client("reader")
    spec = {"endpoint": world.targets["live"].url, "capabilities": ["patched"], "tags": ["a", "b"]}
    assert writer.register(world.ns, "patched", spec, labels={"team": "x"}).created is True
    with pytest.raises(client.ApiError) as refused:
        reader.update(world.ns, "patched", {"weight": 5})
    assert refused.value.status == 403
    done = writer.update(world.ns, "patched", {"weight": 5, "tags": None}, labels={"tier": "web"})
    assert done.created is False and done.generation == 2
    stored = world.k8s.get_registration(world.ns, "patched")
    # Given keys replaced, null removed, the rest kept; labels merged the same way.
    assert stored["spec"]["weight"] == 5 and "tags" not in stored["spec"]
    assert stored["spec"]["capabilities"] == ["patched"]
    assert stored["metadata"]["labels"]["team"] == "x" and stored["metadata"]["labels"]["tier"] == "web"
    # The merged result must be a valid registration: 400 naming the field, nothing written.
    with pytest.raises(client.ApiError) as bad:
        writer.update(world.ns, "patched", {"weight": -1})
    assert bad.value.status == 400 and bad.value.parameter == "spec.weight"
    with pytest.raises(client.ApiError) as both:
        writer.update(world.ns, "patched", {"serviceRef": {"name": "web", "port": 80}})
    assert both.value.status == 400
    assert world.k8s.get_registration(world.ns, "patched")["spec"]["weight"] == 5
    with pytest.raises(client.ApiError) as missing:
        writer.update(world.ns, "never-registered", {"weight": 1})
    assert missing.value.status == 404
    assert writer.deregister(world.ns, "patched").deleted is True


def test_cors_preflight_allows_the_registration_apis_methods(world: World) -> None:
    for method in ("PUT", "PATCH", "DELETE", "POST", "GET"):
        answer = httpx.options(
            f"{world.url}/v1/registrations/{world.ns}/anything",
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": method},
            timeout=10,
        )
        assert answer.status_code == 204, answer.text
        assert answer.headers["Access-Control-Allow-Origin"] == "https://ui.example"
        assert method in answer.headers["Access-Control-Allow-Methods"].split(", ")
        assert "Authorization" in answer.headers["Access-Control-Allow-Headers"]
    # An answer to the real request carries the origin too, and nothing for other origins.
    real = httpx.get(
        f"{world.url}/v1/services",
        headers={"Origin": "https://ui.example", "Authorization": f"Bearer {world.token('reader')}"},
        timeout=10,
    )
    assert real.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    other = httpx.options(
        f"{world.url}/v1/services",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        timeout=10,
    )
    assert "Access-Control-Allow-Origin" not in other.headers


# --- self-registration ----------------------------------------------------------------------------


def _writer_api(world: World, tmp_path: Path) -> KubeApi:
    kubeconfig = world.k8s.kubeconfig_as(world.ns, "writer", tmp_path / "kubeconfig")
    configuration = k8s_config.kube_config.Configuration()  # type: ignore[attr-defined]
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    return KubeApi(configuration)


async def test_self_registration_in_an_aiohttp_app(world: World, tmp_path: Path) -> None:
    """The app registers itself at start with its own ServiceAccount, heartbeats keep its ttl
    check passing, and shutdown removes the registration."""
    api = _writer_api(world, tmp_path)
    discovery = client.AsyncDiscoveryClient(world.url, world.token("writer"))
    registration_ = SelfRegistration(
        {"endpoint": world.targets["live"].url, "capabilities": ["self"], "healthCheck": {"type": "ttl"}},
        name="self-aiohttp",
        namespace=world.ns,
        api=api,
        discovery=discovery,
        heartbeat_interval=1,
    )
    app = web.Application()
    app.cleanup_ctx.append(registration_.aiohttp)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await asyncio.to_thread(
            world.k8s.kubectl,
            "wait",
            "--for=jsonpath={.status.health}=Healthy",
            "svcreg/self-aiohttp",
            "-n",
            world.ns,
            "--timeout=60s",
        )
        stored = world.k8s.get_registration(world.ns, "self-aiohttp")
        assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "svcreg-self-registration"
    finally:
        await runner.cleanup()
        await discovery.aclose()
        await api.close()
    result = world.k8s.kubectl("get", "svcreg/self-aiohttp", "-n", world.ns, check=False)
    assert result.returncode != 0 and "NotFound" in result.stderr


async def test_self_registration_as_an_asgi_lifespan(world: World, tmp_path: Path) -> None:
    api = _writer_api(world, tmp_path)
    registration_ = SelfRegistration(
        {"endpoint": world.targets["live"].url, "capabilities": ["self"]},
        name="self-asgi",
        namespace=world.ns,
        api=api,
    )
    try:
        async with registration_.lifespan(object()):
            assert world.k8s.get_registration(world.ns, "self-asgi")["spec"]["capabilities"] == ["self"]
    finally:
        await api.close()
    result = world.k8s.kubectl("get", "svcreg/self-asgi", "-n", world.ns, check=False)
    assert "NotFound" in result.stderr


def test_self_registration_refuses_a_bad_spec_before_any_call() -> None:
    with pytest.raises(ValueError, match="weight"):
        SelfRegistration({"endpoint": "http://x:80", "weight": -5}, name="x", namespace="y")
