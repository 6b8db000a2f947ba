#!/usr/bin/env bash
# The GPU benchmark in one command: JAX and PyTorch side by side, DenseNet-121 at 224 px,
# bfloat16, batch 32, on a CUDA machine whose Python has jax[cuda], flax, optax, clu,
# ml-collections, torch, torchvision and timm. Environment overrides: PYTHON, PRESETS,
# METHODS, BATCH, DTYPE, STEPS, EXECUTION, OUT; TORCH_COMPILE=1 adds torch.compile.
#
# XLA:GPU compiles one DenseNet-121 step in 1.5-2 minutes and the explanation steps in more,
# on one host thread each. So first each JAX method is compiled in its own process, all in
# parallel, into one persistent compilation cache (CACHE_DIR; these processes' step times are
# thrown away, their compile times kept in OUT's .warm.<method>.json); then one process times
# PyTorch and every JAX method one after another, loading the compiled steps from the cache.
# WARM_DEADLINE (seconds, default none): a method whose compilation has not finished by then
# is stopped and timed in PyTorch only. WARM=0 skips the parallel compilation.
set -euo pipefail
cd "$(dirname "$0")/.."
# JAX allocates as it goes, so that the PyTorch process before it and JAX share the GPU.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}
OUT_JSON=${OUT:-benchmarks/out/gpu.json}
METHODS=${METHODS:-single,ensemble,mimic_ig,mimic_gshap,gaze}
common=(--presets "${PRESETS:-densenet121}" --batch_224 "${BATCH:-32}" --dtype "${DTYPE:-bfloat16}"
        --execution "${EXECUTION:-auto}" --cache_dir "${CACHE_DIR:-/tmp/mimic_jax_xla_cache}")
compile=()
if [[ ${TORCH_COMPILE:-0} == 1 ]]; then compile=(--torch_compile); fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
mkdir -p "$(dirname "$OUT_JSON")"
skip=()
if [[ ${WARM:-1} == 1 ]]; then
  declare -A pid
  for m in ${METHODS//,/ }; do
    "$PY" benchmarks/step_time.py "${common[@]}" --methods "$m" --steps 1 --torch_python '' \
      --out "${OUT_JSON%.json}.warm.$m.json" >"${OUT_JSON%.json}.warm.$m.log" 2>&1 &
    pid[$m]=$!
  done
  deadline=$((SECONDS + ${WARM_DEADLINE:-1000000}))
  for m in ${METHODS//,/ }; do
    while kill -0 "${pid[$m]}" 2>/dev/null && ((SECONDS < deadline)); do sleep 2; done
    if kill -0 "${pid[$m]}" 2>/dev/null; then
      kill "${pid[$m]}"; wait "${pid[$m]}" || true; skip+=("$m")
      echo "[gpu.sh] $m: not compiled within WARM_DEADLINE=${WARM_DEADLINE}s: PyTorch only"
    elif wait "${pid[$m]}"; then
      echo "[gpu.sh] $m: compiled (${SECONDS}s)"
    else
      skip+=("$m"); echo "[gpu.sh] $m: compilation failed: PyTorch only"
      tail -n 30 "${OUT_JSON%.json}.warm.$m.log"
    fi
  done
fi
"$PY" benchmarks/step_time.py "${common[@]}" --methods "$METHODS" --steps "${STEPS:-10}" \
  --jax_skip "$(IFS=,; echo "${skip[*]}")" --torch_python "$PY" "${compile[@]}" \
  --out "$OUT_JSON" "$@"
