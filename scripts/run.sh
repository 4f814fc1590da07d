#!/usr/bin/env bash
# Run svcreg locally: install, start the local control plane, install the CRD and its policy,
# apply the examples, and say how to use kubectl against it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
eval "$(.venv/bin/svcreg cluster up)"
kubectl apply -f deploy/crds/
kubectl wait --for=condition=Established crd/serviceregistrations.svcreg.io --timeout=60s
kubectl apply -f examples/
kubectl get svcreg
cat <<MSG

svcreg's local control plane is running. In your shell:

  eval "\$(.venv/bin/svcreg cluster env)"
  kubectl get svcreg

Stop it with: .venv/bin/svcreg cluster down
MSG
