#!/usr/bin/env bash
# The README demo: sweeps/demo.yaml (a 2 x 2 factorial of dropout and augmentation on the Fashion-MNIST
# quick preset, 3 seeds, two trials at once on the CPU), then the report. Rerunning skips finished runs;
# extra arguments go to alexlab-train (e.g. 'seed=0,1,2,3,4').
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
start=$(date +%s)
"$BIN/alexlab-train" -m experiment=fmnist_quick sweep=demo launcher=gpu_pool launcher.n_jobs=2 "$@" || status=$?
echo "demo: trained in $(( $(date +%s) - start )) s"
"$BIN/alexlab-report" multirun/demo/fmnist_quick
echo "demo: $(( $(date +%s) - start )) s in all, report included"
exit ${status:-0}
