#!/usr/bin/env bash
# The main job on the embedded synthetic data: sets up .venv (if needed), builds the synthetic
# dataset and its decoy twin, trains and evaluates the baseline, the ensemble control, mimic,
# mimic as the released code ran it (mimic_stop) and gaze at CPU size, compares them against
# the baseline and the ensemble, and prints where the report is. SEEDS (default 0) runs more
# seeds, e.g. SEEDS=0-4; RUNS (default runs/synthetic) is the output folder. Extra arguments go
# to every main.py call (e.g. --config.num_epochs=4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# shellcheck source=scripts/xla_cpu_env.sh
source scripts/xla_cpu_env.sh
RUNS=${RUNS:-runs/synthetic}
start=$(date +%s)
.venv/bin/python -m mimic_jax.sweep --variants=baseline,ensemble,mimic,mimic_stop,gaze \
  --seeds="${SEEDS:-0}" --references=baseline,ensemble --out="$RUNS" -- "$@"
echo "Done in $(( $(date +%s) - start ))s."
echo "Comparison report: $RUNS/comparison/comparison.md (figure: comparison.png)"
echo "Per-run reports and galleries: $RUNS/<variant>/seed_<k>/eval/test/"
echo "Score the gaze run on synthetic REFLACX (reader ceiling, prior, ellipses):"
echo "  .venv/bin/python -m mimic_jax.evaluate_reflacx --workdir=$RUNS/gaze/seed_0"
