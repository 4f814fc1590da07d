"""Faults between svcreg and the real API server, injected by a proxy in front of it.

The API server stays real (tests/faultproxy.py forwards everything else to it); each test
shows that health stays true and nothing wedges when chosen calls fail, hang or go silent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from svcreg.devtools.controlplane.cluster import Cluster
from tests.faultproxy import Fault, FaultProxy
from tests.targets import HttpTarget

from .kubehelpers import Kube, registration
from .operator_process import OperatorProcess

STATUS_PATCH = r"/serviceregistrations/[^/]+/status$"
CHECK = {"intervalSeconds": 1, "timeoutSeconds": 0.5, "failureThreshold": 1}


@pytest.fixture(scope="module")
def proxy(control_plane: Cluster) -> Iterator[FaultProxy]:
    faults = FaultProxy(control_plane)
    yield faults
    faults.close()


@pytest.fixture
def proxied(
    proxy: FaultProxy, control_plane: Cluster, tmp_path: Path
) -> Iterator[tuple[str, list[OperatorProcess]]]:
    """A factory of operators that reach the API server only through the proxy."""
    started: list[OperatorProcess] = []
    yield str(tmp_path), started
    proxy.clear()
    for process in started:
        process.stop()


def start(
    proxy: FaultProxy, control_plane: Cluster, tmp_path: Path, started: list[OperatorProcess], *args: str
) -> OperatorProcess:
    log = tmp_path / f"operator-{len(started)}.log"
    process = OperatorProcess(control_plane, log, *args, env=proxy.env(tmp_path, control_plane.env()))
    started.append(process)
    process.start()
    process.wait_until(lambda: (process.ready() or {}).get("httpStatus") == 200, "/readyz to say ready")
    return process


def health(k8s: Kube, namespace: str, name: str) -> str | None:
    status = k8s.get_registration(namespace, name).get("status") or {}
    return status.get("health")


def test_a_failed_status_write_never_leaves_a_dead_instance_healthy(
    k8s: Kube, control_plane: Cluster, proxy: FaultProxy, proxied: tuple[str, list[OperatorProcess]]
) -> None:
    """The status PATCH of a transition fails with a 503 (twice), a hang and a 409; the write is
    made again with backoff until it lands, and the object ends with the true health."""
    directory, started = proxied
    namespace = k8s.create_namespace("fw")
    process = start(
        proxy, control_plane, Path(directory), started,
        "--namespace", namespace, "--probe-allow", "127.0.0.0/8", "--api-timeout-seconds", "3",
    )  # fmt: skip
    target = HttpTarget()
    k8s.apply(registration("web", {"endpoint": target.url, "healthCheck": CHECK}), namespace)
    process.wait_until(lambda: health(k8s, namespace, "web") == "Healthy", "web to be Healthy")
    faults = [
        proxy.inject(Fault("PATCH", STATUS_PATCH, "503", times=2)),
        proxy.inject(Fault("PATCH", STATUS_PATCH, "hang", times=1)),
        proxy.inject(Fault("PATCH", STATUS_PATCH, "409", times=1)),
    ]
    patches_before = proxy.count("PATCH", STATUS_PATCH)
    target.close()
    process.wait_until(lambda: health(k8s, namespace, "web") == "Unhealthy", "the true health to land", 90)
    assert [f.hits for f in faults] == [2, 1, 1]
    assert proxy.count("PATCH", STATUS_PATCH) - patches_before >= 5  # four refused, one landed
    assert process.metric("svcreg_status_writes_total", result="error") >= 4


def test_a_hung_review_answers_503_and_liveness_reports_a_wedged_prober(
    k8s: Kube, control_plane: Cluster, proxy: FaultProxy, proxied: tuple[str, list[OperatorProcess]]
) -> None:
    """An API server that accepts and never answers: a caller whose token needs a review gets a
    503 within the call's deadline; probes that need no write go on; once every probe slot has
    waited on hung writes longer than --wedged-after-seconds (the slow lane, which would take
    them, is closed here), /healthz says the prober is wedged, and it recovers when the API
    server does."""
    directory, started = proxied
    namespace = k8s.create_namespace("hang")
    k8s.create_service_account(namespace, "reader")
    k8s.grant(namespace, "reader", ["get", "list", "watch"])
    token = k8s.token(namespace, "reader")
    process = start(
        proxy, control_plane, Path(directory), started,
        "--namespace", namespace, "--probe-allow", "127.0.0.0/8", "--api-timeout-seconds", "4",
        "--probe-concurrency", "1", "--probe-slow-concurrency", "0", "--wedged-after-seconds", "2",
    )  # fmt: skip
    steady, dying = HttpTarget(), HttpTarget()
    try:
        for name, target in (("steady", steady), ("dying", dying)):
            k8s.apply(registration(name, {"endpoint": target.url, "healthCheck": CHECK}), namespace)
        for name in ("steady", "dying"):
            process.wait_until(lambda n=name: health(k8s, namespace, n) == "Healthy", f"{name} Healthy")

        proxy.inject(Fault("POST", r"/tokenreviews$", "hang", times=-1))
        answer = httpx.get(
            f"http://127.0.0.1:{process.port}/v1/services",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "ReviewUnavailable"

        proxy.inject(Fault("PATCH", STATUS_PATCH, "hang", times=-1))
        probes = process.probes()
        dying.close()
        process.wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{process.port}/healthz", timeout=5).status_code == 503,
            "liveness to report the wedged prober",
        )
        wedged = httpx.get(f"http://127.0.0.1:{process.port}/healthz", timeout=5).json()
        assert wedged["status"] == "wedged" and "probe slot" in wedged["reason"]
        process.wait_until(lambda: process.probes() > probes + 2, "probing to go on")

        proxy.clear()
        process.wait_until(lambda: health(k8s, namespace, "dying") == "Unhealthy", "the write to land", 90)
        process.wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{process.port}/healthz", timeout=5).status_code == 200,
            "liveness to recover",
        )
        served = httpx.get(
            f"http://127.0.0.1:{process.port}/v1/services",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert served.status_code == 200 and [i["name"] for i in served.json()["items"]] == ["steady"]
    finally:
        steady.close()


def test_a_silent_watch_is_relisted_and_a_down_watch_is_reported_stale(
    k8s: Kube, control_plane: Cluster, proxy: FaultProxy, proxied: tuple[str, list[OperatorProcess]]
) -> None:
    """A discovery replica's watch keeps its connection and forwards nothing: within the watch
    timeout it is taken for dead and listed again, so new registrations show. While lists fail
    too, answers, /readyz and a metric say the index is stale."""
    directory, started = proxied
    namespace = k8s.create_namespace("silent")
    k8s.create_service_account(namespace, "reader")
    k8s.grant(namespace, "reader", ["get", "list", "watch"])
    token = k8s.token(namespace, "reader")
    headers = {"Authorization": f"Bearer {token}"}
    spec = {"endpoint": "http://10.0.0.7:80", "healthCheck": {"type": "none"}}
    k8s.apply(registration("before", spec), namespace)
    proxy.inject(Fault("GET", r"/serviceregistrations$", "stall", times=1, query=r"watch=true"))
    replica = start(
        proxy, control_plane, Path(directory), started,
        "--namespace", namespace, "--discovery-only", "--watch-timeout-seconds", "5",
    )  # fmt: skip
    url = f"http://127.0.0.1:{replica.port}/v1/services"

    def names() -> list[str]:
        return [i["name"] for i in httpx.get(url, headers=headers, params={"health": "any"}).json()["items"]]

    assert names() == ["before"]
    k8s.apply(registration("after", spec), namespace)  # the stalled watch never delivers this
    replica.wait_until(lambda: names() == ["after", "before"], "the re-list to show the new registration")

    # The watch and every list fail: stale, and said so.
    proxy.inject(Fault("GET", r"/serviceregistrations$", "503", times=-1))
    replica.wait_until(lambda: "stale" in (replica.ready() or {}), "/readyz to report staleness", 30)
    answer = httpx.get(url, headers=headers)
    assert answer.status_code == 200 and "X-Svcreg-Stale-Seconds" in answer.headers
    assert replica.metric("svcreg_index_stale_seconds") > 0
    proxy.clear()
    replica.wait_until(lambda: "stale" not in (replica.ready() or {}), "the watch to recover", 60)
    assert "X-Svcreg-Stale-Seconds" not in httpx.get(url, headers=headers).headers


def test_forty_namespaces_of_watches_leave_room_for_reviews(
    k8s: Kube, control_plane: Cluster, tmp_path: Path
) -> None:
    """With 40 --namespace values the watches hold 40 connections; reviews still get theirs."""
    namespaces = [k8s.create_namespace("many") for _ in range(40)]
    k8s.create_service_account(namespaces[0], "reader")
    k8s.grant(namespaces[0], "reader", ["get", "list", "watch"])
    token = k8s.token(namespaces[0], "reader")
    args = [a for ns in namespaces for a in ("--namespace", ns)]
    replica = OperatorProcess(control_plane, tmp_path / "many.log", "--discovery-only", *args).start()
    try:
        replica.wait_until(
            lambda: (replica.ready() or {}).get("httpStatus") == 200, "the replica to be ready"
        )
        answer = httpx.get(
            f"http://127.0.0.1:{replica.port}/v1/services",
            headers={"Authorization": f"Bearer {token}"},
            params={"namespace": namespaces[0]},
            timeout=20,
        )
        assert answer.status_code == 200, answer.text
    finally:
        replica.stop()
