#!/usr/bin/env bash
# Creates .venv-torch: PyTorch, torchvision and timm, for the tests that compare our Flax
# models with the reference implementations and for the PyTorch side of benchmarks/. It is
# never a dependency of mimic-jax itself. Python 3.11: where this machine keeps torch and
# torchvision wheels on disk (x86-64: CUDA builds, about 5.5 GB installed; they run on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/require_disk.sh
source scripts/require_disk.sh
PINS=(torch==2.14.1 torchvision==0.29.1 timm==1.0.31 safetensors==0.8.0 numpy==2.4.6)
pick_python() {
  local cand
  for cand in "${MIMIC_TORCH_PYTHON_BASE:-}" python3.11 "$HOME"/.pyenv/versions/3.11*/bin/python3 python3; do
    [[ -n "$cand" ]] || continue
    if "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 11)' >/dev/null 2>&1; then
      echo "$cand"; return 0
    fi
  done
  echo "setup_torch_env: no Python 3.11 found" >&2; return 1
}
stamp=$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -d' ' -f1)
if [[ "$(cat .venv-torch/.installed 2>/dev/null)" != "$stamp" ]]; then
  require_disk 6 .venv-torch
  PY=$(pick_python)
  echo "[setup] creating .venv-torch with $("$PY" --version 2>&1) (torch, torchvision, timm)"
  rm -rf .venv-torch
  "$PY" -m venv .venv-torch
  .venv-torch/bin/python -m pip install -q "${PINS[@]}" 2>&1 |
    { grep -v "is ignored: it is neither a file nor a directory" || true; }
  echo "$stamp" > .venv-torch/.installed
fi
.venv-torch/bin/python -c 'import torch, torchvision, timm; print(f"[setup] .venv-torch ready: torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}")'
