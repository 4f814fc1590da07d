"""Load runs with vegeta, a Go load generator built from Go modules.

Throughput (closed loop) and latency at a fixed request rate (open loop) are measured by
vegeta rather than by the Python load generator: a Python client at 1,000 requests/s has its
own event-loop and garbage-collection stalls, and they show up as the server's tail (the
bare hello-world's own p99 ranged from 2.8 to 16.7 ms with it). vegeta sends at a constant
rate whatever the answers, starts more workers when answers are slow (so a slow server is
not hidden by a waiting client), and reports exact percentiles.

vegeta is confined to one core (CPU 0, GOMAXPROCS=1) on a machine with more than one: left
free, its goroutines run on whichever core the server under test is on, and every answer the
server sends then costs it a context switch to the client (on two cores that cost a third of
svcreg's and a fifth of the hello-world's throughput, unevenly). One core is enough to drive
either server to 100% of its own core, which the benchmark shows by the server's CPU time.

It is built once from the pinned module in ``bench/gomod/vegeta``
into svcreg's binary cache, through the same code that builds the control plane.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from svcreg.devtools.controlplane import build

VEGETA = build.Component(
    name="vegeta",
    version="v12.12.0",
    packages=("github.com/tsenart/vegeta/v12",),
    binaries=("vegeta",),
    ldflags=("-s", "-w"),
    module_root=Path(__file__).parent / "gomod",
)


def _confine() -> None:
    """Runs in the child before exec: the load generator gets CPU 0 only."""
    os.sched_setaffinity(0, {0})


def binary() -> Path:
    return build.build_component(VEGETA) / "vegeta"


def attack(
    url: str,
    *,
    seconds: float,
    rate: float | None = None,
    connections: int = 32,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """GET ``url`` for ``seconds`` and return the figures the benchmark prints.

    With ``rate``, open loop: requests start at that rate whatever the answers, each timed from
    its scheduled start. Without it, closed loop: ``connections`` workers send back to back,
    which measures the most the server answers per second.
    """
    vegeta = str(binary())
    target = f"GET {url}\n" + (f"Authorization: Bearer {token}\n" if token else "")
    target += "".join(f"{name}: {value}\n" for name, value in (headers or {}).items())
    pacing = (
        [f"-rate={rate:.0f}/s"]
        if rate is not None
        else ["-rate=0", f"-workers={connections}", f"-max-workers={connections}"]
    )
    with tempfile.TemporaryDirectory(prefix="svcreg-vegeta-") as directory:
        results = Path(directory) / "results.bin"
        confined = (os.cpu_count() or 1) > 1
        subprocess.run(
            [vegeta, "attack", *pacing, f"-duration={seconds:.0f}s", "-timeout=30s", f"-output={results}"],
            input=target.encode(),
            check=True,
            timeout=seconds + 120,
            env={**os.environ, "GOMAXPROCS": "1"} if confined else None,
            preexec_fn=_confine if confined else None,
        )
        answer = subprocess.run(
            [vegeta, "report", "-type=json", str(results)], capture_output=True, check=True, timeout=120
        )
    report = json.loads(answer.stdout)
    latencies = report["latencies"]
    requests = int(report["requests"])
    ok = int(report.get("status_codes", {}).get("200", 0))
    return {
        "requests": requests,
        "errors": requests - ok,
        "seconds": report["duration"] / 1e9,
        "rps": report["throughput"],  # successful answers per second
        "p50_ms": latencies["50th"] / 1e6,
        "p99_ms": latencies["99th"] / 1e6,
        "max_ms": latencies["max"] / 1e6,
        "bytes": report.get("bytes_in", {}).get("mean", 0.0),  # mean answer body size
    }
