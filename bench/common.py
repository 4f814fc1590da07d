"""What the benchmarks share: logging, reading an operator's /metrics, waiting, starting it."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def metrics(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    parsed: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text.splitlines():
        match = re.match(r"^([a-zA-Z_:]+)(?:\{([^}]*)\})? (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            parsed.setdefault(match.group(1), []).append((labels, float(match.group(3))))
    return parsed


def total(sample: dict[str, list[tuple[dict[str, str], float]]], name: str, **want: str) -> float:
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


def start_operator(env: dict[str, str], log_file: Path, *args: str) -> subprocess.Popen[bytes]:
    """``svcreg run`` as its own process, so its CPU and memory can be measured apart."""
    return subprocess.Popen(
        [sys.executable, "-m", "svcreg.cli", "run", *args],
        env=env,
        stdout=log_file.open("wb"),
        stderr=subprocess.STDOUT,
    )
