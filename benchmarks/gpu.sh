#!/usr/bin/env bash
# The GPU benchmark in one command: JAX and PyTorch side by side, DenseNet-121 at 224 px,
# bfloat16, batch 32, on a CUDA machine whose Python has jax[cuda], flax, optax, clu,
# ml-collections, torch, torchvision and timm. Environment overrides: PYTHON, PRESETS,
# BATCH, DTYPE, STEPS, EXECUTION, OUT; TORCH_COMPILE=1 adds torch.compile.
set -euo pipefail
cd "$(dirname "$0")/.."
# JAX allocates as it goes, so that the PyTorch process before it and JAX share the GPU.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}
compile=()
if [[ ${TORCH_COMPILE:-0} == 1 ]]; then compile=(--torch_compile); fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" benchmarks/step_time.py --presets "${PRESETS:-densenet121}" --batch_224 "${BATCH:-32}" \
  --dtype "${DTYPE:-bfloat16}" --steps "${STEPS:-10}" --execution "${EXECUTION:-auto}" \
  --torch_python "$PY" "${compile[@]}" --out "${OUT:-benchmarks/out/gpu.json}" "$@"
