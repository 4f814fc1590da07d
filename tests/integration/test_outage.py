"""The API server and etcd going away, on a control plane of this module's own.

kube-apiserver is stopped for 30 s and started again, then etcd is restarted: the operator and
a discovery-only replica recover without restarting, nothing is lost, final statuses are true,
and while its watch is down the replica says it is stale.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import config

from svcreg.devtools import kubectl as kube
from svcreg.devtools.controlplane import cluster, progress
from tests.targets import HttpTarget

from .kubehelpers import Kube, registration
from .operator_process import OperatorProcess

CHECK = {"intervalSeconds": 1, "timeoutSeconds": 0.5, "failureThreshold": 1}


@pytest.fixture(scope="module")
def own_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, cluster.Cluster]]:
    directory = Path(tmp_path_factory.mktemp("outage-plane"))
    running = cluster.up(directory, report=progress.silent)
    try:
        yield directory, running
    finally:
        cluster.down(directory, report=progress.silent)


def test_the_api_server_and_etcd_going_away_are_survived(
    own_plane: tuple[Path, cluster.Cluster], tmp_path: Path
) -> None:
    directory, plane = own_plane
    k8s = Kube(cluster=plane, api=config.new_client_from_config(config_file=plane.kubeconfig))
    kube.install_crd(k8s.env)
    namespace = k8s.create_namespace("outage")
    k8s.create_service_account(namespace, "reader")
    k8s.grant(namespace, "reader", ["get", "list", "watch"])
    token = k8s.token(namespace, "reader")
    live, dying = HttpTarget(), HttpTarget()
    operator = OperatorProcess(
        plane, tmp_path / "operator.log", "--namespace", namespace, "--probe-allow", "127.0.0.0/8",
        "--watch-timeout-seconds", "10", "--api-timeout-seconds", "5",
    ).start()  # fmt: skip
    replica = OperatorProcess(
        plane, tmp_path / "replica.log", "--namespace", namespace, "--discovery-only",
        "--watch-timeout-seconds", "10", "--api-timeout-seconds", "5",
    ).start()  # fmt: skip
    pids = (operator.process.pid, replica.process.pid)  # type: ignore[union-attr]

    def health(name: str) -> str | None:
        return ((k8s.get_registration(namespace, name) or {}).get("status") or {}).get("health")

    def served(process: OperatorProcess) -> list[str]:
        answer = httpx.get(
            f"http://127.0.0.1:{process.port}/v1/services",
            headers={"Authorization": f"Bearer {token}"},
            params={"health": "any"},
            timeout=10,
        )
        return sorted(i["name"] for i in answer.json()["items"]) if answer.status_code == 200 else []

    try:
        for name, target in (("live", live), ("dying", dying)):
            k8s.apply(registration(name, {"endpoint": target.url, "healthCheck": CHECK}), namespace)
        operator.wait_until(lambda: health("live") == health("dying") == "Healthy", "both Healthy")
        replica.wait_until(lambda: served(replica) == ["dying", "live"], "the replica to serve both")

        # The API server goes away for 30 s; meanwhile a target really dies, and the replica is
        # watched for saying that its data is stale.
        seen: list[dict[str, object]] = []
        outage = threading.Event()

        def observe() -> None:
            while not outage.is_set():
                seen.append(replica.ready() or {})
                outage.wait(0.5)

        observer = threading.Thread(target=observe)
        observer.start()
        stopped = time.monotonic()
        dying.close()
        try:
            cluster.restart(directory, "kube-apiserver", down_seconds=30)
        finally:
            outage.set()
            observer.join()
        assert time.monotonic() - stopped >= 30
        assert any("stale" in ready for ready in seen), seen[-3:]
        assert all(ready.get("httpStatus") == 200 for ready in seen if ready)  # still serving
        operator.wait_until(lambda: health("dying") == "Unhealthy", "the death to be written", 120)
        assert health("live") == "Healthy"
        # The watches recovered: a registration made now shows in both, without a restart.
        k8s.apply(registration("after", {"endpoint": live.url, "healthCheck": CHECK}), namespace)
        replica.wait_until(lambda: "after" in served(replica), "the replica's watch to recover", 120)
        operator.wait_until(lambda: health("after") == "Healthy", "the operator's watch to recover", 120)
        replica.wait_until(lambda: "stale" not in (replica.ready() or {}), "the replica to be fresh again")

        # etcd restarts under the API server.
        cluster.restart(directory, "etcd", down_seconds=5)
        k8s.apply(registration("after-etcd", {"endpoint": live.url, "healthCheck": CHECK}), namespace)
        replica.wait_until(lambda: "after-etcd" in served(replica), "the replica after etcd", 120)
        operator.wait_until(lambda: health("after-etcd") == "Healthy", "the operator after etcd", 120)

        # Nothing lost, nothing restarted.
        assert served(replica) == ["after", "after-etcd", "dying", "live"]
        assert (operator.process.pid, replica.process.pid) == pids  # type: ignore[union-attr]
        assert operator.process.poll() is None and replica.process.poll() is None  # type: ignore[union-attr]
    finally:
        live.close()
        operator.stop()
        replica.stop()
