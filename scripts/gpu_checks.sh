#!/usr/bin/env bash
# Every GPU measurement of docs/PERFORMANCE.md in one call, for the lent device machine. Its image
# has torch, Lightning, torchmetrics and torchvision but not Hydra or W&B, and no network:
#   here:   make gpu-wheels                       # downloads the missing wheels into .whl/
#   device: bash scripts/gpu_checks.sh            # (carry .whl) installs them offline, runs the checks
# Figures go to $OUT (default /tmp/gpu): SUMMARY.md and one <step>.txt per step.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-deps --no-index .whl/*.whl
fi
OUT=${OUT:-/tmp/gpu} exec "$PY" benchmarks/gpu_checks.py "$@"
