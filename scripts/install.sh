#!/usr/bin/env bash
# Install everything svcreg needs on a fresh machine: a virtualenv with the package and its test
# tools, and the control-plane binaries built from Go modules (cached in ~/.cache/svcreg).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
"$PYTHON" - <<'PY' || { echo "svcreg needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
command -v go >/dev/null || { echo "svcreg builds its local control plane with Go >= 1.26; install Go first" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "svcreg: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
.venv/bin/svcreg cluster build >/dev/null
