"""The Eureka peer: built once from Maven Central, started pinned to one core, driven over REST.

The server is ``bench/peers/eureka`` (Spring Boot 3.5.7, Spring Cloud 2025.0.0, nothing but
``@EnableEurekaServer``). It is built with Maven into ``~/.cache/svcreg/peers``, keyed by a hash
of its sources, like the Go tools: a second run reuses the jar.

Instances are registered, renewed and cancelled through Eureka's REST API (``/eureka/apps``),
as its non-Java clients do; a lookup is ``GET /eureka/apps/{APP}`` with JSON.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import free_port, log

SOURCE = Path(__file__).parent / "eureka"
CACHE = Path(os.environ.get("SVCREG_CACHE", Path.home() / ".cache" / "svcreg")) / "peers"
JSON = {"Accept": "application/json", "Content-Type": "application/json"}

# The settings Eureka's documentation gives for the fastest failure detection: no read-only
# response cache (answers come from the read-write cache, itself invalidated on each change),
# eviction every second, self-preservation off (else eviction stops when many leases lapse).
FASTEST = (
    "--eureka.server.use-read-only-response-cache=false",
    "--eureka.server.eviction-interval-timer-in-ms=1000",
    "--eureka.server.enable-self-preservation=false",
    "--eureka.server.response-cache-update-interval-ms=1000",
)
DEFAULT_LEASE = (30, 90)  # renewal interval, lease duration (s): Eureka's client defaults
FASTEST_LEASE = (1, 2)


def jar() -> Path:
    """The server's jar, built with Maven on first use (about a minute cold)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in SOURCE.rglob("*") if p.is_file() and "target" not in p.parts):
        digest.update(str(path.relative_to(SOURCE)).encode() + b"\0" + path.read_bytes())
    home = CACHE / f"eureka-{digest.hexdigest()[:12]}"
    built = home / "target" / "eureka-peer.jar"
    if built.exists():
        return built
    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(SOURCE, home, ignore=shutil.ignore_patterns("target"))
    log(f"building the Eureka peer with Maven into {home} (cold: about a minute)")
    subprocess.run(
        ["mvn", "-q", "-B", "-DskipTests", f"-Dmaven.repo.local={CACHE / 'm2'}", "package"],
        cwd=home,
        check=True,
        timeout=1800,
    )
    return built


class Eureka:
    """One Eureka server process on loopback, pinned to ``cpu``."""

    def __init__(self, log_file: Path, *settings: str, cpu: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        pin = ["taskset", "-c", str(cpu)] if (os.cpu_count() or 1) > 1 else []
        with log_file.open("ab") as out:
            self.process = subprocess.Popen(
                [*pin, "java", "-jar", str(jar()), f"--server.port={self.port}", *settings],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.url, headers=JSON, timeout=30)
        deadline = time.monotonic() + 180
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Eureka server exited; see {log_file}")
            try:
                if self.http.get("/eureka/apps").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Eureka server did not answer in 180 s; see {log_file}")
            time.sleep(0.5)  # polling a starting JVM: there is no event to wait on

    @property
    def pid(self) -> int:
        return self.process.pid

    def lookup_url(self, app: str) -> str:
        return f"{self.url}/eureka/apps/{app.upper()}"

    @staticmethod
    def instance(app: str, instance_id: str, address: str, lease: tuple[int, int]) -> dict[str, Any]:
        return {
            "instance": {
                "instanceId": instance_id,
                "hostName": address,
                "app": app.upper(),
                "ipAddr": address,
                "vipAddress": app.lower(),
                "status": "UP",
                "port": {"$": 8080, "@enabled": "true"},
                "dataCenterInfo": {
                    "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                    "name": "MyOwn",
                },
                "leaseInfo": {"renewalIntervalInSecs": lease[0], "durationInSecs": lease[1]},
            }
        }

    def register(self, app: str, instance_id: str, address: str, lease: tuple[int, int]) -> None:
        answer = self.http.post(
            f"/eureka/apps/{app.upper()}", json=self.instance(app, instance_id, address, lease)
        )
        if answer.status_code != 204:
            raise RuntimeError(f"register {app}/{instance_id}: HTTP {answer.status_code} {answer.text[:200]}")

    def renew(self, app: str, instance_id: str) -> int:
        return self.http.put(f"/eureka/apps/{app.upper()}/{instance_id}").status_code

    def instance_ids(self, app: str) -> set[str]:
        """The UP instances a consumer is served for ``app`` (none when the app is unknown)."""
        answer = self.http.get(f"/eureka/apps/{app.upper()}")
        if answer.status_code == 404:
            return set()
        instances = answer.json()["application"]["instance"]
        if isinstance(instances, dict):
            instances = [instances]
        return {i["instanceId"] for i in instances if i.get("status") == "UP"}

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
