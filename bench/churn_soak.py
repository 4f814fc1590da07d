"""Churn soak: create, delete and flap registrations for a long time and watch what the operator
holds, to find leaks (memory, tasks, file descriptors) that no short test shows.

    .venv/bin/python -m bench.churn_soak [--minutes 30] [--steady 500] [--churn 5]

Runs ``svcreg run`` as a subprocess over --steady registrations probing local HTTP targets every
2 s (bench/target_server.py in its own process), while every second it creates --churn new
registrations and deletes the --churn oldest (churn), and moves --churn registrations' endpoints
between a live and a refused port (flaps: transitions, status writes and Events). 20 SSE
watchers and 20 long polls stay open, reconnecting when they end.

Every 30 s it samples the operator's RSS (``/proc/PID/status`` VmRSS), its open file descriptors
(``/proc/PID/fd``), its asyncio tasks (``svcreg_asyncio_tasks``) and the registrations it
tracks. It prints every sample, then compares the mean of the first and of the last fifth of the
run after a warm-up of one fifth: the anchor is the process itself at the start, so the
ratio (last / first) is what to read, and flat means within 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.common import cpu_seconds, free_port, log, metrics, rss_mib, start_operator, total, wait
from svcreg.devtools.controlplane import cluster, progress
from svcreg.kube.api import KubeApi

NAMESPACE = "svcreg-soak"
REG_PATH = f"/apis/svcreg.io/v1alpha1/namespaces/{NAMESPACE}/serviceregistrations"
SAMPLE_SECONDS = 30.0


def registration(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "svcreg.io/v1alpha1",
        "kind": "ServiceRegistration",
        "metadata": {"name": name},
        "spec": {
            "service": "soak",
            "endpoint": f"http://127.0.0.1:{port}",
            "capabilities": [f"soak-{int(name.rsplit('-', 1)[1]) % 20}"],
            "healthCheck": {"path": "/healthz", "intervalSeconds": 2, "timeoutSeconds": 1},
        },
    }


async def setup(api: KubeApi) -> str:
    await api.request("POST", "/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
    await api.request("DELETE", REG_PATH, deadline_seconds=600)
    await api.request(
        "POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts", json={"metadata": {"name": "reader"}}
    )
    await api.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        json={
            "metadata": {"name": "svcreg-soak-reader"},
            "rules": [
                {"apiGroups": ["svcreg.io"], "resources": ["serviceregistrations"], "verbs": ["list", "get"]}
            ],
        },
    )
    await api.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/" + NAMESPACE + "/rolebindings",
        json={
            "metadata": {"name": "soak-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "svcreg-soak-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": NAMESPACE}],
        },
    )
    answer = await api.call(
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/reader/token",
        json={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 86400},
        },
    )
    token: str = answer.json()["status"]["token"]
    return token


async def readers(base: str, token: str, stop: asyncio.Event) -> None:
    """20 watchers and 20 long polls, each reopened when it ends, until ``stop``."""
    headers = {"Authorization": f"Bearer {token}"}

    async def watch(n: int, session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                url = f"{base}/v1/watch?capability=soak-{n}"
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=120)) as response:
                    async for _ in response.content:
                        if stop.is_set():
                            return
            await asyncio.sleep(1)

    async def poll(n: int, session: aiohttp.ClientSession) -> None:
        index = 0
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                params = {"index": str(index), "wait": "20s"}
                async with session.get(f"{base}/v1/capabilities/soak-{n}", params=params) as response:
                    index = (await response.json())["index"]
            await asyncio.sleep(0.1)

    async with aiohttp.ClientSession(headers=headers) as session:
        tasks = [asyncio.create_task(watch(n, session)) for n in range(20)]
        tasks += [asyncio.create_task(poll(n, session)) for n in range(20)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def churn(
    args: argparse.Namespace, ports: list[int], dead: int, token: str, operator_port: int
) -> list[dict[str, float]]:
    api = KubeApi()
    samples: list[dict[str, float]] = []
    stop = asyncio.Event()
    reading = asyncio.create_task(readers(f"http://127.0.0.1:{operator_port}", token, stop))
    live: list[str] = [f"r-{n}" for n in range(args.steady)]
    counter = itertools.count(args.steady)
    flapped: dict[str, bool] = {}
    start = time.monotonic()
    next_sample = start
    try:
        while time.monotonic() - start < args.minutes * 60:
            tick = time.monotonic()
            writes = []
            for _ in range(args.churn):
                name = f"r-{next(counter)}"
                writes.append(
                    api.request("POST", REG_PATH, json=registration(name, ports[hash(name) % len(ports)]))
                )
                live.append(name)
                old = live.pop(0)
                flapped.pop(old, None)
                writes.append(api.request("DELETE", f"{REG_PATH}/{old}"))
            for name in live[: args.churn * 4 : 4]:
                down = not flapped.get(name, False)
                flapped[name] = down
                port = dead if down else ports[hash(name) % len(ports)]
                patch = {"spec": {"endpoint": f"http://127.0.0.1:{port}"}}
                writes.append(
                    api.request(
                        "PATCH", f"{REG_PATH}/{name}", json=patch, content_type="application/merge-patch+json"
                    )
                )
            await asyncio.gather(*writes, return_exceptions=True)
            if time.monotonic() >= next_sample:
                samples.append(sample(args.pid, operator_port, time.monotonic() - start))
                s = samples[-1]
                log(
                    f"{s['minute']:6.1f} min  RSS {s['rss']:6.1f} MiB  fds {s['fds']:4.0f}  "
                    f"tasks {s['tasks']:5.0f}  tracked {s['tracked']:5.0f}  cpu {s['cpu']:.0f} s"
                )
                next_sample += SAMPLE_SECONDS
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    finally:
        stop.set()
        await reading
        await api.close()
    return samples


def sample(pid: int, port: int, elapsed: float) -> dict[str, float]:
    scraped = metrics(port)
    return {
        "minute": elapsed / 60,
        "rss": rss_mib(pid),
        "fds": float(len(os.listdir(f"/proc/{pid}/fd"))),
        "tasks": total(scraped, "svcreg_asyncio_tasks"),
        "tracked": sum(
            total(scraped, "svcreg_registrations", health=h) for h in ("Healthy", "Unhealthy", "Unknown")
        ),
        "cpu": cpu_seconds(pid),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--steady", type=int, default=500)
    parser.add_argument("--churn", type=int, default=5, help="creates, deletes and flaps per second")
    args = parser.parse_args()
    control_plane = cluster.up(report=progress.stderr_reporter)
    env = {**os.environ, **control_plane.env()}
    os.environ.update(control_plane.env())
    targets = subprocess.Popen(
        [sys.executable, "-m", "bench.target_server", "20"], stdout=subprocess.PIPE, text=True
    )
    assert targets.stdout is not None
    ports = [int(p) for p in targets.stdout.readline().split()]
    dead = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="svcreg-soak-"))
    port = free_port()
    operator = None
    try:

        async def prepare() -> str:
            api = KubeApi()
            try:
                token = await setup(api)
                for n in range(args.steady):
                    await api.request(
                        "POST", REG_PATH, json=registration(f"r-{n}", ports[hash(f"r-{n}") % len(ports)])
                    )
                return token
            finally:
                await api.close()

        token = asyncio.run(prepare())
        operator = start_operator(
            env,
            workdir / "operator.log",
            "--standalone",
            "--port",
            str(port),
            "--namespace",
            NAMESPACE,
            "--probe-allow",
            "127.0.0.0/8",
        )

        def healthy() -> bool:
            try:
                return total(metrics(port), "svcreg_registrations", health="Healthy") >= args.steady
            except httpx.HTTPError:
                return False

        wait(healthy, "the steady registrations to be Healthy", 600, operator)
        args.pid = operator.pid
        samples = asyncio.run(churn(args, ports, dead, token, port))
        fifth = max(1, len(samples) // 5)
        first, last = samples[fifth : 2 * fifth], samples[-fifth:]
        print(
            f"churn soak: {args.minutes:g} min, {args.steady} registrations, "
            f"{args.churn} creates, deletes and flaps/s"
        )
        # Means, and floors: open files and tasks include whatever is in flight at the sample
        # (bursty); a leak raises the floor, a burst only the mean.
        print(
            "  figure   first fifth (after warm-up): mean, floor   "
            "last fifth: mean, floor   ratio of means, floors"
        )
        for key in ("rss", "fds", "tasks", "tracked"):
            a, b = sum(s[key] for s in first) / len(first), sum(s[key] for s in last) / len(last)
            fa, fb = min(s[key] for s in first), min(s[key] for s in last)
            print(
                f"  {key:8} {a:10.1f} {fa:8.1f}          {b:10.1f} {fb:8.1f}        "
                f"{b / a if a else float('nan'):6.3f} {fb / fa if fa else float('nan'):6.3f}"
            )
    finally:
        if operator is not None:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
        targets.kill()

        async def cleanup() -> None:
            api = KubeApi()
            try:
                await api.request("DELETE", REG_PATH, deadline_seconds=600)
            finally:
                await api.close()

        asyncio.run(cleanup())
        log(f"logs in {workdir}")


if __name__ == "__main__":
    main()
