"""Probe scale: N registrations in a real API server, probed by ``svcreg run`` in its own process.

    .venv/bin/python -m bench.probe_scale [--registrations 10000] [--interval 10] [--steady 60]
        [--replicas 1] [--engine-seconds 30] [--hang-share 0]

What it does and how each figure is measured:

0. The engine's limit, on the same targets, before svcreg starts (bench/engines.py): a minimal
   Python prober (svcreg's own HTTP probe and event loop, no scheduler, state or status) and a
   minimal Go prober (net/http), each for --engine-seconds at the same rate, each reporting
   probes and its own CPU seconds. svcreg's probes per CPU-second is printed as a share of each.

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
5. With --replicas N > 1, N operators run as one prober group (no --standalone); CPU and RSS
   are per replica, probes/s and writes summed; then one replica is killed with SIGKILL and the
   handoff is timed until the survivors' svcreg_prober_share covers every registration.
6. First convergence beside its ceiling: the registrations' first status writes per second
   (N / time until all are Healthy) beside what the API server accepts from a bare client
   (KubeApi, 32 connections as svcreg has, one patch in flight on each) patching the same
   registrations' status with the same body, after the operators have stopped.
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

from bench import engines
from bench.common import (
    bucket_quantile,
    buckets,
    cpu_seconds,
    create_all,
    free_port,
    log,
    metrics,
    peak_rss_mib,
    rss_mib,
    start_operator,
    total,
    wait,
)
from svcreg.devtools import kubectl as kube
from svcreg.devtools.controlplane import cluster, progress
from svcreg.kube.api import KubeApi

NAMESPACE = "svcreg-bench"


def lag_quantiles(before: dict[str, Any], after: dict[str, Any], quantiles: tuple[float, ...]) -> list[str]:
    """Quantiles of the lag histogram between two scrapes (of one process, or of several
    concatenated: buckets of the same bound are summed by ``buckets``)."""
    cumulative = buckets(before, after, "svcreg_scheduler_lag_seconds")
    answers = []
    for q in quantiles:
        bound = bucket_quantile(cumulative, q)
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


async def bare_patch_rate(names: list[str], status: dict[str, Any], in_flight: int = 32) -> float:
    """Status patches per second the API server accepts from a bare client: every registration
    patched once with ``status`` (a message made unique so each is a real write)."""
    api = KubeApi()
    queue = list(reversed(names))

    async def worker() -> None:
        while queue:
            name = queue.pop()
            body = {
                **status,
                "conditions": [
                    dict(c, message=f"{c.get('message', '')} {name}") for c in status["conditions"]
                ],
            }
            await api.patch_status(NAMESPACE, name, body)

    try:
        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return len(names) / (time.monotonic() - started)
    finally:
        await api.close()


async def written_status(name: str) -> dict[str, Any]:
    api = KubeApi()
    try:
        answer = await api.request(
            "GET", f"/apis/svcreg.io/v1alpha1/namespaces/{NAMESPACE}/serviceregistrations/{name}"
        )
        status: dict[str, Any] = answer.json()["status"]
        return status
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


def empty_operator_rss(env: dict[str, str], log_dir: Path) -> float:
    """RSS of an operator watching a namespace with no registrations, once ready and settled:
    what the process costs before it holds anything (the anchor for memory per registration)."""
    port = free_port()
    process = start_operator(
        env, log_dir / "empty.log", "--standalone", "--port", str(port), "--namespace", f"{NAMESPACE}-empty"
    )
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait(ready, "the empty operator to be ready", 120, process)
        time.sleep(5)  # the start-up garbage collected and frozen
        return rss_mib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


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
    parser.add_argument("--replicas", type=int, default=1, help="operators in one prober group")
    parser.add_argument(
        "--engine-seconds", type=float, default=30.0, help="how long each minimal prober runs (0: skip)"
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
    operators: list[tuple[int, subprocess.Popen[bytes]]] = []
    try:
        asyncio.run(cleanup())
        asyncio.run(setup(args.registrations, ports, victim_port, args.interval))
        limits: dict[str, dict[str, Any]] = {}
        if args.engine_seconds > 0:
            for name, run in (("minimal Python", engines.run_minimal), ("minimal Go", engines.run_go)):
                log(f"{name} prober: {args.registrations} targets for {args.engine_seconds:.0f}s")
                limits[name] = run(ports, args.registrations, args.interval, 2.0, args.engine_seconds)
        log_dir = Path(tempfile.mkdtemp(prefix="svcreg-bench-"))
        baseline = empty_operator_rss(env, log_dir)
        log(f"an operator with no registrations: {baseline:.0f} MiB RSS")
        common = (
            "--namespace",
            NAMESPACE,
            "--probe-allow",
            "127.0.0.0/8",
            "--probe-concurrency",
            str(args.concurrency),
        )
        group = (
            ("--standalone",)
            if args.replicas == 1
            else ("--lease-namespace", NAMESPACE, "--prober-group", "bench")
        )
        started = time.monotonic()
        for r in range(args.replicas):
            port = free_port()
            process = start_operator(env, log_dir / f"operator-{r}.log", *group, "--port", str(port), *common)
            operators.append((port, process))
        first_port, first = operators[0]
        everyone = args.registrations + 1
        # Registration i probes ports[i % len(ports)]; the last ``hanging`` ports never answer.
        answering = args.ports - hanging
        hung = sum(1 for i in range(args.registrations) if i % args.ports >= answering)
        expected_healthy = everyone - hung

        def settled() -> bool:
            try:
                found = metrics(first_port)  # each member counts every registration's written health
            except httpx.HTTPError:
                return False
            healthy = total(found, "svcreg_registrations", health="Healthy")
            return (
                healthy >= expected_healthy
                and total(found, "svcreg_registrations", health="Unhealthy") >= hung
            )

        wanted = f"{expected_healthy} registrations Healthy, {hung} Unhealthy"
        wait(settled, wanted, 900, first)
        took = time.monotonic() - started
        # Every API write of the convergence: first status writes and the Events they post.
        converged_writes = sum(
            total(found, "svcreg_status_writes_total", result="ok") + total(found, "svcreg_events_total")
            for found in (metrics(port) for port, _ in operators)
        )
        log(f"{wanted} {took:.0f}s after the operators started; logs in {log_dir}")
        # Let the start-up burst of first writes and Events (and their retries) drain before
        # measuring: until no status write lands for 10 s, or 10 minutes pass.
        drain_started, previous = time.monotonic(), -1.0
        while time.monotonic() - drain_started < 600:
            written = sum(total(metrics(port), "svcreg_status_writes_total") for port, _ in operators)
            if written == previous:
                break
            previous = written
            time.sleep(10)
        log(f"start-up writes drained in {time.monotonic() - drain_started:.0f}s")

        def scrape() -> dict[str, Any]:
            joined: dict[str, Any] = {}
            for port, _ in operators:
                for name, samples in metrics(port).items():
                    joined.setdefault(name, []).extend(samples)
            return joined

        before, t0 = scrape(), time.monotonic()
        cpu0 = [cpu_seconds(p.pid) for _, p in operators]
        log(f"measuring steady state for {args.steady:.0f}s")
        time.sleep(args.steady)
        after, t1 = scrape(), time.monotonic()
        cpu1 = [cpu_seconds(p.pid) for _, p in operators]
        elapsed = t1 - t0
        probes = total(after, "svcreg_probes_total") - total(before, "svcreg_probes_total")
        writes = total(after, "svcreg_status_writes_total") - total(before, "svcreg_status_writes_total")
        p50, p99 = lag_quantiles(before, after, (0.5, 0.99))
        cores = [(b - a) / elapsed for a, b in zip(cpu0, cpu1, strict=True)]
        rss = [peak_rss_mib(p.pid) for _, p in operators]
        steady_rss = [rss_mib(p.pid) for _, p in operators]
        healthy_at_end = total(metrics(first_port), "svcreg_registrations", health="Healthy")

        handoff = None
        if args.replicas > 1:
            _, killed = operators.pop()
            killed.send_signal(signal.SIGKILL)
            killed.wait()
            handoff = wait(
                lambda: sum(total(metrics(port), "svcreg_prober_share") for port, _ in operators) >= everyone,
                "the survivors to take the killed replica's share over",
                300,
                first,
            )
        victim_target.send_signal(signal.SIGKILL)
        victim_target.wait()
        death = wait(
            lambda: asyncio.run(victim_health()) == "Unhealthy",
            "the killed target to be Unhealthy",
            300,
            first,
        )
        status = asyncio.run(written_status("r00000"))
        for _, process in operators:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        operators.clear()
        names = [f"r{i:05d}" for i in range(args.registrations)]
        log(f"bare client: patching {len(names)} statuses")
        ceiling = asyncio.run(bare_patch_rate(names, status))

        print()
        print(
            f"svcreg probe scale: {everyone} registrations, intervalSeconds={args.interval}, "
            f"--probe-concurrency={args.concurrency}, {args.replicas} replica(s), {os.cpu_count()} CPUs"
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
        print(f"  operator CPU per replica   {', '.join(f'{c:.2f}' for c in cores)} cores")
        per_10k = max(steady_rss) / everyone * 10_000
        print(f"  operator peak RSS          {', '.join(f'{r:.0f}' for r in rss)} MiB   (the start-up burst)")
        print(f"  operator RSS, steady       {', '.join(f'{r:.0f}' for r in steady_rss)} MiB")
        print(f"    per 10,000 registrations {per_10k:8.0f} MiB   (steady, the largest replica)")
        # Each replica watches, indexes and tracks every registration (it probes only its share).
        marginal = (max(steady_rss) - baseline) / everyone * 10_000
        print(f"    an empty operator        {baseline:8.0f} MiB   (anchor, same run)")
        print(f"    added per 10,000 held    {marginal:8.0f} MiB   (largest replica less the empty one)")
        print(f"  status writes/s, steady    {writes / elapsed:8.2f}")
        print(
            f"  target death -> Unhealthy  {death:8.1f} s   (failureThreshold 3, interval {args.interval}s)"
        )
        if handoff is not None:
            print(f"  handoff after a SIGKILL    {handoff:8.1f} s   (Lease duration 15 s)")
        per_cpu = probes / max(sum(cpu1) - sum(cpu0), 1e-9)
        print(f"  probes per CPU-second      {per_cpu:8.0f}   (svcreg, all replicas)")
        for name, limit in limits.items():
            theirs = limit["probes"] / max(limit["cpuSeconds"], 1e-9)
            rate, their_rss = limit["probes"] / limit["seconds"], limit["maxRssKiB"] / 1024
            print(
                f"    {name:<22} {theirs:8.0f}   svcreg at {per_cpu / theirs:.0%} of it "
                f"({rate:.0f} probes/s, {their_rss:.0f} MiB RSS)"
            )
        convergence, api_writes = everyone / took, converged_writes / took
        print(f"  first convergence          {convergence:8.0f} /s   ({everyone} Healthy in {took:.0f}s)")
        print(f"    API writes meanwhile     {api_writes:8.0f} /s   (status patches and Events)")
        print(
            f"    bare client ceiling      {ceiling:8.0f} patches/s  (svcreg at "
            f"{convergence / ceiling:.0%} in registrations, {api_writes / ceiling:.0%} in writes)"
        )
        print(
            f"  measured over {elapsed:.0f}s of steady state; lag quantiles are histogram bucket bounds; "
            "CPU from /proc utime+stime of each process"
        )
        return 0
    finally:
        for _, process in operators:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        targets.kill()
        victim_target.kill()
        asyncio.run(cleanup())


if __name__ == "__main__":
    sys.exit(main())
