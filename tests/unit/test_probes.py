"""Every probe kind against real sockets on loopback (the policy opens 127.0.0.0/8)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from svcreg.operator.probes.base import GrpcConfig, HttpConfig, Reason, Target, TtlConfig
from svcreg.operator.probes.http import request_bytes
from svcreg.operator.probes.policy import ProbePolicy
from svcreg.operator.probes.runner import ProbeRunner
from svcreg.operator.probes.ttl import HeartbeatStore
from tests.targets import GrpcTarget, HttpTarget, TcpListener, free_port, http_target


@pytest.fixture
def runner() -> ProbeRunner:
    return ProbeRunner(ProbePolicy(["127.0.0.0/8"]), HeartbeatStore())


@pytest.fixture
def web() -> Iterator[HttpTarget]:
    with http_target() as target:
        yield target


def http(port: int, *, timeout: float = 1.0, tls: bool = False, **config: Any) -> Target:
    return Target(
        kind="http", host="127.0.0.1", port=port, timeout=timeout, tls=tls, config=HttpConfig(**config)
    )


async def test_http_pass_and_bad_status(runner: ProbeRunner, web: HttpTarget) -> None:
    outcome = await runner.run(http(web.port))
    assert outcome is not None and outcome.passed and outcome.message == "HTTP 200"
    web.mode = "fail"
    outcome = await runner.run(http(web.port))
    assert outcome is not None and outcome.reason == Reason.BAD_STATUS and not outcome.connection_level
    outcome = await runner.run(http(web.port, expected=((500, 599),)))
    assert outcome is not None and outcome.passed


async def test_hanging_target_costs_its_timeout_and_is_not_a_connection_failure(
    runner: ProbeRunner, web: HttpTarget
) -> None:
    web.mode = "hang"
    outcome = await runner.run(http(web.port, timeout=0.2))
    assert outcome is not None and outcome.reason == Reason.TIMEOUT
    assert not outcome.connection_level and "did not answer" in outcome.message


async def test_a_hanging_target_does_not_stall_others(runner: ProbeRunner, web: HttpTarget) -> None:
    with http_target() as healthy:
        web.mode = "hang"
        hung = asyncio.create_task(runner.run(http(web.port, timeout=30)))
        fast = await asyncio.wait_for(runner.run(http(healthy.port)), timeout=10)
        assert fast is not None and fast.passed and not hung.done()
        hung.cancel()
        await asyncio.gather(hung, return_exceptions=True)


async def test_reset_garbage_and_refused(runner: ProbeRunner, web: HttpTarget) -> None:
    web.mode = "reset"
    reset = await runner.run(http(web.port))
    assert reset is not None and reset.reason == Reason.CONNECTION_RESET
    web.mode = "garbage"
    lying = await runner.run(http(web.port))
    assert lying is not None and lying.reason == Reason.PROTOCOL_ERROR and "status line" in lying.message
    refused = await runner.run(http(free_port()))
    assert refused is not None and refused.reason == Reason.CONNECTION_REFUSED and refused.connection_level


async def test_tls_is_verified_by_default(runner: ProbeRunner, tmp_path: Path) -> None:
    with http_target(tmp_path) as secure:
        outcome = await runner.run(http(secure.port, tls=True))
        assert outcome is not None and outcome.reason == Reason.TLS_ERROR

        trusting = ProbeRunner(
            runner.context.policy,
            runner.context.heartbeats,
            ssl.create_default_context(cafile=str(secure.ca_file)),
        )
        trusted = await trusting.run(http(secure.port, tls=True))
        assert trusted is not None and trusted.passed


async def test_forbidden_target_is_never_connected_to(web: HttpTarget) -> None:
    closed = ProbeRunner(ProbePolicy(), HeartbeatStore())
    outcome = await closed.run(http(web.port))
    assert outcome is not None and outcome.reason == Reason.TARGET_FORBIDDEN
    assert web.connections == 0


async def test_dns_failure(runner: ProbeRunner) -> None:
    outcome = await runner.run(Target(kind="http", host="no-such-host.invalid", port=80, timeout=2))
    assert outcome is not None and outcome.reason == Reason.DNS_FAILURE


async def test_tcp(runner: ProbeRunner) -> None:
    listener = TcpListener()
    try:
        outcome = await runner.run(Target(kind="tcp", host="127.0.0.1", port=listener.port, timeout=1))
        assert outcome is not None and outcome.passed
    finally:
        listener.close()
    outcome = await runner.run(Target(kind="tcp", host="127.0.0.1", port=listener.port, timeout=1))
    assert outcome is not None and outcome.reason == Reason.CONNECTION_REFUSED


async def test_grpc_health(runner: ProbeRunner) -> None:
    server = GrpcTarget()
    try:
        target = Target(kind="grpc", host="127.0.0.1", port=server.port, timeout=2)
        outcome = await runner.run(target)
        assert outcome is not None and outcome.passed and outcome.message == "SERVING"
        server.set(serving=False)
        outcome = await runner.run(target)
        assert outcome is not None and outcome.reason == Reason.NOT_SERVING
        unknown = await runner.run(
            Target(kind="grpc", host="127.0.0.1", port=server.port, timeout=2, config=GrpcConfig("x"))
        )
        assert unknown is not None and unknown.reason == Reason.NOT_SERVING
    finally:
        server.close()
    gone = await runner.run(Target(kind="grpc", host="127.0.0.1", port=server.port, timeout=2))
    assert gone is not None and not gone.passed and gone.connection_level


def ttl_target(created_at: float | None = None) -> Target:
    config = TtlConfig(key=("ns", "a"), ttl_seconds=30, created_at=created_at)
    return Target(kind="ttl", host="", port=0, timeout=1, config=config)


def test_ttl_heartbeats_with_start_up_grace() -> None:
    now = [1000.0]
    store = HeartbeatStore(clock=lambda: now[0], wall=lambda: now[0])
    target = ttl_target()
    assert store.evaluate(target) is None  # grace after (re)start
    now[0] += 31
    expired = store.evaluate(target)
    assert expired is not None and expired.reason == Reason.HEARTBEAT_EXPIRED
    store.record(("ns", "a"))
    assert store.evaluate(target).passed  # type: ignore[union-attr]
    store.record(("ns", "a"), "warning", "disk 91%")
    warning = store.evaluate(target)
    assert warning is not None and warning.passed and warning.degraded and "disk 91%" in warning.message
    store.record(("ns", "a"), "critical")
    assert store.evaluate(target).reason == Reason.HEARTBEAT_CRITICAL  # type: ignore[union-attr]
    now[0] += 31
    assert store.evaluate(target).reason == Reason.HEARTBEAT_EXPIRED  # type: ignore[union-attr]


def test_a_new_ttl_registration_gets_its_grace_from_its_own_creation() -> None:
    """An hour after the process started, a registration created now still has one ttl before
    it can expire (the grace used to count from process start only)."""
    now = [1000.0]
    store = HeartbeatStore(clock=lambda: now[0], wall=lambda: now[0])
    now[0] += 3600
    assert store.evaluate(ttl_target(created_at=now[0] - 5)) is None
    expired = store.evaluate(ttl_target(created_at=now[0] - 31))
    assert expired is not None and expired.reason == Reason.HEARTBEAT_EXPIRED


def test_control_characters_in_an_http_check_are_never_sent() -> None:
    with pytest.raises(ValueError, match="control character"):
        request_bytes(http(80, path="/x HTTP/1.1\r\nHost: redis\r\n\r\nFLUSHALL\r\n"))
    with pytest.raises(ValueError, match="control character"):
        request_bytes(http(80, headers=(("X-A", "v\r\nX-B: smuggled"),)))
    assert request_bytes(http(80, path="/healthz?x=1")).startswith(b"GET /healthz?x=1 HTTP/1.1\r\n")


class ObjectsApi:
    """The two reads the trust store makes, answered from a dict (unit tests may mock HTTP)."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects
        self.reads = 0

    async def call(self, method: str, path: str, **_: Any) -> Any:
        from svcreg.kube import errors as kube_errors  # noqa: PLC0415
        from svcreg.kube.api import Response  # noqa: PLC0415

        self.reads += 1
        if path not in self.objects:
            raise kube_errors.NotFound(404, "NotFound", f"{path} not found")
        import json  # noqa: PLC0415

        return Response(200, json.dumps(self.objects[path]).encode())


async def test_probes_verify_against_the_ca_bundle_the_registration_names(tmp_path: Path) -> None:
    """healthCheck.tls.caBundleRef: a private CA from a ConfigMap or a Secret in the registration's
    namespace; serverName checks a name the address lacks; content never shows in a message."""
    import base64  # noqa: PLC0415
    import dataclasses  # noqa: PLC0415

    from svcreg.operator.probes.trust import TrustStore  # noqa: PLC0415

    with http_target(tmp_path) as secure:
        pem = secure.ca_file.read_text()
        api = ObjectsApi(
            {
                "/api/v1/namespaces/team/configmaps/ca": {"data": {"ca.crt": pem}},
                "/api/v1/namespaces/team/secrets/tls": {
                    "data": {"ca.crt": base64.b64encode(pem.encode()).decode()}
                },
                "/api/v1/namespaces/team/configmaps/junk": {"data": {"ca.crt": "SECRET-LOOKING junk"}},
            }
        )
        runner = ProbeRunner(ProbePolicy(["127.0.0.0/8"]), HeartbeatStore(), trust=TrustStore(api))  # type: ignore[arg-type]
        plain = http(secure.port, tls=True)
        assert (await runner.run(plain)).reason == Reason.TLS_ERROR  # type: ignore[union-attr]
        by_map = dataclasses.replace(plain, ca=("team", "configmap", "ca", "ca.crt"))
        by_secret = dataclasses.replace(plain, ca=("team", "secret", "tls", "ca.crt"))
        for target in (by_map, by_secret):
            outcome = await runner.run(target)
            assert outcome is not None and outcome.passed, outcome
        # The certificate names kubernetes.default.svc, not wrong.example.
        named = await runner.run(dataclasses.replace(by_map, server_name="kubernetes.default.svc"))
        assert named is not None and named.passed
        wrong = await runner.run(dataclasses.replace(by_map, server_name="wrong.example"))
        assert wrong is not None and wrong.reason == Reason.TLS_ERROR
        missing = await runner.run(dataclasses.replace(plain, ca=("team", "configmap", "nope", "ca.crt")))
        assert missing is not None and missing.reason == Reason.TLS_ERROR
        assert "ConfigMap team/nope" in missing.message
        junk = await runner.run(dataclasses.replace(plain, ca=("team", "configmap", "junk", "ca.crt")))
        assert junk is not None and junk.reason == Reason.TLS_ERROR and "SECRET-LOOKING" not in junk.message
        reads = api.reads
        await runner.run(by_map)
        assert api.reads == reads  # a bundle is read once per TTL, not per probe


async def test_grpc_probes_over_tls_trust_the_named_ca(tmp_path: Path) -> None:
    """A gRPC target with a private certificate: a TLS channel with the registration's CA bundle
    and serverName passes; the system's roots do not trust it; plaintext is not spoken."""
    import dataclasses  # noqa: PLC0415

    from svcreg.operator.probes.trust import TrustStore  # noqa: PLC0415

    server = GrpcTarget(tmp_path)
    try:
        api = ObjectsApi(
            {"/api/v1/namespaces/team/configmaps/ca": {"data": {"ca.crt": server.ca_file.read_text()}}}
        )
        runner = ProbeRunner(ProbePolicy(["127.0.0.0/8"]), HeartbeatStore(), trust=TrustStore(api))  # type: ignore[arg-type]
        plain = Target(kind="grpc", host="127.0.0.1", port=server.port, timeout=2)
        tls = dataclasses.replace(plain, tls=True, server_name="localhost")
        trusted = await runner.run(dataclasses.replace(tls, ca=("team", "configmap", "ca", "ca.crt")))
        assert trusted is not None and trusted.passed, trusted
        untrusted = await runner.run(tls)
        assert untrusted is not None and not untrusted.passed
        cleartext = await runner.run(plain)
        assert cleartext is not None and not cleartext.passed
    finally:
        server.close()
