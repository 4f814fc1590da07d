"""svcreg beside Eureka, in one run on this machine: lookups per core, latency at a fixed rate,
change propagation, failure detection and memory.

    .venv/bin/python -m bench.peers [--instances 10000] [--seconds 15] [--rounds 3] [--quick]

The same catalog in both: ``--instances`` instances in 1,000 services of 10 (svcreg:
``type: none`` registrations in one namespace; Eureka: applications APP-0..APP-999 registered
through its REST API with leases that outlast the run, so neither side spends CPU on health in
the lookup rows). The same load generator: vegeta, pinned to CPU 0 with GOMAXPROCS=1. Each server
under test runs pinned to CPU 1 (``taskset``), so "per core" is its own core; the API server and
etcd float. Eureka is warmed with ``--warm`` seconds of closed-loop load before any figure is
taken (a cold JVM answers at a sixth of its steady rate).

Rows:
  lookups/s per core  closed loop, 32 connections, the median of --rounds interleaved rounds:
                      answers per second over the server's own CPU-seconds per second.
                      svcreg: GET /v1/services?service=svc-7 with a ServiceAccount token;
                      Eureka: GET /eureka/apps/APP-7 with Accept: application/json.
                      Also measured, as the same-run anchor of svcreg's front: a replica with
                      --no-fast-lookups (every request through aiohttp), printed under the table.
  p50 / p99           open loop at --rate (1,000/s), from each request's scheduled start.
  change propagation  100 new instances, one every 300 ms: from the create call returning to
                      the instance being served to a consumer that follows changes as each
                      system's documentation recommends: svcreg's /v1/watch (SSE); for Eureka
                      a poll of GET /eureka/apps/{APP} every 100 ms (its Java client polls every
                      30 s, registryFetchIntervalSeconds, which adds up to 30 s more; the figure
                      is the server's share only, which favours Eureka).
  failure detection   the instance's process dies (its target killed; for Eureka its renewals
                      stop) until it is no longer served, at default settings and at the fastest
                      each documentation allows. svcreg default: intervalSeconds 10,
                      failureThreshold 3; fastest: 1 and 1 (timeout 0.5 s). Eureka default: renew
                      every 30 s, lease 90 s, eviction every 60 s, response cache 30 s,
                      self-preservation on; fastest: renew 1 s, lease 2 s, eviction every 1 s,
                      no read-only cache, self-preservation off. Eureka's default case needs 10
                      renewing instances of which one dies (self-preservation stops all eviction
                      when most leases lapse) and a minute of renewals first; it takes minutes,
                      so --quick leaves it out.
  RSS                 resident memory with the catalog loaded, after the load rows.
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
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench import vegeta
from bench.common import (
    cpu_seconds,
    create_all,
    free_port,
    log,
    metrics,
    reader_namespace,
    reader_token,
    rss_mib,
    total,
    wait,
)
from bench.peers import eureka as eureka_peer
from svcreg.devtools import kubectl as kube
from svcreg.devtools.controlplane import cluster, progress
from svcreg.kube.api import KubeApi

NAMESPACE = "svcreg-peers"
REG_PATH = f"/apis/svcreg.io/v1alpha1/namespaces/{NAMESPACE}/serviceregistrations"
SERVICES = 1000
CHANGES = 100
CHANGE_SPACING = 0.3
SERVER_CPU = 1
FAILURE_DEADLINE = 600  # seconds a dead Eureka instance is watched for before giving up


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def registration(
    name: str, service: str, check: dict[str, Any] | None = None, endpoint: str = ""
) -> dict[str, Any]:
    return {
        "apiVersion": "svcreg.io/v1alpha1",
        "kind": "ServiceRegistration",
        "metadata": {"name": name},
        "spec": {
            "service": service,
            "version": "1.0.0",
            "endpoint": endpoint or f"http://{service}.{NAMESPACE}.svc:8080",
            "healthCheck": check or {"type": "none", "intervalSeconds": 60},
        },
    }


async def setup_svcreg(count: int) -> str:
    """The namespace, a reader ServiceAccount bound by a Role, the catalog; returns its token."""
    api = KubeApi()
    try:
        await reader_namespace(api, NAMESPACE, REG_PATH)
        started = time.monotonic()
        bodies = (registration(f"r{i:05d}", f"svc-{i % SERVICES}") for i in range(count))
        await create_all(api, REG_PATH, bodies)
        log(f"svcreg: created {count} registrations in {time.monotonic() - started:.0f}s")
        return await reader_token(api, NAMESPACE)
    finally:
        await api.close()


def load_eureka(server: eureka_peer.Eureka, count: int) -> None:
    started = time.monotonic()
    lease = (30, 10**7)  # outlasts the run: the catalog costs no renewals, as type: none costs no probes
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: server.register(
                    f"app-{i % SERVICES}", f"i-{i:05d}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", lease
                ),
                range(count),
            )
        )
    log(f"eureka: registered {count} instances in {time.monotonic() - started:.0f}s")


def start_svcreg(env: dict[str, str], log_file: Path, *args: str) -> subprocess.Popen[bytes]:
    """``svcreg run`` pinned to the server core; the per-identity rate limit is off (one bench
    token stands for many callers)."""
    return subprocess.Popen(
        [
            "taskset",
            "-c",
            str(SERVER_CPU),
            sys.executable,
            "-m",
            "svcreg.cli",
            "run",
            "--rate-limit",
            "0",
            *args,
        ],
        env=env,
        stdout=log_file.open("wb"),
        stderr=subprocess.STDOUT,
    )


def closed_loop(url: str, pid: int, seconds: float, **options: Any) -> dict[str, Any]:
    started = cpu_seconds(pid)
    row = vegeta.attack(url, seconds=seconds, **options)
    used = cpu_seconds(pid) - started
    row["cores"] = used / row["seconds"]
    row["per_core"] = row["rps"] / max(row["cores"], 1e-9)
    row["cpu_us"] = used / max(row["requests"], 1) * 1e6
    return row


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(rounds, key=lambda row: row["per_core"])[(len(rounds) - 1) // 2]


# --- change propagation ----------------------------------------------------------------------------


@contextmanager
def svcreg_watch(
    url: str, token: str, params: dict[str, str], on_event: Callable[[str, dict[str, Any]], None]
) -> Iterator[None]:
    """Follow /v1/watch in a thread, calling ``on_event(kind, registration)`` for each event."""
    stop = threading.Event()
    ready = threading.Event()

    def follow() -> None:
        with httpx.stream(
            "GET",
            url + "/v1/watch",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=None,
        ) as stream:
            ready.set()
            kind = ""
            for line in stream.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event.get("registration"):
                        on_event(kind, event["registration"])

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    ready.wait(30)
    try:
        yield
    finally:
        stop.set()


def svcreg_propagation(url: str, token: str) -> list[float]:
    seen: dict[str, float] = {}
    created: dict[str, float] = {}

    def on_event(kind: str, item: dict[str, Any]) -> None:
        if kind != "deleted" and item["health"] == "Healthy":
            seen.setdefault(item["name"], time.monotonic())

    async def create() -> None:
        api = KubeApi()
        try:
            for i in range(CHANGES):
                name = f"p{i:03d}"
                answer = await api.request("POST", REG_PATH, json=registration(name, "prop"))
                if answer.status_code != 201:
                    raise RuntimeError(f"create {name}: HTTP {answer.status_code} {answer.text[:200]}")
                created[name] = time.monotonic()
                await asyncio.sleep(CHANGE_SPACING)  # pacing the changes, not waiting for one
        finally:
            await api.close()

    with svcreg_watch(url, token, {"service": "prop", "health": "Healthy"}, on_event):
        asyncio.run(create())
        deadline = time.monotonic() + 60
        while len(seen) < CHANGES and time.monotonic() < deadline:
            time.sleep(0.1)
    return [seen[n] - created[n] for n in created if n in seen]


def eureka_propagation(server: eureka_peer.Eureka) -> list[float]:
    seen: dict[str, float] = {}
    created: dict[str, float] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            now_seen = server.instance_ids("prop")
            now = time.monotonic()
            for name in now_seen:
                seen.setdefault(name, now)
            time.sleep(0.1)  # the consumer's poll interval

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    for i in range(CHANGES):
        name = f"p{i:03d}"
        server.register("prop", name, f"10.200.0.{i}", (30, 10**7))
        created[name] = time.monotonic()
        time.sleep(CHANGE_SPACING)
    deadline = time.monotonic() + 120
    while len(seen) < CHANGES and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    return [seen[n] - created[n] for n in created if n in seen]


# --- failure detection ------------------------------------------------------------------------------


def svcreg_failure(url: str, token: str, check: dict[str, Any], label: str, count: int = 5) -> list[float]:
    """``count`` registrations probing one target process; kill it; how long each stays served."""
    target = subprocess.Popen(
        [sys.executable, "-m", "bench.target_server", str(count)], stdout=subprocess.PIPE, text=True
    )
    assert target.stdout is not None
    ports = target.stdout.readline().split()
    service = f"fail-{label}"
    names = [f"f-{label}-{n}" for n in range(count)]
    gone: dict[str, float] = {}

    async def create() -> None:
        api = KubeApi()
        try:
            for name, port in zip(names, ports, strict=True):
                body = registration(name, service, check, f"http://127.0.0.1:{port}")
                answer = await api.request("POST", REG_PATH, json=body)
                if answer.status_code != 201:
                    raise RuntimeError(f"create {name}: HTTP {answer.status_code} {answer.text[:200]}")
        finally:
            await api.close()

    asyncio.run(create())
    headers = {"Authorization": f"Bearer {token}"}

    def served() -> set[str]:
        answer = httpx.get(url + "/v1/services", params={"service": service}, headers=headers, timeout=30)
        return {i["name"] for i in answer.json()["items"]}

    deadline = time.monotonic() + 120
    while served() != set(names):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{service}: not all Healthy in 120 s")
        time.sleep(0.2)

    def on_event(kind: str, item: dict[str, Any]) -> None:
        if kind == "deleted" or item["health"] != "Healthy":
            gone.setdefault(item["name"], time.monotonic())

    with svcreg_watch(url, token, {"service": service, "health": "Healthy"}, on_event):
        target.kill()
        killed = time.monotonic()
        deadline = killed + 300
        while len(gone) < count and time.monotonic() < deadline:
            time.sleep(0.1)
    target.wait()
    return [gone[n] - killed for n in names if n in gone]


def eureka_failure(log_file: Path, fastest: bool, instances: int = 10, die: int = 1) -> list[float]:
    """A fresh server with ``instances`` renewing; ``die`` of them stop renewing; how long each
    stays served. With Eureka's defaults a minute of renewals comes first: self-preservation
    holds every lease until the server has seen a full minute of the expected renewals."""
    server = eureka_peer.Eureka(log_file, *(eureka_peer.FASTEST if fastest else ()))
    lease = eureka_peer.FASTEST_LEASE if fastest else eureka_peer.DEFAULT_LEASE
    alive = {f"f-{n}" for n in range(instances)}
    stop = threading.Event()
    try:
        for name in sorted(alive):
            server.register("fail", name, f"10.250.0.{len(name)}", lease)

        def renew() -> None:
            while not stop.is_set():
                for name in list(alive):
                    server.renew("fail", name)
                stop.wait(lease[0])

        renewer = threading.Thread(target=renew, daemon=True)
        renewer.start()
        if not fastest:
            log("eureka (defaults): two minutes of renewals first, so self-preservation allows eviction")
            time.sleep(125)  # Eureka's own renewal-rate window, not a wait for a condition
        dead = sorted(alive)[:die]
        alive.difference_update(dead)
        killed = time.monotonic()
        gone: dict[str, float] = {}
        deadline = killed + FAILURE_DEADLINE
        while len(gone) < die and time.monotonic() < deadline:
            served = server.instance_ids("fail")
            for name in dead:
                if name not in served:
                    gone.setdefault(name, time.monotonic() - killed)
            time.sleep(0.1 if fastest else 1.0)
        return list(gone.values())
    finally:
        stop.set()
        server.stop()


# --- the run -------------------------------------------------------------------------------------------


def fmt(values: list[float], digits: int = 2) -> str:
    if not values:
        return "not seen"
    return f"{percentile(values, 0.5):.{digits}f} / {percentile(values, 0.99):.{digits}f} s (n={len(values)})"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--warm", type=float, default=30, help="seconds of closed-loop load warming Eureka")
    parser.add_argument(
        "--quick", action="store_true", help="leave out Eureka's default-settings failure row"
    )
    args = parser.parse_args()

    vegeta.binary()
    eureka_peer.jar()
    control_plane = cluster.up(report=progress.stderr_reporter)
    env = control_plane.env()
    os.environ["KUBECONFIG"] = control_plane.kubeconfig
    kube.install_crd(env)
    token = asyncio.run(setup_svcreg(args.instances))
    logs = Path(tempfile.mkdtemp(prefix="svcreg-peers-"))
    port, replica_port, anchor_port = free_port(), free_port(), free_port()
    common = ("--namespace", NAMESPACE, "--probe-allow", "127.0.0.0/8")
    operator = start_svcreg(env, logs / "operator.log", "--standalone", "--port", str(port), *common)
    replica = start_svcreg(
        env, logs / "replica.log", "--discovery-only", "--port", str(replica_port), *common
    )
    # The same-run anchor for svcreg's front: a replica that serves every request through aiohttp.
    anchor = start_svcreg(
        env,
        logs / "replica-no-front.log",
        "--discovery-only",
        "--no-fast-lookups",
        "--port",
        str(anchor_port),
        *common,
    )
    server = eureka_peer.Eureka(logs / "eureka.log")
    try:
        load_eureka(server, args.instances)

        def all_healthy() -> bool:
            try:
                return bool(total(metrics(port), "svcreg_registrations", health="Healthy") >= args.instances)
            except httpx.HTTPError:
                return False

        took = wait(all_healthy, "every registration Healthy", 900, operator)
        log(f"svcreg: all {args.instances} Healthy {took:.0f}s after start; logs in {logs}")
        svcreg_url, replica_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{replica_port}"
        anchor_url = f"http://127.0.0.1:{anchor_port}"
        reader = {"Authorization": f"Bearer {token}"}

        def serves_svc7(url: str) -> bool:
            answer = httpx.get(url + "/v1/services", params={"service": "svc-7"}, headers=reader, timeout=30)
            return answer.status_code == 200 and len(answer.json()["items"]) >= args.instances // SERVICES

        for url in (svcreg_url, replica_url, anchor_url):
            wait(lambda url=url: serves_svc7(url), f"{url} to serve svc-7", 300, operator)
        lookups: dict[str, tuple[str, int, dict[str, Any]]] = {
            "operator": (svcreg_url + "/v1/services?service=svc-7", operator.pid, {"token": token}),
            "replica": (replica_url + "/v1/services?service=svc-7", replica.pid, {"token": token}),
            "eureka": (server.lookup_url("app-7"), server.pid, {"headers": {"Accept": "application/json"}}),
            "replica without the front": (
                anchor_url + "/v1/services?service=svc-7",
                anchor.pid,
                {"token": token},
            ),
        }
        log(f"eureka: warming for {args.warm:.0f}s")
        vegeta.attack(lookups["eureka"][0], seconds=args.warm, headers={"Accept": "application/json"})
        closed: dict[str, list[dict[str, Any]]] = {k: [] for k in lookups}
        for _ in range(args.rounds):
            for key, (url, pid, options) in lookups.items():
                closed[key].append(closed_loop(url, pid, args.seconds, **options))
        opened = {
            key: vegeta.attack(url, seconds=args.seconds, rate=args.rate, **options)
            for key, (url, pid, options) in lookups.items()
            if key in ("operator", "replica", "eureka")
        }
        rss = {
            "operator": rss_mib(operator.pid),
            "replica": rss_mib(replica.pid),
            "eureka": rss_mib(server.pid),
        }
        log("change propagation: 100 new instances in each")
        propagation = {
            "operator": svcreg_propagation(svcreg_url, token),
            "eureka": eureka_propagation(server),
        }
        server.stop()
        log("failure detection")
        fast_check = {"type": "http", "intervalSeconds": 1, "failureThreshold": 1, "timeoutSeconds": 0.5}
        failure = {
            "svcreg default": svcreg_failure(svcreg_url, token, {"type": "http"}, "default"),
            "svcreg fastest": svcreg_failure(svcreg_url, token, fast_check, "fast"),
            "eureka fastest": eureka_failure(logs / "eureka-fast.log", fastest=True, die=3),
        }
        if not args.quick:
            failure["eureka default"] = eureka_failure(logs / "eureka-default.log", fastest=False)

        rows = {k: median_round(v) for k, v in closed.items()}
        keys = ("operator", "replica", "eureka")
        if args.quick:
            eureka_default = "left out (--quick)"
        elif failure.get("eureka default"):
            eureka_default = fmt(failure["eureka default"])
        else:
            # A standalone server's self-preservation: with no peers its renewal threshold starts
            # at 0, which disables lease expiry until the 15-minute threshold update.
            eureka_default = f"still served after {FAILURE_DEADLINE} s (self-preservation)"
        table = [
            ("figure", "svcreg (operator)", "svcreg (replica)", "Eureka"),
            ("---", "---", "---", "---"),
            (
                f"lookups/s per core, one service of {args.instances // SERVICES} among {args.instances}",
                *(f"{rows[k]['per_core']:.0f}" for k in keys),
            ),
            (
                "  lookups/s; cores used; CPU us per lookup; answer bytes",
                *(
                    f"{r['rps']:.0f}; {r['cores']:.2f}; {r['cpu_us']:.0f}; {r['bytes']:.0f}"
                    for r in (rows[k] for k in keys)
                ),
            ),
            (
                f"p50 / p99 at {args.rate:.0f} lookups/s, open loop",
                *(f"{opened[k]['p50_ms']:.2f} / {opened[k]['p99_ms']:.2f} ms" for k in keys),
            ),
            (
                f"change propagation p50 / p99 over {CHANGES} new instances",
                fmt(propagation["operator"], 3),
                "(one index: as the operator)",
                fmt(propagation["eureka"]),
            ),
            (
                "failure detection p50 / p99, default settings",
                fmt(failure["svcreg default"]),
                "(as the operator)",
                eureka_default,
            ),
            (
                "failure detection p50 / p99, fastest settings",
                fmt(failure["svcreg fastest"]),
                "(as the operator)",
                fmt(failure["eureka fastest"]),
            ),
            (f"RSS with {args.instances} instances", *(f"{rss[k]:.0f} MiB" for k in keys)),
        ]
        print()
        print(
            f"svcreg beside Eureka, {time.strftime('%Y-%m-%d')}: {os.cpu_count()} CPUs, vegeta on CPU 0, "
            f"each server on CPU {SERVER_CPU}; closed loop: median of {args.rounds} interleaved rounds "
            f"of {args.seconds:.0f}s, 32 connections"
        )
        for cells in table:
            print("| " + " | ".join(cells) + " |")
        per_core = {k: rows[k]["per_core"] for k in keys}
        print(
            f"ratios: lookups per core replica/Eureka {per_core['replica'] / per_core['eureka']:.2f}, "
            f"operator/Eureka {per_core['operator'] / per_core['eureka']:.2f}; propagation p99 svcreg/Eureka "
            f"{percentile(propagation['operator'], 0.99) / percentile(propagation['eureka'], 0.99):.4f}; "
            f"RSS replica/Eureka {rss['replica'] / rss['eureka']:.2f}, "
            f"operator/Eureka {rss['operator'] / rss['eureka']:.2f}"
        )
        for key, rounds in closed.items():
            print(f"{key} rounds, lookups/s per core: " + ", ".join(f"{r['per_core']:.0f}" for r in rounds))
        bare = rows["replica without the front"]
        print(
            "anchor: a replica with --no-fast-lookups (every request through aiohttp): "
            f"{bare['per_core']:.0f} lookups/s per core, {bare['cpu_us']:.0f} us per lookup; "
            f"the front's replica/anchor {per_core['replica'] / bare['per_core']:.2f}"
        )
        return 0
    finally:
        server.stop()
        for process in (operator, replica, anchor):
            process.send_signal(signal.SIGTERM)
            process.wait(60)


if __name__ == "__main__":
    sys.exit(main())
