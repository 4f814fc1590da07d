"""The package layout holds: import contracts, and a client that needs no server-side library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCK_SERVER_SIDE = """
import importlib.abc, sys
BLOCKED = (
    "kopf", "grpc", "grpc_health", "cryptography", "kubernetes", "aiohttp", "prometheus_client", "yaml"
)

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed in a client-only install")
        return None

sys.meta_path.insert(0, Block())
import svcreg.client
from svcreg.client.selfregister import SelfRegistration
with svcreg.client.DiscoveryClient("http://svcreg.example:8080", "token") as client:
    assert client.base_url == "http://svcreg.example:8080"
assert not any(m.split(".")[0] in BLOCKED for m in sys.modules), sorted(sys.modules)
print("client-only ok")
"""


def test_the_client_imports_without_any_server_side_library() -> None:
    """What ``pip install svcreg`` (no extras) provides is enough for ``svcreg.client``."""
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_SERVER_SIDE], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "client-only ok" in done.stdout


def test_import_contracts_hold() -> None:
    """The layering in pyproject.toml ([tool.importlinter]): operator and discovery independent,
    the client free of server code, dev tools out of runtime code, no cycles."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


def test_building_the_cli_imports_no_kubernetes_client() -> None:
    """The kubernetes package reads KUBECONFIG when imported; svcreg dev sets it after the CLI is
    built, so building the CLI must not import it (it did once, through svcreg ui)."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    probe = "import sys; from svcreg import cli; cli.parser(); print('kubernetes' in sys.modules)"
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert shown.stdout.strip() == "False"
