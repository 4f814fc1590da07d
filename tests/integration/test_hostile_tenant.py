"""A hostile tenant on the real API server: its own capability contracts (a backtracking pattern,
``uniqueItems`` over a large answer) and its own target cannot stall the operator (issue 28,
finding 1). Beside it, another namespace's registration whose target dies still turns
Unhealthy, ``/healthz`` keeps answering, and the hostile contracts end ``ContractVerified=False``
with a reason instead of a stall."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from svcreg.devtools.controlplane.cluster import Cluster
from tests.targets import AppTarget, HttpTarget

from .kubehelpers import Kube, registration
from .operator_process import OperatorProcess

CHECK = {"path": "/health", "intervalSeconds": 1, "timeoutSeconds": 0.5, "failureThreshold": 1}
HOSTILE = {
    "backtracking": (
        {"type": "object", "properties": {"word": {"type": "string", "pattern": "^(a+)+$"}}},
        {"word": "a" * 40 + "!"},
    ),
    "unique": ({"type": "array", "uniqueItems": True}, [{"n": n} for n in range(40_000)]),
}


@pytest.fixture(scope="module")
def tenants(k8s: Kube, control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    evil, victim = k8s.create_namespace("evil"), k8s.create_namespace("victim")
    target = AppTarget("hostile")
    for path, (_, answer) in HOSTILE.items():
        target.bodies[f"/{path}"] = answer
    dying = HttpTarget()
    operator = OperatorProcess(
        control_plane, tmp_path_factory.mktemp("hostile") / "operator.log",
        "--namespace", evil, "--namespace", victim, "--probe-allow", "127.0.0.0/8",
    ).start()  # fmt: skip
    try:
        yield evil, victim, target, dying, operator
    finally:
        operator.stop()
        target.close()
        dying.close()
    assert "Traceback" not in operator.log_text(), operator.log_text()[-4000:]


def test_a_hostile_contract_never_stalls_probing_status_or_healthz(k8s: Kube, tenants: Any) -> None:
    evil, victim, target, dying, operator = tenants
    k8s.apply(registration("victim", {"endpoint": dying.url, "healthCheck": {**CHECK, "path": "/"}}), victim)
    k8s.kubectl(
        "wait", "--for=jsonpath={.status.health}=Healthy", "svcreg/victim", "-n", victim, "--timeout=60s"
    )
    for path, (schema, _) in HOSTILE.items():
        capability = {
            "name": "answer",
            "outputSchema": schema,
            "contract": {"path": f"/{path}", "timeoutSeconds": 60, "intervalSeconds": 30},
        }
        spec = {"endpoint": target.url, "healthCheck": CHECK, "capabilities": [capability]}
        k8s.apply(registration(path, spec), evil)

    # /healthz is asked all along, each time within 2 s: a loop held by validation misses it.
    missed: list[str] = []
    stop = threading.Event()

    def ask_healthz() -> None:
        while not stop.is_set():
            try:
                httpx.get(f"{operator.url}/healthz", timeout=2).raise_for_status()
            except httpx.HTTPError as error:
                missed.append(repr(error))
            stop.wait(0.2)

    asker = threading.Thread(target=ask_healthz, daemon=True)
    asker.start()
    try:
        operator.wait_until(
            lambda: target.calls.get("/unique", 0) and target.calls.get("/backtracking", 0), "contracts sent"
        )
        dying.mode = "reset"
        k8s.kubectl(
            "wait",
            "--for=jsonpath={.status.health}=Unhealthy",
            "svcreg/victim",
            "-n",
            victim,
            "--timeout=30s",
        )
        for path in HOSTILE:
            k8s.kubectl(
                "wait", "--for=jsonpath={.status.capabilities[0].conditions[0].status}=False",
                f"svcreg/{path}", "-n", evil, "--timeout=60s",
            )  # fmt: skip
    finally:
        stop.set()
        asker.join(10)
    assert missed == []
    for path in HOSTILE:
        stored = json.loads(k8s.kubectl("get", "svcreg", path, "-n", evil, "-o", "json").stdout)
        [verified] = stored["status"]["capabilities"][0]["conditions"]
        assert (verified["type"], verified["reason"]) == ("ContractVerified", "JudgeTimeout"), verified
        assert "aaaa" not in verified["message"]  # the answer is never echoed
        assert stored["status"]["health"] == "Healthy"  # the contract never stopped the probe
