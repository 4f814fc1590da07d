#!/usr/bin/env bash
# Install what is needed, then run every check: ruff, mypy, the import contracts, unit tests,
# the integration tests against a real kube-apiserver and etcd started for this run, and the node
# tests against a control plane with a real node (kubelet, containerd, runc, CNI, CoreDNS).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

echo "== ruff" >&2
.venv/bin/ruff check operator tests bench
.venv/bin/ruff format --check operator tests bench
echo "== mypy" >&2
.venv/bin/mypy operator/svcreg
echo "== import contracts (layering of svcreg's packages)" >&2
.venv/bin/lint-imports
echo "== documentation site (mkdocs build --strict: a broken link or a page missing from the nav fails)" >&2
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
echo "== unit tests" >&2
.venv/bin/pytest tests/unit -q
echo "== integration tests (real kube-apiserver and etcd)" >&2
.venv/bin/pytest tests/integration -v
echo "== node tests (a real node: pods, Services, cluster DNS)" >&2
.venv/bin/pytest tests/node -v
