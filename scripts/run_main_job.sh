#!/usr/bin/env bash
# The main job on the embedded synthetic data: sets up .venv (if needed), builds the synthetic
# dataset, trains and evaluates the baseline, mimic and gaze variants at CPU size, compares
# them and prints where the report is. Extra arguments go to every main.py call.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# shellcheck source=scripts/xla_cpu_env.sh
source scripts/xla_cpu_env.sh
PY=.venv/bin/python
RUNS=${RUNS:-runs/synthetic}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$PWD/runs/.xla_cache}
mkdir -p "$RUNS"
start=$(date +%s)
for variant in baseline mimic gaze; do
  echo "=== $variant ($(( $(date +%s) - start ))s elapsed)"
  "$PY" main.py --config="configs/mimic.py:$variant,synthetic" --workdir="$RUNS/$variant" \
    --mode=train_and_evaluate --verbosity=-1 "$@" 2>"$RUNS/$variant.stderr.log" \
    || { tail -30 "$RUNS/$variant.stderr.log"; exit 1; }
done
"$PY" -m mimic_jax.compare --workdirs="$RUNS/baseline,$RUNS/mimic,$RUNS/gaze" \
  --out="$RUNS/comparison"
echo "Done in $(( $(date +%s) - start ))s."
echo "Comparison report: $RUNS/comparison/comparison.md (figure: comparison.png)"
echo "Per-run reports and galleries: $RUNS/<variant>/eval/test/"
