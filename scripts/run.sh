#!/usr/bin/env bash
# Run svcreg locally: install, start the local control plane, install the CRD and its policy,
# apply the examples, then run the operator in the foreground (Ctrl-C stops it; the control
# plane keeps running until `.venv/bin/svcreg cluster down`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
eval "$(.venv/bin/svcreg cluster up)"
kubectl apply -f deploy/crds/
kubectl wait --for=condition=Established crd/serviceregistrations.svcreg.io --timeout=60s
kubectl apply -f examples/
cat <<MSG

svcreg's local control plane is running. In another shell:

  eval "\$(.venv/bin/svcreg cluster env)"
  kubectl get svcreg -w                          # watch health arrive
  curl -s localhost:8080/readyz; curl -s localhost:8080/metrics | grep ^svcreg_

The examples' hosts do not exist here, so they turn Unhealthy (DNSFailure), as they would in a
cluster without those Services. Starting the operator (loopback probes allowed):
MSG
exec .venv/bin/svcreg run --probe-allow 127.0.0.0/8
