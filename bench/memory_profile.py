"""Where the operator's memory goes: N registrations probed by ``svcreg run`` in this process,
under tracemalloc.

    .venv/bin/python -m bench.memory_profile [--registrations 10000] [--settle 30] [--top 25]

Starts (or reuses) the local control plane, creates N registrations over local targets
(bench/target_server.py, as probe_scale does), runs the operator here with tracemalloc on (one
frame per allocation, so the overhead stays small), waits until every registration is Healthy in
its own metrics and --settle seconds more, then prints RSS, what tracemalloc traces, and the
allocation sites holding the most memory, grouped by line and by file. Figures from a run under
tracemalloc are for finding the big holders, not for the documented RSS (probe_scale measures that
without it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import time
import tracemalloc

import httpx

from bench.common import free_port, log, metrics, rss_mib, total
from bench.probe_scale import NAMESPACE, cleanup, setup
from svcreg.devtools import kubectl as kube
from svcreg.devtools.controlplane import cluster, progress


async def profile(registrations: int, settle: float, top: int, frames: int) -> None:
    from svcreg.main import run  # noqa: PLC0415 - imported after tracemalloc starts
    from svcreg.settings import Settings  # noqa: PLC0415

    port = free_port()
    settings = Settings(
        namespace=(NAMESPACE,), probe_allow=("127.0.0.0/8",), standalone=True, port=port, rate_limit=0
    )
    operator = asyncio.create_task(run(settings))
    started = time.monotonic()

    def healthy() -> float:
        try:
            return total(metrics(port), "svcreg_registrations", health="Healthy")
        except httpx.HTTPError:
            return 0.0

    while await asyncio.to_thread(healthy) < registrations:
        if operator.done():
            operator.result()
        if time.monotonic() - started > 900:
            raise RuntimeError("timed out waiting for every registration to be Healthy")
        await asyncio.sleep(2)
    log(f"{registrations} Healthy after {time.monotonic() - started:.0f}s; settling {settle:.0f}s")
    await asyncio.sleep(settle)
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>"))
    )
    traced, peak = tracemalloc.get_traced_memory()
    print(f"RSS {rss_mib(os.getpid()):.0f} MiB; traced {traced / 2**20:.0f} MiB (peak {peak / 2**20:.0f})")
    for group in ("lineno", "filename"):
        print(f"\nlargest holders by {group}:")
        for stat in snapshot.statistics(group)[:top]:
            frame = stat.traceback[0]
            where = frame.filename.split("site-packages/")[-1].split("operator/")[-1]
            line = f":{frame.lineno}" if group == "lineno" else ""
            print(f"  {stat.size / 2**20:7.1f} MiB {stat.count:>9} blocks  {where}{line}")
    if frames > 1:
        print("\nthe five largest holders, with who allocated them:")
        for stat in snapshot.statistics("traceback")[:5]:
            print(f"  {stat.size / 2**20:7.1f} MiB {stat.count:>9} blocks")
            for frame in stat.traceback.format(most_recent_first=True)[: frames * 2]:
                print(f"      {frame}")
    operator.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await operator


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registrations", type=int, default=10_000)
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--ports", type=int, default=20)
    parser.add_argument(
        "--frames", type=int, default=1, help="stack frames kept per allocation (over 1: tracebacks too)"
    )
    args = parser.parse_args()
    control_plane = cluster.up(report=progress.stderr_reporter)
    os.environ["KUBECONFIG"] = control_plane.kubeconfig
    # The Kubernetes client read KUBECONFIG when it was imported (before the cluster was up).
    from kubernetes.config import kube_config  # noqa: PLC0415

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = control_plane.kubeconfig
    kube.install_crd(control_plane.env())
    targets = subprocess.Popen(
        [sys.executable, "-m", "bench.target_server", str(args.ports), "0"], stdout=subprocess.PIPE, text=True
    )
    victim = subprocess.Popen(
        [sys.executable, "-m", "bench.target_server", "1"], stdout=subprocess.PIPE, text=True
    )
    assert targets.stdout is not None and victim.stdout is not None
    ports = [int(p) for p in targets.stdout.readline().split()]
    victim_port = int(victim.stdout.readline())
    try:
        asyncio.run(cleanup())
        asyncio.run(setup(args.registrations, ports, victim_port, 10))
        tracemalloc.start(args.frames)
        asyncio.run(profile(args.registrations + 1, args.settle, args.top, args.frames))
    finally:
        tracemalloc.stop()
        targets.terminate()
        victim.terminate()
        asyncio.run(cleanup())
    return 0


if __name__ == "__main__":
    sys.exit(main())
