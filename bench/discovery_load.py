"""Discovery load: capability lookups through svcreg against the alternatives.

    .venv/bin/python -m bench.discovery_load [--registrations 10000] [--seconds 15]

Creates N registrations (capabilities cap-0..cap-999, so a lookup answers about N/1000
instances; ``type: none`` checks, so no probe targets are needed), runs ``svcreg run`` as a
subprocess, waits until all are Healthy in its index, then drives load from a separate
process (bench/loadgen.py, aiohttp) on loopback:

  (a) GET /v1/capabilities/cap-7 through svcreg, with a ServiceAccount token (reviews cached);
  (b) what a user does without svcreg: LIST every registration from kube-apiserver with the
      same token and filter by capability in the client;
  (c) a bare aiohttp hello-world on the same machine.

(a) is measured on the operator process (prober and Kopf share its event loop) and, as (a'),
on a ``--discovery-only`` replica, which is how reads are meant to scale.

Closed-loop runs (fixed concurrency) give requests/s; an open-loop run at --rate (default
1,000 req/s) gives p50/p99 latency measured from each request's scheduled start. The load
generator shares the machine's cores with the server, so (c) is bounded by it too.
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

from bench.common import create_all, free_port, log, metrics, start_operator, total, wait
from svcreg import kube
from svcreg.controlplane import cluster, progress
from svcreg.kubeapi import KubeApi

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
        await api.request("POST", "/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
        await api.request("DELETE", REG_PATH, deadline_seconds=600)
        await api.request(
            "POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts", json={"metadata": {"name": "reader"}}
        )
        rule = {
            "apiGroups": ["svcreg.io"],
            "resources": ["serviceregistrations"],
            "verbs": ["get", "list", "watch"],
        }
        await api.request(
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/roles",
            json={"metadata": {"name": "reader"}, "rules": [rule]},
        )
        await api.request(
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/rolebindings",
            json={
                "metadata": {"name": "reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": NAMESPACE}],
            },
        )
        started = time.monotonic()
        await create_all(api, REG_PATH, (_registration(i) for i in range(count)))
        log(f"created {count} registrations in {time.monotonic() - started:.0f}s")
        answer = await api.request(
            "POST",
            f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/reader/token",
            json={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 7200},
            },
        )
        token: str = answer.json()["status"]["token"]
        return token
    finally:
        await api.close()


async def cleanup() -> None:
    api = KubeApi()
    try:
        await api.request("DELETE", REG_PATH, deadline_seconds=600)
    finally:
        await api.close()


def load(url: str, *args: str) -> dict[str, Any]:
    answer = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", url, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(answer.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registrations", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=float, default=1000)
    args = parser.parse_args()

    control_plane = cluster.up(report=progress.stderr_reporter)
    env = control_plane.env()
    os.environ["KUBECONFIG"] = control_plane.kubeconfig
    kube.install_crd(env)
    token = asyncio.run(setup(args.registrations))

    port, hello_port = free_port(), free_port()
    log_file = Path(tempfile.mkdtemp(prefix="svcreg-load-")) / "operator.log"
    operator = start_operator(env, log_file, "--standalone", "--port", str(port), "--namespace", NAMESPACE)
    hello = subprocess.Popen([sys.executable, "-m", "bench.hello_server", str(hello_port)])
    replica_port = free_port()
    replica = start_operator(
        env,
        log_file.parent / "replica.log",
        "--discovery-only",
        "--port",
        str(replica_port),
        "--namespace",
        NAMESPACE,
    )
    try:

        def all_healthy() -> bool:
            try:
                return total(metrics(port), "svcreg_registrations", health="Healthy") >= args.registrations
            except httpx.HTTPError:
                return False

        took = wait(all_healthy, "every registration to be Healthy", 900, operator)
        log(f"all {args.registrations} Healthy {took:.0f}s after the operator started; log {log_file}")
        wait(
            lambda: httpx.get(f"http://127.0.0.1:{hello_port}/").status_code == 200,
            "hello server",
            30,
            operator,
        )
        svcreg_url = f"http://127.0.0.1:{port}/v1/capabilities/cap-7"
        sample = httpx.get(svcreg_url, headers={"Authorization": f"Bearer {token}"}).json()
        log(f"(a) answers {sample['count']} instances of cap-7")
        seconds = str(args.seconds)
        a = load(svcreg_url, "--token", token, "--concurrency", "32", "--seconds", seconds)
        a_open = load(
            svcreg_url, "--token", token, "--mode", "open", "--rate", str(args.rate), "--seconds", seconds
        )
        b = load(
            control_plane.server + REG_PATH,
            "--token",
            token,
            "--concurrency",
            "4",
            "--seconds",
            seconds,
            "--ca",
            str(Path(control_plane.directory) / "pki" / "ca.crt"),
            "--filter-capability",
            "cap-7",
        )
        replica_url = f"http://127.0.0.1:{replica_port}/v1/capabilities/cap-7"
        wait(
            lambda: httpx.get(replica_url, headers={"Authorization": f"Bearer {token}"}).status_code == 200,
            "the discovery-only replica",
            120,
            operator,
        )
        time.sleep(10)  # its start-up state is frozen out of GC 5 s after its first list
        r = load(replica_url, "--token", token, "--concurrency", "32", "--seconds", seconds)
        r_open = load(
            replica_url, "--token", token, "--mode", "open", "--rate", str(args.rate), "--seconds", seconds
        )
        c = load(f"http://127.0.0.1:{hello_port}/", "--concurrency", "32", "--seconds", seconds)
        c_open = load(
            f"http://127.0.0.1:{hello_port}/",
            "--mode",
            "open",
            "--rate",
            str(args.rate),
            "--seconds",
            seconds,
        )

        print()
        print(
            f"svcreg discovery load: {args.registrations} registrations, {os.cpu_count()} CPUs, "
            f"load from a separate process on loopback, {args.seconds:.0f}s per run"
        )
        print(f"  {'':54} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        rows = [
            ("(a) svcreg capability lookup, 32 connections", a),
            (f"(a) svcreg capability lookup, open loop {args.rate:.0f} req/s", a_open),
            ("(a') same, discovery-only replica, 32 connections", r),
            (f"(a') same, discovery-only replica, open loop {args.rate:.0f} req/s", r_open),
            ("(b) kube-apiserver LIST + client filter, 4 connections", b),
            ("(c) bare aiohttp hello-world, 32 connections", c),
            (f"(c) bare aiohttp hello-world, open loop {args.rate:.0f} req/s", c_open),
        ]
        for label, row in rows:
            print(
                f"  {label:54} {row['rps']:9.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {row['errors']:7d}"
            )
        print(
            f"  ratio a/b (req/s) {a['rps'] / b['rps']:.0f}   ratio a/c (req/s) {a['rps'] / c['rps']:.2f}   "
            f"ratio a'/c (req/s) {r['rps'] / c['rps']:.2f}"
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
