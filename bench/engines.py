"""The probe engine's limits, measured on the same targets as svcreg in the same run.

- ``minimal``: svcreg's own HTTP probe (``ProbeRunner.run``, the same event loop and client),
  driven by one sleeping task per registration: no scheduler, no health state, no status
  logic. svcreg's probes per CPU-second over this one's is the share of the engine's limit
  that svcreg reaches (issue: at least 70%).
- ``go``: a minimal prober in Go (``bench/gomod/goprober``, net/http from the standard
  library, built from Go modules like vegeta), where a compiled prober stands.

Each runs in its own process for ``seconds`` and reports probes, passes and its own CPU time.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from svcreg.devtools.controlplane import build

GOPROBER = build.Component(
    name="goprober",
    version="v1",
    packages=("svcreg.io/bench/goprober",),
    binaries=("goprober",),
    ldflags=("-s", "-w"),
    module_root=Path(__file__).parent / "gomod",
)


def go_binary() -> Path:
    return build.build_component(GOPROBER) / "goprober"


def run_go(ports: list[int], count: int, interval: float, timeout: float, seconds: float) -> dict[str, Any]:
    command = [
        str(go_binary()),
        "-targets", ",".join(f"127.0.0.1:{p}" for p in ports),
        "-count", str(count), "-interval", f"{interval}s", "-timeout", f"{timeout}s",
        "-seconds", f"{seconds}s",
    ]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_minimal(
    ports: list[int], count: int, interval: float, timeout: float, seconds: float
) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "bench.engines", ",".join(map(str, ports)), str(count), str(interval),
        str(timeout), str(seconds),
    ]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def _minimal(
    ports: list[int], count: int, interval: float, probe_timeout: float, seconds: float
) -> dict[str, Any]:
    from svcreg.core.model import ServiceRegistrationSpec  # noqa: PLC0415
    from svcreg.operator.endpoints import EndpointCache  # noqa: PLC0415
    from svcreg.operator.probes.policy import ProbePolicy  # noqa: PLC0415
    from svcreg.operator.probes.runner import ProbeRunner  # noqa: PLC0415
    from svcreg.operator.probes.ttl import HeartbeatStore  # noqa: PLC0415
    from svcreg.operator.targets import plan  # noqa: PLC0415

    runner = ProbeRunner(ProbePolicy(("127.0.0.0/8",)), HeartbeatStore())
    endpoints = EndpointCache()
    targets = []
    for i in range(count):
        spec = ServiceRegistrationSpec.model_validate(
            {
                "endpoint": f"http://127.0.0.1:{ports[i % len(ports)]}",
                "healthCheck": {
                    "path": "/healthz",
                    "intervalSeconds": int(interval),
                    "timeoutSeconds": probe_timeout,
                },
            }
        )
        [target] = plan(spec, ("bench", f"r{i}"), endpoints, None).targets.values()
        targets.append(target)
    probes = passed = 0
    deadline = time.monotonic() + seconds

    async def loop(i: int) -> None:
        nonlocal probes, passed
        await asyncio.sleep(interval * i / count)
        while time.monotonic() < deadline:
            started = time.monotonic()
            outcome = await runner.run(targets[i])
            probes += 1
            passed += 1 if outcome is not None and outcome.passed else 0
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    tasks = [asyncio.create_task(loop(i)) for i in range(count)]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {
        "probes": probes,
        "passed": passed,
        "cpuSeconds": cpu,
        "maxRssKiB": cpu1.ru_maxrss,
        "seconds": seconds,
    }


if __name__ == "__main__":
    raw_ports, raw_count, raw_interval, raw_timeout, raw_seconds = sys.argv[1:6]
    print(
        json.dumps(
            asyncio.run(
                _minimal(
                    [int(p) for p in raw_ports.split(",")],
                    int(raw_count),
                    float(raw_interval),
                    float(raw_timeout),
                    float(raw_seconds),
                )
            )
        )
    )
