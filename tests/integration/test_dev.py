"""``svcreg dev`` end to end: it comes up on its own control plane, the curl it prints answers
200, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.targets import free_port


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def _run_curl(curl: str) -> int:
    """The printed command as pasted; with httpx only where curl is not installed."""
    words = shlex.split(curl)
    if shutil.which("curl"):
        result = subprocess.run(
            [*words, "-o", "/dev/null", "-w", "%{http_code}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return int(result.stdout or 0)
    header = words[words.index("-H") + 1]
    name, _, value = header.partition(": ")
    return httpx.get(words[-1], headers={name: value}, timeout=30).status_code


def _tools_path(state: Path, env: dict[str, str]) -> str:
    """PATH with the dev control plane's own kubectl first (as svcreg cluster env exports it)."""
    exports = subprocess.run(
        [sys.executable, "-m", "svcreg.cli", "cluster", "env", "--dir", str(state)],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    found = re.search(r"export PATH=([^:]+):", exports)
    assert found, exports
    return f"{shlex.split(found.group(1))[0]}:{env.get('PATH', '')}"


def test_dev_comes_up_answers_the_printed_curl_and_stops_clean(tmp_path: Path) -> None:
    state = tmp_path / "dev-cluster"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    out, err = (tmp_path / "dev.out").open("w+"), (tmp_path / "dev.err").open("w+")
    dev = subprocess.Popen(
        [sys.executable, "-m", "svcreg.cli", "dev", "--port", str(port), "--dir", str(state)],
        stdout=out,
        stderr=err,
        env=env,
    )
    try:
        deadline = time.monotonic() + 180
        while "is ready" not in (tmp_path / "dev.out").read_text():
            assert dev.poll() is None, (tmp_path / "dev.err").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "dev.err").read_text()[-3000:]
            time.sleep(0.2)
        printed = (tmp_path / "dev.out").read_text()
        curl = next(line.strip() for line in printed.splitlines() if line.strip().startswith("curl "))
        assert f"http://127.0.0.1:{port}/v1/capabilities" in curl
        assert _run_curl(curl) == 200
        running = _processes_mentioning(str(state))
        assert len(running) >= 2, "etcd and kube-apiserver should run from the dev state directory"
        # A spec the models refuse is refused at kubectl apply, naming the field (the webhook).
        kubeconfig = {**env, "KUBECONFIG": str(state / "kubeconfig"), "PATH": _tools_path(state, env)}
        bad = (
            "apiVersion: svcreg.io/v1alpha1\nkind: ServiceRegistration\nmetadata: {name: bad}\n"
            "spec: {endpoint: 'http://10.0.0.9:80',\n"
            "       capabilities: [{name: x, inputSchema: {minProperties: -1}}]}\n"
        )
        refused = subprocess.run(
            ["kubectl", "apply", "-n", "default", "-f", "-"], input=bad, env=kubeconfig,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert refused.returncode != 0 and "spec.capabilities[0].inputSchema" in refused.stderr, (
            refused.stderr
        )
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            dev.kill()
            raise
    assert dev.returncode == 0, (tmp_path / "dev.err").read_text()[-3000:]
    assert re.search(r"stopping (kube-apiserver|etcd)", (tmp_path / "dev.err").read_text())
    assert _processes_mentioning(str(state)) == []
    assert _processes_mentioning(f"--port {port}") == []
