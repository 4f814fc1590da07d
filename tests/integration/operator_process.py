"""``svcreg run`` as a real subprocess against the test control plane."""

from __future__ import annotations

import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from svcreg.devtools.controlplane.cluster import Cluster
from tests.targets import free_port


class OperatorProcess:
    def __init__(
        self,
        cluster: Cluster,
        log: Path,
        *args: str,
        env: dict[str, str] | None = None,
        standalone: bool = True,
        tls_ca: Path | None = None,
    ) -> None:
        self.port = free_port()
        # Served over HTTPS (--tls-cert-file in args): readiness is asked trusting ``tls_ca``.
        self.url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{self.port}"
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else True
        )
        self.log = log
        self.args = ["--port", str(self.port), *(["--standalone"] if standalone else []), *args]
        self.env = env or cluster.env()
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> OperatorProcess:
        """Start the process without waiting for it to serve (it may be meant to fail)."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "svcreg.cli", "run", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def start(self) -> OperatorProcess:
        self.launch()
        self.wait_until(lambda: self.ready() is not None, "the operator to serve /readyz")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def ready(self) -> dict[str, object] | None:
        try:
            answer = httpx.get(f"{self.url}/readyz", timeout=2, verify=self.verify)
        except httpx.HTTPError:
            return None
        body: dict[str, object] = answer.json()
        body["httpStatus"] = answer.status_code
        return body

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
            if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
                total += float(match.group(2))
        return total

    def probes(self) -> float:
        return self.metric("svcreg_probes_total")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until(self, condition: object, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"operator exited ({self.process.returncode}) waiting for {what}:\n"
                    + self.log_text()[-3000:]
                )
            if condition():  # type: ignore[operator]
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; operator log:\n{self.log_text()[-3000:]}"
                )
            time.sleep(0.1)
