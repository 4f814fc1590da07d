"""The operator against the real API server and real local targets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from svcreg.devtools.controlplane.cluster import Cluster
from tests.targets import GrpcTarget, HttpTarget, TcpListener, free_port, host_address, http_target

from .kubehelpers import Kube, registration
from .operator_process import OperatorProcess


@pytest.fixture(scope="module")
def operator(
    k8s: Kube, control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator for most tests, watching the ``t-*`` namespaces the ``namespace`` fixture
    makes; tests that need their own operator use other prefixes."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = OperatorProcess(
        control_plane,
        log,
        "--probe-allow",
        "127.0.0.0/8",
        "--probe-allow",
        f"{host_address()}/32",
        "--namespace",
        "t-*",
    ).start()
    # Answering /readyz is not being ready: wait until Kopf has started and the index synced,
    # so the first test does not race the operator's own start-up.
    process.wait_until(lambda: (process.ready() or {}).get("httpStatus") == 200, "/readyz to say ready")
    yield process
    process.stop()
    assert "Traceback" not in process.log_text(), process.log_text()[-5000:]


@pytest.fixture
def web() -> Iterator[HttpTarget]:
    with http_target() as target:
        yield target


def fast_check(**check: Any) -> dict[str, Any]:
    return {"intervalSeconds": 1, "timeoutSeconds": 0.5, **check}


def wait_health(k8s: Kube, namespace: str, name: str, health: str, timeout: str = "60s") -> dict[str, Any]:
    k8s.kubectl(
        "wait",
        f"--for=jsonpath={{.status.health}}={health}",
        f"svcreg/{name}",
        "-n",
        namespace,
        f"--timeout={timeout}",
    )
    return k8s.get_registration(namespace, name)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


def events(k8s: Kube, namespace: str, name: str) -> list[tuple[str, str]]:
    listed = k8s.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return sorted((e.type, e.reason) for e in listed.items)


def test_http_registration_becomes_ready_with_conditions_and_an_event(
    k8s: Kube, namespace: str, operator: OperatorProcess, web: HttpTarget
) -> None:
    k8s.apply(
        registration("web", {"endpoint": web.url, "healthCheck": fast_check(path="/healthz")}), namespace
    )
    k8s.kubectl("wait", "--for=condition=Ready", "svcreg/web", "-n", namespace, "--timeout=60s")
    obj = k8s.get_registration(namespace, "web")
    assert obj["status"]["health"] == "Healthy"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert [c["type"] for c in obj["status"]["conditions"]] == ["Accepted", "Healthy", "Ready"]
    assert all(c["observedGeneration"] == 1 and c["reason"] for c in obj["status"]["conditions"])
    # The Event follows the status write that publishes the transition: wait for it to land.
    operator.wait_until(lambda: ("Normal", "Healthy") in events(k8s, namespace, "web"), "the Healthy Event")
    assert not any(k.startswith("kopf") for k in obj["metadata"].get("annotations", {}))
    assert not obj["metadata"].get("finalizers")
    assert "kopf" not in obj["status"]


def test_failure_threshold_recovery_and_events(
    k8s: Kube, namespace: str, operator: OperatorProcess, web: HttpTarget
) -> None:
    k8s.apply(
        registration("api", {"endpoint": web.url, "healthCheck": fast_check(failureThreshold=2)}), namespace
    )
    wait_health(k8s, namespace, "api", "Healthy")
    web.mode = "fail"
    obj = wait_health(k8s, namespace, "api", "Unhealthy")
    assert condition(obj, "Healthy")["reason"] == "BadStatus"
    assert condition(obj, "Ready")["status"] == "False"
    web.mode = "ok"
    wait_health(k8s, namespace, "api", "Healthy")
    assert {("Warning", "Unhealthy"), ("Normal", "Healthy")} <= set(events(k8s, namespace, "api"))


def test_slow_target_is_degraded_and_hanging_one_times_out(
    k8s: Kube, namespace: str, operator: OperatorProcess, web: HttpTarget
) -> None:
    web.mode = "slow"
    web.slow_seconds = 0.2
    k8s.apply(
        registration("slow", {"endpoint": web.url, "healthCheck": fast_check(degradedLatencyMs=100)}),
        namespace,
    )
    obj = wait_health(k8s, namespace, "slow", "Degraded")
    assert condition(obj, "Ready")["status"] == "True"  # Degraded stays in rotation
    assert condition(obj, "Healthy")["reason"] == "SlowResponse"
    web.mode = "hang"
    obj = wait_health(k8s, namespace, "slow", "Unhealthy")
    assert condition(obj, "Healthy")["reason"] == "Timeout"


def test_maintenance(k8s: Kube, namespace: str, operator: OperatorProcess, web: HttpTarget) -> None:
    k8s.apply(
        registration("m", {"endpoint": web.url, "maintenance": True, "healthCheck": fast_check()}), namespace
    )
    obj = wait_health(k8s, namespace, "m", "Maintenance")
    assert (condition(obj, "Ready")["status"], condition(obj, "Ready")["reason"]) == ("False", "Maintenance")


def test_tcp_and_grpc_checks(k8s: Kube, namespace: str, operator: OperatorProcess) -> None:
    listener, grpc_server = TcpListener(), GrpcTarget()
    try:
        k8s.apply(
            registration("db", {"endpoint": f"tcp://127.0.0.1:{listener.port}", "healthCheck": fast_check()}),
            namespace,
        )
        k8s.apply(
            registration(
                "rpc",
                {
                    "endpoint": f"grpc://127.0.0.1:{grpc_server.port}",
                    "healthCheck": fast_check(timeoutSeconds=0.8, failureThreshold=1),
                },
            ),
            namespace,
        )
        wait_health(k8s, namespace, "db", "Healthy")
        wait_health(k8s, namespace, "rpc", "Healthy")
        grpc_server.set(serving=False)
        obj = wait_health(k8s, namespace, "rpc", "Unhealthy")
        assert condition(obj, "Healthy")["reason"] == "NotServing"
    finally:
        listener.close()
        grpc_server.close()
    obj = wait_health(k8s, namespace, "db", "Unhealthy")
    assert condition(obj, "Healthy")["reason"] == "ConnectionRefused"


def test_ttl_registration_expires_without_heartbeats(
    k8s: Kube, namespace: str, operator: OperatorProcess
) -> None:
    k8s.apply(
        registration(
            "beat",
            {
                "endpoint": "http://10.0.0.5:8080",
                "healthCheck": {"type": "ttl", "ttlSeconds": 2, "intervalSeconds": 1, "timeoutSeconds": 0.5},
            },
        ),
        namespace,
    )
    obj = wait_health(k8s, namespace, "beat", "Expired")
    assert condition(obj, "Healthy")["reason"] == "HeartbeatExpired"
    # The Event follows the status write that publishes the transition: wait for it to land.
    operator.wait_until(
        lambda: ("Warning", "Expired") in events(k8s, namespace, "beat"), "the Warning Expired Event"
    )


def test_metadata_address_is_forbidden_and_never_probed(
    k8s: Kube, namespace: str, operator: OperatorProcess
) -> None:
    k8s.apply(
        registration(
            "imds",
            {
                "endpoint": "http://169.254.169.254/latest/meta-data",
                "healthCheck": fast_check(failureThreshold=5),
            },
        ),
        namespace,
    )
    obj = wait_health(k8s, namespace, "imds", "Unhealthy")
    assert condition(obj, "Healthy")["reason"] == "TargetForbidden"
    assert "never probed" in condition(obj, "Healthy")["message"]


def test_steady_state_makes_no_writes(
    k8s: Kube, namespace: str, operator: OperatorProcess, web: HttpTarget
) -> None:
    k8s.apply(registration("steady", {"endpoint": web.url, "healthCheck": fast_check()}), namespace)
    wait_health(k8s, namespace, "steady", "Healthy")
    version = k8s.get_registration(namespace, "steady")["metadata"]["resourceVersion"]
    seen = web.connections
    operator.wait_until(lambda: web.connections >= seen + 5, "five more probes of the target")
    assert k8s.get_registration(namespace, "steady")["metadata"]["resourceVersion"] == version


def test_deletion_mid_probe_is_not_an_error(
    k8s: Kube, namespace: str, operator: OperatorProcess, web: HttpTarget
) -> None:
    k8s.apply(
        registration(
            "doomed", {"endpoint": web.url, "healthCheck": {"intervalSeconds": 2, "timeoutSeconds": 1.5}}
        ),
        namespace,
    )
    wait_health(k8s, namespace, "doomed", "Healthy")
    web.mode = "hang"
    seen = web.connections
    operator.wait_until(lambda: web.connections > seen, "a probe to be in flight")
    k8s.kubectl("delete", "svcreg", "doomed", "-n", namespace, "--wait=true", "--timeout=30s")
    probes = operator.probes()
    operator.wait_until(lambda: operator.probes() >= probes + 3, "the operator to keep probing")
    assert operator.ready()["httpStatus"] == 200  # type: ignore[index]


def test_spec_change_moves_observed_generation(
    k8s: Kube, namespace: str, operator: OperatorProcess, web: HttpTarget
) -> None:
    k8s.apply(registration("gen", {"endpoint": web.url, "healthCheck": fast_check()}), namespace)
    wait_health(k8s, namespace, "gen", "Healthy")
    k8s.kubectl(
        "patch", "svcreg", "gen", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": {"weight": 7}})
    )
    k8s.kubectl(
        "wait",
        "--for=jsonpath={.status.observedGeneration}=2",
        "svcreg/gen",
        "-n",
        namespace,
        "--timeout=30s",
    )


def test_service_ref_probes_each_ready_address_of_hand_made_endpoint_slices(
    k8s: Kube, namespace: str, operator: OperatorProcess
) -> None:
    address = host_address()
    with http_target(host="0.0.0.0") as target:
        dead_port = free_port()
        discovery = client.DiscoveryV1Api(k8s.api)
        for name, port, ready in (
            ("web-a", target.port, True),
            ("web-b", dead_port, True),
            ("web-c", dead_port + 1, False),
        ):
            discovery.create_namespaced_endpoint_slice(
                namespace,
                client.V1EndpointSlice(
                    metadata=client.V1ObjectMeta(name=name, labels={"kubernetes.io/service-name": "web"}),
                    address_type="IPv4",
                    ports=[client.DiscoveryV1EndpointPort(name="http", port=port, protocol="TCP")],
                    endpoints=[
                        client.V1Endpoint(
                            addresses=[address], conditions=client.V1EndpointConditions(ready=ready)
                        )
                    ],
                ),
            )
        k8s.apply(
            registration(
                "web",
                {
                    "serviceRef": {"name": "web", "port": "http"},
                    "healthCheck": fast_check(type="http", failureThreshold=1),
                },
            ),
            namespace,
        )
        obj = wait_health(k8s, namespace, "web", "Degraded")
        # Both sides sorted: which of the two ephemeral ports is lower is chance.
        assert sorted((i["port"], i["health"]) for i in obj["status"]["instances"]) == sorted(
            [(target.port, "Healthy"), (dead_port, "Unhealthy")]
        )
        discovery.delete_namespaced_endpoint_slice("web-b", namespace)
        obj = wait_health(k8s, namespace, "web", "Healthy")
        assert [i["port"] for i in obj["status"]["instances"]] == [target.port]


def test_service_ref_without_endpoints_is_not_accepted(
    k8s: Kube, namespace: str, operator: OperatorProcess
) -> None:
    k8s.apply(
        registration("ghost", {"serviceRef": {"name": "ghost"}, "healthCheck": fast_check()}), namespace
    )
    k8s.kubectl("wait", "--for=condition=Accepted=false", "svcreg/ghost", "-n", namespace, "--timeout=30s")
    assert condition(k8s.get_registration(namespace, "ghost"), "Accepted")["reason"] == "NoEndpoints"


def test_loopback_needs_probe_allow(
    k8s: Kube, control_plane: Cluster, tmp_path: Path, web: HttpTarget
) -> None:
    namespace = k8s.create_namespace("closed")
    process = OperatorProcess(control_plane, tmp_path / "closed.log", "--namespace", namespace).start()
    try:
        k8s.apply(registration("local", {"endpoint": web.url, "healthCheck": fast_check()}), namespace)
        obj = wait_health(k8s, namespace, "local", "Unhealthy")
        assert condition(obj, "Healthy")["reason"] == "TargetForbidden"
        assert "--probe-allow" in condition(obj, "Healthy")["message"]
        assert web.connections == 0
    finally:
        process.stop()


def test_restart_causes_no_transition_and_no_write(
    k8s: Kube, control_plane: Cluster, tmp_path: Path, web: HttpTarget
) -> None:
    namespace = k8s.create_namespace("restart")
    args = ("--namespace", namespace, "--probe-allow", "127.0.0.0/8")
    first = OperatorProcess(control_plane, tmp_path / "first.log", *args).start()
    try:
        k8s.apply(registration("stable", {"endpoint": web.url, "healthCheck": fast_check()}), namespace)
        k8s.apply(
            registration(
                "beat",
                {
                    "endpoint": "http://10.0.0.5:8080",
                    "healthCheck": {
                        "type": "ttl",
                        "ttlSeconds": 30,
                        "intervalSeconds": 1,
                        "timeoutSeconds": 0.5,
                    },
                },
            ),
            namespace,
        )
        wait_health(k8s, namespace, "stable", "Healthy")
        k8s.kubectl("wait", "--for=condition=Accepted", "svcreg/beat", "-n", namespace, "--timeout=30s")
    finally:
        first.stop()
    before = {
        n: k8s.get_registration(namespace, n)["metadata"]["resourceVersion"] for n in ("stable", "beat")
    }
    events_before = events(k8s, namespace, "stable")
    second = OperatorProcess(control_plane, tmp_path / "second.log", *args).start()
    try:
        seen = web.connections
        second.wait_until(lambda: web.connections >= seen + 3, "three probes after the restart")
        after = {
            n: k8s.get_registration(namespace, n)["metadata"]["resourceVersion"] for n in ("stable", "beat")
        }
        assert after == before
        assert events(k8s, namespace, "stable") == events_before
        assert second.metric("svcreg_status_writes_total") == 0
    finally:
        second.stop()


def test_sigkill_mid_round_with_a_thousand_registrations_loses_and_flaps_nothing(
    k8s: Kube, control_plane: Cluster, tmp_path: Path, web: HttpTarget
) -> None:
    """An operator killed with SIGKILL while probing 1,000 registrations restarts with 0 lost
    registrations, 0 status writes (so 0 spurious transitions) and 0 new Events."""
    namespace = k8s.create_namespace("sigkill")
    args = ("--namespace", namespace, "--probe-allow", "127.0.0.0/8")
    check = {"intervalSeconds": 5, "timeoutSeconds": 1}
    manifests = [registration(f"r{i}", {"endpoint": web.url, "healthCheck": check}) for i in range(1000)]
    k8s.kubectl(
        "apply", "-n", namespace, "-f", "-", input="\n---\n".join(yaml.safe_dump(m) for m in manifests)
    )
    first = OperatorProcess(control_plane, tmp_path / "first.log", *args).start()

    def healthy() -> int:
        listed = k8s.custom.list_namespaced_custom_object(
            "svcreg.io", "v1alpha1", namespace, "serviceregistrations"
        )
        return sum(1 for item in listed["items"] if (item.get("status") or {}).get("health") == "Healthy")

    def event_count() -> int:
        return len(k8s.core.list_namespaced_event(namespace).items)

    try:
        first.wait_until(lambda: healthy() == 1000, "all 1,000 Healthy", 180)
        first.wait_until(lambda: event_count() >= 1000, "their Events", 60)
        seen = web.connections
        first.wait_until(lambda: web.connections >= seen + 200, "a round of probes under way")
    finally:
        first.process.kill()  # type: ignore[union-attr]  # SIGKILL: no clean shutdown
        first.process.wait()  # type: ignore[union-attr]
    events_before = event_count()
    second = OperatorProcess(control_plane, tmp_path / "second.log", *args).start()
    try:
        seen = web.connections
        second.wait_until(lambda: web.connections >= seen + 2000, "two full rounds after the restart", 120)
        assert healthy() == 1000
        assert second.metric("svcreg_status_writes_total") == 0
        assert event_count() == events_before
    finally:
        second.stop()


def test_partition_guard_is_no_weapon_and_holds_for_a_bounded_time(
    k8s: Kube, control_plane: Cluster, tmp_path: Path
) -> None:
    """400 junk registrations in one tenant's namespace do not freeze another tenant's health;
    the guard suspects a partition only when the reference it is given fails, then holds
    last-known health for --partition-hold-seconds and writes the truth after; readiness and
    heartbeats are untouched throughout."""
    junk, victim = k8s.create_namespace("pg-junk"), k8s.create_namespace("pg-victim")
    k8s.create_service_account(victim, "beater")
    k8s.grant(victim, "beater", ["heartbeat"])
    beater = k8s.token(victim, "beater")
    reference = TcpListener()
    process = OperatorProcess(
        control_plane,
        tmp_path / "partition.log",
        "--namespace",
        junk,
        "--namespace",
        victim,
        "--probe-allow",
        "127.0.0.0/8",
        "--partition-reference",
        f"127.0.0.1:{reference.port}",
        "--partition-check-seconds",
        "0.5",
        "--partition-hold-seconds",
        "8",
    ).start()
    first, second = HttpTarget(), HttpTarget()
    try:
        manifests = [
            registration(f"nx{i}", {"endpoint": f"http://nx{i}.invalid:80", "healthCheck": fast_check()})
            for i in range(400)
        ]
        k8s.kubectl(
            "apply", "-n", junk, "-f", "-", input="\n---\n".join(yaml.safe_dump(m) for m in manifests)
        )
        check = fast_check(failureThreshold=1)
        k8s.apply(registration("first", {"endpoint": first.url, "healthCheck": check}), victim)
        k8s.apply(registration("second", {"endpoint": second.url, "healthCheck": check}), victim)
        ttl = {"type": "ttl", "ttlSeconds": 30, "intervalSeconds": 1, "timeoutSeconds": 0.5}
        k8s.apply(registration("beats", {"endpoint": "http://10.0.0.5:80", "healthCheck": ttl}), victim)
        wait_health(k8s, victim, "first", "Healthy")
        wait_health(k8s, victim, "second", "Healthy")
        wait_health(k8s, junk, "nx399", "Unhealthy")
        # The junk fails at DNS, 400 times over: nothing is suspected, a real death is written.
        first.close()
        wait_health(k8s, victim, "first", "Unhealthy")
        assert (process.ready() or {}).get("partitionSuspected") is False
        assert process.ready()["httpStatus"] == 200  # type: ignore[index]

        # The reference goes away: now the prober suspects itself and holds.
        reference.close()
        process.wait_until(
            lambda: (process.ready() or {}).get("partitionSuspected") is True, "the partition to be suspected"
        )
        assert process.ready()["httpStatus"] == 200  # type: ignore[index]  # never unready for it
        assert process.metric("svcreg_partition_suspected") == 1
        second.close()
        held = process.metric("svcreg_held_transitions_total")
        process.wait_until(
            lambda: process.metric("svcreg_held_transitions_total") > held, "a failure to be held"
        )
        assert k8s.get_registration(victim, "second")["status"]["health"] == "Healthy"
        # Heartbeats keep landing while it holds.
        beat = httpx.post(
            f"http://127.0.0.1:{process.port}/v1/heartbeat/{victim}/beats",
            headers={"Authorization": f"Bearer {beater}"},
        )
        assert beat.status_code == 200, beat.text
        wait_health(k8s, victim, "beats", "Healthy")
        # After the hold's bound, the truth is written, with its Event and a metric.
        wait_health(k8s, victim, "second", "Unhealthy")
        assert process.metric("svcreg_partition_hold_expired_total") == 1
        process.wait_until(
            lambda: ("Warning", "Unhealthy") in {(e[0], e[1]) for e in events(k8s, victim, "second")},
            "the Warning Unhealthy Event",
        )
        assert "partition suspected" in process.log_text() and "no longer holding" in process.log_text()
    finally:
        for target in (first, second):
            if not target._loop.is_closed():
                target.close()
        process.stop()


def test_deregister_after_seconds_posts_an_event_then_deletes(
    k8s: Kube, namespace: str, operator: OperatorProcess
) -> None:
    spec = {
        "endpoint": f"http://127.0.0.1:{free_port()}",
        "deregisterAfterSeconds": 2,
        "healthCheck": fast_check(failureThreshold=1),
    }
    k8s.apply(registration("zombie", spec), namespace)
    k8s.kubectl("wait", "--for=delete", "svcreg/zombie", "-n", namespace, "--timeout=60s")
    assert {("Warning", "Unhealthy"), ("Warning", "Deregistering")} <= set(events(k8s, namespace, "zombie"))


def test_a_probe_trusts_the_private_ca_its_registration_names(
    operator: OperatorProcess, k8s: Kube, namespace: str, tmp_path: Path
) -> None:
    """healthCheck.tls: an https target signed by a private CA is Unhealthy (TLSError) until the
    registration names the CA's ConfigMap; then Healthy, for the name serverName gives."""
    with http_target(tmp_path) as secure:
        spec = {
            "endpoint": secure.url,
            "healthCheck": fast_check(failureThreshold=1, tls={"serverName": "kubernetes.default.svc"}),
        }
        k8s.apply(registration("pinned", spec), namespace)
        untrusted = wait_health(k8s, namespace, "pinned", "Unhealthy")
        assert condition(untrusted, "Healthy")["reason"] == "TLSError"
        spec["healthCheck"]["tls"]["caBundleRef"] = {"kind": "ConfigMap", "name": "probe-ca", "key": "ca.crt"}
        k8s.apply(registration("pinned", spec), namespace)
        missing = wait_health(k8s, namespace, "pinned", "Unhealthy")
        message = condition(missing, "Healthy")["message"]
        k8s.kubectl(
            "create", "configmap", "probe-ca", "-n", namespace, f"--from-file=ca.crt={secure.ca_file}"
        )
        trusted = wait_health(k8s, namespace, "pinned", "Healthy")
        assert condition(trusted, "Healthy")["reason"] == "ProbeSucceeded"
        assert "ConfigMap" in message or "TLS" in message


def test_capability_contracts_are_served_and_an_invalid_one_is_not_accepted(
    operator: OperatorProcess, k8s: Kube, namespace: str, web: HttpTarget
) -> None:
    """inputSchema/outputSchema: a valid JSON Schema is stored and served with the capability;
    one the policy's shape check lets through but the JSON Schema meta-schema refuses makes the
    registration Accepted=False, naming the field."""
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    spec = {
        "endpoint": web.url,
        "capabilities": [{"name": "analyse", "inputSchema": schema, "outputSchema": {"type": "object"}}],
        "healthCheck": fast_check(),
    }
    k8s.apply(registration("contract", spec), namespace)
    stored = wait_health(k8s, namespace, "contract", "Healthy")
    assert stored["spec"]["capabilities"][0]["inputSchema"] == schema
    bad = {
        **spec,
        "capabilities": [{"name": "analyse", "inputSchema": {"type": "object", "minProperties": -1}}],
    }
    k8s.apply(registration("bad-contract", bad), namespace)
    k8s.kubectl(
        "wait", "--for=condition=Accepted=False", "svcreg/bad-contract", "-n", namespace, "--timeout=60s"
    )
    accepted = condition(k8s.get_registration(namespace, "bad-contract"), "Accepted")
    assert accepted["reason"] == "InvalidSpec"
    assert accepted["message"].startswith("spec.capabilities[0].inputSchema:"), accepted["message"]


def test_a_flapping_instance_is_damped_then_restored(
    k8s: Kube, namespace: str, operator: OperatorProcess, web: HttpTarget
) -> None:
    """Three changes in and out of rotation within seconds push the penalty over the threshold:
    the instance is held out (Flapping, Ready false, an Event, not served) though its health stays
    what the probes say; once stable it returns within the bound."""
    damping = {
        "halfLifeSeconds": 8,
        "suppressThreshold": 2200,
        "reuseThreshold": 1200,
        "maxSuppressSeconds": 60,
    }
    k8s.apply(
        registration(
            "flappy",
            {"endpoint": web.url, "healthCheck": fast_check(failureThreshold=1), "flapDamping": damping},
        ),
        namespace,
    )
    wait_health(k8s, namespace, "flappy", "Healthy")
    for mode, health in (("fail", "Unhealthy"), ("ok", "Healthy"), ("fail", "Unhealthy")):
        web.mode = mode
        wait_health(k8s, namespace, "flappy", health)
    web.mode = "ok"
    k8s.kubectl("wait", "--for=condition=Flapping", "svcreg/flappy", "-n", namespace, "--timeout=60s")
    held = wait_health(k8s, namespace, "flappy", "Healthy")
    assert condition(held, "Flapping")["status"] == "True"
    assert condition(held, "Ready")["status"] == "False" and condition(held, "Ready")["reason"] == "Flapping"
    operator.wait_until(
        lambda: ("Warning", "Flapping") in events(k8s, namespace, "flappy"), "the Flapping Event"
    )
    k8s.create_service_account(namespace, "looker")
    k8s.grant(namespace, "looker", ["get", "list", "watch"])
    headers = {"Authorization": f"Bearer {k8s.token(namespace, 'looker')}"}

    def served(**params: str) -> list[str]:
        answer = httpx.get(operator.url + "/v1/services", params=params, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        return [i["name"] for i in answer.json()["items"] if i["name"] == "flappy"]

    operator.wait_until(lambda: not served(namespace=namespace), "discovery to stop serving it")
    [shown] = [
        i
        for i in httpx.get(
            operator.url + "/v1/services",
            params={"namespace": namespace, "health": "any"},
            headers=headers,
            timeout=30,
        ).json()["items"]
        if i["name"] == "flappy"
    ]
    assert shown["damped"] is True and shown["health"] == "Healthy"
    explained = httpx.get(
        operator.url + "/v1/explain", params={"namespace": namespace}, headers=headers, timeout=30
    )
    [why] = [c for c in explained.json()["candidates"] if c["name"] == "flappy"]
    assert not why["included"] and "flap damping" in why["reasons"][0]
    # Stable now: the penalty decays below the reuse threshold and it is back.
    k8s.kubectl("wait", "--for=condition=Flapping=false", "svcreg/flappy", "-n", namespace, "--timeout=90s")
    k8s.kubectl("wait", "--for=condition=Ready", "svcreg/flappy", "-n", namespace, "--timeout=30s")
    operator.wait_until(
        lambda: ("Normal", "FlapDampingEnded") in events(k8s, namespace, "flappy"),
        "the FlapDampingEnded Event",
    )
    operator.wait_until(lambda: served(namespace=namespace) == ["flappy"], "discovery to serve it again")
