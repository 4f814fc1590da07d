#!/usr/bin/env bash
# Run svcreg locally: install what is needed, then `svcreg dev` in the foreground (local control
# plane, CRD, examples on demo targets, operator and discovery; Ctrl-C stops all it started).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/svcreg dev "$@"
