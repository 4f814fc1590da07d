"""Probe scale: N registrations in a real API server, probed by ``svcreg run`` in its own process.

    .venv/bin/python -m bench.probe_scale [--registrations 10000] [--interval 10] [--steady 60]

What it does and how each figure is measured:

1. Starts (or reuses) the local control plane and creates N registrations with
   ``intervalSeconds`` = --interval, spread over --ports local HTTP targets served by
   bench/target_server.py in a separate process (so their CPU is not the operator's).
2. Starts ``svcreg run`` as a subprocess and waits until all N are Healthy in its metrics.
3. Steady state, over --steady seconds, from the operator's /metrics and /proc:
   probes/s (delta of svcreg_probes_total), scheduler lag p50/p99 (delta of the
   svcreg_scheduler_lag_seconds histogram, read as the upper bound of the bucket holding the
   quantile), status writes per minute (delta of svcreg_status_writes_total), CPU in cores
   (delta of utime+stime over wall time) and peak RSS (VmHWM).
4. Kills one dedicated target and times how long until its registration's status.health is
   Unhealthy (default thresholds: failureThreshold 3, so about 2-3 intervals).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    cpu_seconds,
    create_all,
    free_port,
    log,
    metrics,
    peak_rss_mib,
    start_operator,
    total,
    wait,
)
from svcreg.devtools import kubectl as kube
from svcreg.devtools.controlplane import cluster, progress
from svcreg.kube.api import KubeApi

NAMESPACE = "svcreg-bench"


def lag_quantiles(before: dict[str, Any], after: dict[str, Any], quantiles: tuple[float, ...]) -> list[str]:
    def buckets(sample: dict[str, Any]) -> dict[float, float]:
        return {float(labels["le"]): v for labels, v in sample.get("svcreg_scheduler_lag_seconds_bucket", [])}

    b0, b1 = buckets(before), buckets(after)
    bounds = sorted(b1)
    counts = [b1[b] - b0.get(b, 0) for b in bounds]
    answers = []
    for q in quantiles:
        needed = q * counts[-1]
        bound = next((b for b, c in zip(bounds, counts, strict=True) if c >= needed), float("inf"))
        answers.append("> 30 s" if bound == float("inf") else f"<= {bound * 1000:g} ms")
    return answers


def registration(name: str, port: int, interval: int) -> dict[str, Any]:
    return {
        "apiVersion": "svcreg.io/v1alpha1",
        "kind": "ServiceRegistration",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "service": f"svc-{port}",
            "version": "1.0.0",
            "endpoint": f"http://127.0.0.1:{port}",
            "capabilities": ["bench"],
            "healthCheck": {"path": "/healthz", "intervalSeconds": interval, "timeoutSeconds": 2},
        },
    }


async def create_registrations(api: KubeApi, count: int, ports: list[int], interval: int) -> None:
    path = f"/apis/svcreg.io/v1alpha1/namespaces/{NAMESPACE}/serviceregistrations"
    await create_all(
        api, path, (registration(f"r{i:05d}", ports[i % len(ports)], interval) for i in range(count))
    )


async def setup(count: int, ports: list[int], victim_port: int, interval: int) -> None:
    api = KubeApi()
    try:
        await api.request("POST", "/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
        started = time.monotonic()
        await create_registrations(api, count, ports, interval)
        log(f"created {count} registrations in {time.monotonic() - started:.1f}s")
        victim = registration("victim", victim_port, interval)
        answer = await api.request(
            "POST", f"/apis/svcreg.io/v1alpha1/namespaces/{NAMESPACE}/serviceregistrations", json=victim
        )
        if answer.status_code not in (201, 409):
            raise RuntimeError(f"create victim: HTTP {answer.status_code}")
    finally:
        await api.close()


async def victim_health() -> str:
    api = KubeApi()
    try:
        answer = await api.request(
            "GET", f"/apis/svcreg.io/v1alpha1/namespaces/{NAMESPACE}/serviceregistrations/victim"
        )
        return str(answer.json().get("status", {}).get("health"))
    finally:
        await api.close()


async def cleanup() -> None:
    api = KubeApi()
    try:
        # A DeleteCollection of 10,000 objects takes longer than an ordinary call.
        await api.request(
            "DELETE",
            f"/apis/svcreg.io/v1alpha1/namespaces/{NAMESPACE}/serviceregistrations",
            deadline_seconds=600,
        )
    finally:
        await api.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registrations", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of steady state to measure")
    parser.add_argument(
        "--ports", type=int, default=20, help="local target ports to spread registrations over"
    )
    parser.add_argument("--concurrency", type=int, default=200, help="--probe-concurrency for the operator")
    parser.add_argument(
        "--hang-share",
        type=float,
        default=0.0,
        help="share of target ports that accept and never answer (e.g. 0.1: 10%% of registrations hang)",
    )
    args = parser.parse_args()
    hanging = round(args.ports * args.hang_share)

    control_plane = cluster.up(report=progress.stderr_reporter)
    env = control_plane.env()
    os.environ["KUBECONFIG"] = control_plane.kubeconfig
    kube.install_crd(env)

    targets = subprocess.Popen(
        [sys.executable, "-m", "bench.target_server", str(args.ports - hanging), str(hanging)],
        stdout=subprocess.PIPE,
        text=True,
    )
    victim_target = subprocess.Popen(
        [sys.executable, "-m", "bench.target_server", "1"], stdout=subprocess.PIPE, text=True
    )
    assert targets.stdout is not None and victim_target.stdout is not None
    ports = [int(p) for p in targets.stdout.readline().split()]
    victim_port = int(victim_target.stdout.readline())
    operator: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(cleanup())
        asyncio.run(setup(args.registrations, ports, victim_port, args.interval))
        port = free_port()
        log_file = Path(tempfile.mkdtemp(prefix="svcreg-bench-")) / "operator.log"
        operator = start_operator(
            env,
            log_file,
            "--standalone",
            "--port",
            str(port),
            "--namespace",
            NAMESPACE,
            "--probe-allow",
            "127.0.0.0/8",
            "--probe-concurrency",
            str(args.concurrency),
        )
        everyone = args.registrations + 1
        # Registration i probes ports[i % len(ports)]; the last ``hanging`` ports never answer.
        answering = args.ports - hanging
        hung = sum(1 for i in range(args.registrations) if i % args.ports >= answering)
        expected_healthy = everyone - hung

        def settled() -> bool:
            try:
                found = metrics(port)
            except httpx.HTTPError:
                return False
            healthy = total(found, "svcreg_registrations", health="Healthy")
            return (
                healthy >= expected_healthy
                and total(found, "svcreg_registrations", health="Unhealthy") >= hung
            )

        wanted = f"{expected_healthy} registrations Healthy, {hung} Unhealthy"
        took = wait(settled, wanted, 600, operator)
        log(f"{wanted} {took:.0f}s after the operator started; operator log: {log_file}")
        # Let the start-up burst of first writes and Events (and their retries) drain before
        # measuring: until no status write lands for 10 s, or 10 minutes pass.
        drain_started, previous = time.monotonic(), -1.0
        while time.monotonic() - drain_started < 600:
            written = total(metrics(port), "svcreg_status_writes_total")
            if written == previous:
                break
            previous = written
            time.sleep(10)
        log(f"start-up writes drained in {time.monotonic() - drain_started:.0f}s")
        before, cpu0, t0 = metrics(port), cpu_seconds(operator.pid), time.monotonic()
        log(f"measuring steady state for {args.steady:.0f}s")
        time.sleep(args.steady)
        after, cpu1, t1 = metrics(port), cpu_seconds(operator.pid), time.monotonic()
        elapsed = t1 - t0
        probes = total(after, "svcreg_probes_total") - total(before, "svcreg_probes_total")
        writes = total(after, "svcreg_status_writes_total") - total(before, "svcreg_status_writes_total")
        p50, p99 = lag_quantiles(before, after, (0.5, 0.99))
        cores = (cpu1 - cpu0) / elapsed
        rss = peak_rss_mib(operator.pid)
        healthy_at_end = total(after, "svcreg_registrations", health="Healthy")

        victim_target.send_signal(signal.SIGKILL)
        victim_target.wait()
        death = wait(
            lambda: asyncio.run(victim_health()) == "Unhealthy",
            "the killed target to be Unhealthy",
            300,
            operator,
        )

        print()
        print(
            f"svcreg probe scale: {everyone} registrations, intervalSeconds={args.interval}, "
            f"--probe-concurrency={args.concurrency}, {os.cpu_count()} CPUs"
        )
        print(
            f"  probes/s achieved          {probes / elapsed:8.0f}   (target {everyone / args.interval:.0f})"
        )
        if hung:
            print(
                f"  hanging targets            {hung:8d}   ({hung / args.registrations:.0%} of registrations)"
            )
            print(f"  healthy ones still Healthy {healthy_at_end:8.0f}   (of {expected_healthy})")
        print(f"  scheduler lag p50          {p50:>8}")
        print(f"  scheduler lag p99          {p99:>8}")
        print(f"  operator CPU               {cores:8.2f} cores")
        print(f"  operator peak RSS          {rss:8.0f} MiB")
        print(f"  status writes/min, steady  {writes / elapsed * 60:8.1f}")
        print(
            f"  target death -> Unhealthy  {death:8.1f} s   (failureThreshold 3, interval {args.interval}s)"
        )
        print(f"  measured over {elapsed:.0f}s of steady state; lag quantiles are histogram bucket bounds")
        return 0
    finally:
        if operator is not None:
            operator.send_signal(signal.SIGTERM)
            operator.wait(60)
        targets.kill()
        victim_target.kill()
        asyncio.run(cleanup())


if __name__ == "__main__":
    sys.exit(main())
