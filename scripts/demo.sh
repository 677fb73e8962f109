#!/usr/bin/env bash
# The README demo: the paper setting and its five single-trick ablations on the Fashion-MNIST
# quick preset (CPU, one after another), then the report. Rerunning skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
SEEDS=${SEEDS:-0,1}
start=$(date +%s)
"$BIN/alexlab-train" -m experiment=fmnist_quick sweep=demo "seed=$SEEDS" "$@" || status=$?
echo "demo: trained in $(( $(date +%s) - start )) s"
"$BIN/alexlab-report" multirun/demo/fmnist_quick
exit ${status:-0}
