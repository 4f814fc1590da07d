"""What the benchmarks share: logging, reading an operator's /metrics, waiting, starting it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

Sample = dict[str, list[tuple[dict[str, str], float]]]  # a scrape: name -> [(labels, value)]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def metrics(port: int) -> Sample:
    """A scrape of svcreg's /metrics, parsed by prometheus_client (label values such as the
    route template ``/v1/capabilities/{name}`` hold braces a regular expression trips on)."""
    parsed: Sample = {}
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            parsed.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return parsed


def total(sample: Sample, name: str, **want: str) -> float:
    return sum(v for labels, v in sample.get(name, []) if all(labels.get(k) == x for k, x in want.items()))


def wait(condition: Any, what: str, timeout: float, operator: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    while not condition():
        if operator.poll() is not None:
            raise RuntimeError(f"the operator exited while waiting for {what}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def create_all(api: Any, path: str, bodies: Iterable[dict[str, Any]], connections: int = 32) -> None:
    """POST every body to ``path`` over ``connections`` parallel requests; 409 (exists) is fine."""
    pending = iter(bodies)

    async def worker() -> None:
        for body in pending:
            answer = await api.request("POST", path, json=body)
            if answer.status_code not in (201, 409):
                name = body["metadata"]["name"]
                raise RuntimeError(f"create {name}: HTTP {answer.status_code} {answer.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(connections)))


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """Resident memory now (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_operator(env: dict[str, str], log_file: Path, *args: str) -> subprocess.Popen[bytes]:
    """``svcreg run`` as its own process, so its CPU and memory can be measured apart. The
    per-identity rate limit is off: a bench's few tokens stand for many callers."""
    return subprocess.Popen(
        [sys.executable, "-m", "svcreg.cli", "run", "--rate-limit", "0", *args],
        env=env,
        stdout=log_file.open("wb"),
        stderr=subprocess.STDOUT,
    )


def buckets(before: Sample, after: Sample, name: str, **want: str) -> list[tuple[float, float]]:
    """A Prometheus histogram's cumulative bucket counts over a window: (upper bound, count)
    between two scrapes, summed over the series that match ``want``."""
    bounds: dict[float, float] = {}
    for sample, sign in ((after, 1.0), (before, -1.0)):
        for labels, value in sample.get(name + "_bucket", []):
            if all(labels.get(k) == v for k, v in want.items()):
                bound = float(labels["le"])
                bounds[bound] = bounds.get(bound, 0.0) + sign * value
    return sorted(bounds.items())


def bucket_quantile(cumulative: list[tuple[float, float]], q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` (an upper estimate; inf if beyond)."""
    if not cumulative or cumulative[-1][1] <= 0:
        return float("nan")
    wanted = q * cumulative[-1][1]
    return next(bound for bound, count in cumulative if count >= wanted)


def above(cumulative: list[tuple[float, float]], bound: float) -> float:
    """How many observations in the window were above ``bound`` (one of the bucket bounds)."""
    if not cumulative:
        return 0.0
    at_or_below = max((count for b, count in cumulative if b <= bound), default=0.0)
    return cumulative[-1][1] - at_or_below


async def reader_namespace(api: Any, namespace: str, registrations_path: str) -> None:
    """``namespace`` with no registrations left in it and a ServiceAccount ``reader`` that may
    get, list and watch them (a Role and its binding): what every bench queries discovery as."""
    await api.request("POST", "/api/v1/namespaces", json={"metadata": {"name": namespace}})
    await api.request("DELETE", registrations_path, deadline_seconds=600)
    await api.request(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", json={"metadata": {"name": "reader"}}
    )
    rule = {
        "apiGroups": ["svcreg.io"],
        "resources": ["serviceregistrations"],
        "verbs": ["get", "list", "watch"],
    }
    await api.request(
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
        json={"metadata": {"name": "reader"}, "rules": [rule]},
    )
    await api.request(
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        json={
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )


async def reader_token(api: Any, namespace: str, seconds: int = 7200) -> str:
    """A TokenRequest token of ``reader`` in ``namespace``."""
    answer = await api.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/reader/token",
        json={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        },
    )
    token: str = answer.json()["status"]["token"]
    return token
