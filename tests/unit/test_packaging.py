"""The container image and the chart stay conventional: checks that need no Docker engine."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_is_multi_stage_non_root_with_the_svcreg_entry_point() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert len(stages) == 2 and all(s == "${BASE_IMAGE}" for s in stages)
    # The base is a build argument whose default is the slim Python image users pull.
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.MULTILINE)
    assert base is not None and base.group(1).startswith("python:") and "slim" in base.group(1)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.search(r'^ENTRYPOINT \["svcreg"\]', text, re.MULTILINE)
    # The image installs the operator extra only: no dev tools, no test tools.
    installs = re.findall(r"pip install [^\n]*", text)
    assert installs and all("'.[operator]'" in line for line in installs)
    # The runtime stage takes what the build stage made by COPY --from (keyed by content), never
    # by a RUN bind mount (keyed by its text: buildah --layers then reuses a stale layer).
    assert re.search(r"^COPY --from=build ", text, re.MULTILINE)
    assert "--mount=type=bind" not in text
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["svcreg"] == "svcreg.cli:main"
    # The chart's pod runs as the image's user.
    values = (ROOT / "deploy" / "helm" / "svcreg" / "values.yaml").read_text()
    assert f"runAsUser: {users[-1].split(':')[0]}" in values


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "bench"} <= set(ignored)


def test_the_typescript_clients_openapi_snapshot_is_the_servers_document() -> None:
    """clients/typescript generates its types from this snapshot: a change to the API must be
    followed by refreshing it (the command is in clients/typescript/README.md)."""
    import json  # noqa: PLC0415

    from svcreg.discovery.http.openapi import document  # noqa: PLC0415

    snapshot = json.loads((ROOT / "clients" / "typescript" / "openapi.json").read_text())
    assert snapshot == json.loads(json.dumps(document())), "refresh clients/typescript/openapi.json"
