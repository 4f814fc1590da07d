#!/usr/bin/env bash
# Install everything svcreg needs on a fresh machine: a virtualenv with the package and its test
# tools, the control-plane and node binaries built from Go modules (cached in ~/.cache/svcreg),
# and the node's host programs from Debian's packages (containerd, runc, buildah, CNI plugins).
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
# The node (svcreg cluster up --node) runs pods with Debian's containerd and runc, the CNI
# plugins, and images built by buildah (svcreg's on a base debootstrap makes from Debian's
# packages); kube-proxy needs iptables and conntrack.
NODE_PACKAGES="containerd runc buildah containernetworking-plugins iptables conntrack debootstrap"
missing=""
for command in containerd runc buildah iptables conntrack debootstrap; do
  command -v "$command" >/dev/null || missing=yes
done
[ -x /usr/lib/cni/bridge ] || missing=yes
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "svcreg: installing the node's host programs: $NODE_PACKAGES" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $NODE_PACKAGES >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $NODE_PACKAGES >/dev/null; }
  else
    echo "svcreg: the node's tests need (as root) apt-get install $NODE_PACKAGES" >&2
  fi
fi
# The dashboard's browser test drives Debian's Chromium through Playwright (no browser download).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "svcreg: installing Chromium for the dashboard's browser test" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null; }
  else
    echo "svcreg: the dashboard's browser test needs (as root) apt-get install chromium" >&2
  fi
fi
.venv/bin/svcreg cluster build --node --promtool >/dev/null
# The TypeScript client (clients/typescript) is built and tested with Node.js >= 20 and npm,
# its packages pinned by package-lock.json.
if command -v npm >/dev/null; then
  (cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
else
  echo "svcreg: the TypeScript client's tests need Node.js >= 20 with npm" >&2
fi
