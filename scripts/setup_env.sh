#!/usr/bin/env bash
# Creates .venv in the repository root and installs mimic-jax with its test extra (on 3.12
# exactly the versions of requirements-lock.txt).
# Python 3.12 where present (jax 0.12 needs it), else 3.11 (pip then resolves older jax/flax).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/require_disk.sh
source scripts/require_disk.sh
pick_python() {
  local cand
  for cand in "${MIMIC_PYTHON:-}" python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3 \
              /usr/bin/python3.12 python3.11 python3; do
    [[ -n "$cand" ]] || continue
    if "$cand" -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1; then
      if "$cand" -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1 ||
         [[ "$cand" != python3.12 && "$cand" != *3.12* ]]; then
        echo "$cand"; return 0
      fi
    fi
  done
  echo "setup_env: no Python >= 3.11 found" >&2; return 1
}
if [[ ! -x .venv/bin/python ]]; then
  require_disk 2 .venv
  PY=$(pick_python)
  echo "[setup] creating .venv with $("$PY" --version 2>&1) ($PY)"
  "$PY" -m venv .venv
fi
# Reinstall only when the dependency files changed since the last successful install.
stamp=$(cat setup.cfg requirements-lock.txt | sha256sum | cut -d' ' -f1)
if [[ "$(cat .venv/.mimic_jax_installed 2>/dev/null)" != "$stamp" ]]; then
  quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | quiet
  if .venv/bin/python -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
    # Exactly the locked environment (every transitive package pinned), then the project.
    .venv/bin/python -m pip install -q -r requirements-lock.txt 2>&1 | quiet
    .venv/bin/python -m pip install -q --no-deps -e . 2>&1 | quiet
  else
    .venv/bin/python -m pip install -q -e '.[test]' 2>&1 | quiet
  fi
  echo "$stamp" > .venv/.mimic_jax_installed
fi
.venv/bin/python -c 'import jax, flax, tensorflow_datasets as t; print(f"[setup] .venv ready: jax {jax.__version__}, flax {flax.__version__}, tfds {t.__version__}")'
