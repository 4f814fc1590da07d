"""Discovery load: capability lookups through svcreg against the alternatives.

    .venv/bin/python -m bench.discovery_load [--registrations 10000] [--seconds 15] [--rate 1000] [--rounds 3]

Creates N registrations (capabilities cap-0..cap-999, so a lookup answers about N/1000
instances; ``type: none`` checks, so no probe targets are needed), runs ``svcreg run`` as a
subprocess, waits until all are Healthy in its index, then drives load from separate
processes on loopback:

  (a) GET /v1/capabilities/cap-7 through svcreg, with a ServiceAccount token (reviews cached);
  (b) what a user does without svcreg: LIST every registration from kube-apiserver with the
      same token and filter by capability in the client (bench/loadgen.py, Python);
  (c) a bare aiohttp hello-world on the same machine.

(a) is measured on the operator process (prober and Kopf share its event loop) and, as (a'),
on a ``--discovery-only`` replica, which is how reads are meant to scale.

(a) and (c) are driven by vegeta (bench/vegeta.py, built from Go modules, confined to one core),
so the client's own stalls do not count as the server's: closed loop with 32 connections gives
requests/s, with the server's CPU time over the run (near 100% of a core: the server, not the
client, is what limits it) and its CPU per answer, in --rounds interleaved rounds of which the
median is printed (the API server and etcd share the machine and do not keep still); and
open loop at --rate (default 1,000 req/s) gives p50/p99/max measured from each request's
scheduled start. For the open-loop runs of svcreg the benchmark also reads svcreg's own
/metrics before and after and prints what the server saw over the same window: the p99 of
its request-latency histogram (as the bucket bound that holds it), how many answers took
over 5 ms, the longest event-loop lag, and garbage collections over 1 ms by generation.
Everything shares the machine's cores: API server, etcd, operator, replica and load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import vegeta
from bench.common import (
    Sample,
    above,
    bucket_quantile,
    buckets,
    cpu_seconds,
    create_all,
    free_port,
    log,
    metrics,
    peak_rss_mib,
    reader_namespace,
    reader_token,
    start_operator,
    total,
    wait,
)
from svcreg.devtools import kubectl as kube
from svcreg.devtools.controlplane import cluster, progress
from svcreg.kube.api import KubeApi

NAMESPACE = "svcreg-load"
REG_PATH = f"/apis/svcreg.io/v1alpha1/namespaces/{NAMESPACE}/serviceregistrations"


def _registration(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "svcreg.io/v1alpha1",
        "kind": "ServiceRegistration",
        "metadata": {"name": f"r{i:05d}"},
        "spec": {
            "service": f"svc-{i % 100}",
            "version": f"1.{i % 10}.0",
            "endpoint": f"http://svc-{i % 100}.{NAMESPACE}.svc:8080",
            "capabilities": [f"cap-{i % 1000}"],
            "tags": ["load"],
            "weight": 1 + i % 5,
            "healthCheck": {"type": "none", "intervalSeconds": 60},
        },
    }


async def setup(count: int) -> str:
    """Namespace, a reader ServiceAccount bound by a Role, N registrations; returns a token."""
    api = KubeApi()
    try:
        await reader_namespace(api, NAMESPACE, REG_PATH)
        started = time.monotonic()
        await create_all(api, REG_PATH, (_registration(i) for i in range(count)))
        log(f"created {count} registrations in {time.monotonic() - started:.0f}s")
        return await reader_token(api, NAMESPACE)
    finally:
        await api.close()


async def cleanup() -> None:
    api = KubeApi()
    try:
        await api.request("DELETE", REG_PATH, deadline_seconds=600)
    finally:
        await api.close()


def list_and_filter(url: str, token: str, ca: str, seconds: float) -> dict[str, Any]:
    """(b): closed loop, 4 connections, each answer parsed and filtered as a client would."""
    answer = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            url,
            "--token",
            token,
            "--concurrency",
            "4",
            "--seconds",
            str(seconds),
            "--ca",
            ca,
            "--filter-capability",
            "cap-7",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(answer.stdout)
    return result


CAPABILITY_ROUTE = "/v1/capabilities/{name}"


def server_side(before: Sample, after: Sample) -> dict[str, Any]:
    """What svcreg's /metrics saw between two scrapes (bucket bounds, so upper estimates)."""
    latency = buckets(before, after, "svcreg_http_request_duration_seconds", route=CAPABILITY_ROUTE)
    lag = buckets(before, after, "svcreg_event_loop_lag_seconds")
    return {
        "p99_le_ms": bucket_quantile(latency, 0.99) * 1000,
        "over_5ms": int(above(latency, 0.005)),
        "lag_max_le_ms": bucket_quantile(lag, 1.0) * 1000,
        "gc_over_1ms": {
            generation: int(
                above(buckets(before, after, "svcreg_gc_pause_seconds", generation=generation), 0.001)
            )
            for generation in ("0", "1", "2")
        },
    }


def closed_loop(url: str, pid: int, token: str | None, seconds: float) -> dict[str, Any]:
    """Closed loop, with the server's own CPU time over the run: how busy it was (below 100%
    of a core it was waiting on the client or the kernel, not working) and CPU per answer."""
    started = cpu_seconds(pid)
    row = vegeta.attack(url, seconds=seconds, token=token)
    used = cpu_seconds(pid) - started
    row["cpu_pct"] = used / row["seconds"] * 100
    row["cpu_us"] = used / max(row["requests"], 1) * 1e6
    return row


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median requests/s (the lower middle one for an even count)."""
    return sorted(rounds, key=lambda row: row["rps"])[(len(rounds) - 1) // 2]


def open_loop_with_metrics(
    url: str, port: int, token: str, rate: float, seconds: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    before = metrics(port)
    row = vegeta.attack(url, rate=rate, seconds=seconds, token=token)
    return row, server_side(before, metrics(port))


def wait_for_line(log_file: Path, line: str, process: subprocess.Popen[bytes], timeout: float) -> float:
    return wait(
        lambda: line in log_file.read_text(errors="replace"), f"{line!r} in {log_file}", timeout, process
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registrations", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="closed-loop rounds over (a), (a') and (c), interleaved; the median of each is printed",
    )
    parser.add_argument(
        "--report-stalls-ms",
        type=float,
        help="passed to svcreg: log the event loop's stack whenever it stalls this long",
    )
    args = parser.parse_args()

    vegeta.binary()  # built (or found in the cache) before anything else starts
    control_plane = cluster.up(report=progress.stderr_reporter)
    env = control_plane.env()
    os.environ["KUBECONFIG"] = control_plane.kubeconfig
    kube.install_crd(env)
    token = asyncio.run(setup(args.registrations))

    port, hello_port, replica_port = free_port(), free_port(), free_port()
    extra = ["--report-stalls-ms", f"{args.report_stalls_ms:g}"] if args.report_stalls_ms else []
    log_file = Path(tempfile.mkdtemp(prefix="svcreg-load-")) / "operator.log"
    replica_log = log_file.parent / "replica.log"
    operator = start_operator(
        env, log_file, "--standalone", "--port", str(port), "--namespace", NAMESPACE, *extra
    )
    hello = subprocess.Popen([sys.executable, "-m", "bench.hello_server", str(hello_port)])
    replica = start_operator(
        env, replica_log, "--discovery-only", "--port", str(replica_port), "--namespace", NAMESPACE, *extra
    )
    try:

        def all_healthy() -> bool:
            try:
                return total(metrics(port), "svcreg_registrations", health="Healthy") >= args.registrations
            except httpx.HTTPError:
                return False

        took = wait(all_healthy, "every registration to be Healthy", 900, operator)
        log(
            f"all {args.registrations} Healthy {took:.0f}s after the operator started; "
            f"logs in {log_file.parent}"
        )
        # Each process has frozen its start-up state out of the collector (see runner.py).
        startup = "start-up state loaded"
        wait_for_line(log_file, startup, operator, 120)
        wait_for_line(replica_log, startup, replica, 300)
        wait(
            lambda: httpx.get(f"http://127.0.0.1:{hello_port}/").status_code == 200,
            "hello server",
            30,
            operator,
        )
        svcreg_url = f"http://127.0.0.1:{port}/v1/capabilities/cap-7"
        replica_url = f"http://127.0.0.1:{replica_port}/v1/capabilities/cap-7"
        hello_url = f"http://127.0.0.1:{hello_port}/"
        for url in (svcreg_url, replica_url):
            sample = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
            if sample.status_code != 200 or sample.json()["count"] < 1:
                raise RuntimeError(f"{url} answered {sample.status_code}: {sample.text[:200]}")
        log(f"(a) answers {sample.json()['count']} instances of cap-7")

        seconds, rate = args.seconds, args.rate
        # At rest first: what each process costs with no reads (the operator's prober runs).
        rest_started, rest_cpu = time.monotonic(), (cpu_seconds(operator.pid), cpu_seconds(replica.pid))
        time.sleep(10)  # the measurement window itself, not a wait for a condition
        rest = time.monotonic() - rest_started
        at_rest = [
            (cpu_seconds(p.pid) - before) / rest * 100
            for p, before in zip((operator, replica), rest_cpu, strict=True)
        ]
        # Closed loop in interleaved rounds, so whatever else the machine does (the API server,
        # etcd, a compaction) falls on all three alike; each prints its median round.
        closed: dict[str, list[dict[str, Any]]] = {"a": [], "r": [], "c": []}
        for _ in range(args.rounds):
            closed["a"].append(closed_loop(svcreg_url, operator.pid, token, seconds))
            closed["r"].append(closed_loop(replica_url, replica.pid, token, seconds))
            closed["c"].append(closed_loop(hello_url, hello.pid, None, seconds))
        a, r, c = (median_round(closed[k]) for k in ("a", "r", "c"))
        a_open, a_server = open_loop_with_metrics(svcreg_url, port, token, rate, seconds)
        r_open, r_server = open_loop_with_metrics(replica_url, replica_port, token, rate, seconds)
        b = list_and_filter(
            control_plane.server + REG_PATH,
            token,
            str(Path(control_plane.directory) / "pki" / "ca.crt"),
            seconds,
        )
        c_open = vegeta.attack(hello_url, seconds=seconds, rate=rate)

        print()
        print(
            f"svcreg discovery load: {args.registrations} registrations, {os.cpu_count()} CPUs, "
            f"load from separate processes on loopback, {seconds:.0f}s per run, "
            f"closed loop: median of {args.rounds} interleaved rounds"
        )
        print(
            f"  {'':56} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}"
            f" {'server CPU':>10} {'CPU us/req':>10}"
        )
        rows = [
            ("(a) svcreg capability lookup, 32 connections", a),
            (f"(a) svcreg capability lookup, open loop {rate:.0f} req/s", a_open),
            ("(a') same, discovery-only replica, 32 connections", r),
            (f"(a') same, discovery-only replica, open loop {rate:.0f} req/s", r_open),
            ("(b) kube-apiserver LIST + client filter, 4 connections", b),
            ("(c) bare aiohttp hello-world, 32 connections", c),
            (f"(c) bare aiohttp hello-world, open loop {rate:.0f} req/s", c_open),
        ]
        for label, row in rows:
            cpu = f" {row['cpu_pct']:9.0f}% {row['cpu_us']:10.0f}" if "cpu_pct" in row else ""
            rps = f"{row['rps']:8.2f}" if row["rps"] < 10 else f"{row['rps']:8.0f}"  # (b) is below 1
            print(
                f"  {label:56} {rps} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
                f"{row.get('max_ms', float('nan')):8.2f} {row['errors']:7d}{cpu}"
            )
        print(
            f"  ratio a/b (req/s) {a['rps'] / b['rps']:.0f}   ratio a/c (req/s) {a['rps'] / c['rps']:.2f}   "
            f"ratio a'/c (req/s) {r['rps'] / c['rps']:.2f}"
        )
        for label, key in (("(a)", "a"), ("(a')", "r"), ("(c)", "c")):
            rounds = ", ".join(f"{row['rps']:.0f} ({row['cpu_pct']:.0f}% CPU)" for row in closed[key])
            print(f"  {label} closed-loop rounds, req/s: {rounds}")
        print(
            f"  at rest (10 s, no reads): operator {at_rest[0]:.1f}% of a core, replica {at_rest[1]:.1f}%; "
            f"peak RSS operator {peak_rss_mib(operator.pid):.0f} MiB, "
            f"replica {peak_rss_mib(replica.pid):.0f} MiB"
        )
        print("  svcreg's /metrics over the open-loop runs (histogram bucket bounds, so upper estimates):")
        for label, seen in (("(a) operator", a_server), ("(a') replica", r_server)):
            print(
                f"    {label:14} request p99 <= {seen['p99_le_ms']:g} ms, "
                f"{seen['over_5ms']} answers over 5 ms, "
                f"longest loop lag <= {seen['lag_max_le_ms']:g} ms, "
                f"GC over 1 ms by generation {seen['gc_over_1ms']}"
            )
        return 0
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(60)
        hello.kill()
        replica.send_signal(signal.SIGTERM)
        replica.wait(60)
        asyncio.run(cleanup())


if __name__ == "__main__":
    sys.exit(main())
