#!/usr/bin/env bash
# Creates .venv-tfds: the `tfds` command line (TensorFlow, Apache Beam, mlcroissant), for the
# tests that build mimic_cxr_egd with `tfds build`, the way TFDS users do. mimic-jax itself
# never needs TensorFlow; this environment holds only what the builder imports beside the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/require_disk.sh
source scripts/require_disk.sh
PINS=(tensorflow-cpu==2.21.0 tensorflow-datasets==4.9.10 apache-beam==2.77.0 mlcroissant==1.1.1
      importlib_resources==7.1.0 array-record==0.8.6 pillow==12.3.0 scipy==1.18.1 pydicom==3.0.2)
pick_python() {
  local cand
  for cand in "${MIMIC_PYTHON:-}" python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3 \
              /usr/bin/python3.12; do
    [[ -n "$cand" ]] || continue
    if "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
      echo "$cand"; return 0
    fi
  done
  echo "setup_tfds_cli_env: no Python 3.12 found" >&2; return 1
}
stamp=$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -d' ' -f1)
if [[ "$(cat .venv-tfds/.installed 2>/dev/null)" != "$stamp" ]]; then
  require_disk 3 .venv-tfds
  PY=$(pick_python)
  echo "[setup] creating .venv-tfds with $("$PY" --version 2>&1) (the tfds command line)"
  rm -rf .venv-tfds
  "$PY" -m venv .venv-tfds
  quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
  .venv-tfds/bin/python -m pip install -q "${PINS[@]}" 2>&1 | quiet
  # The builder's package only (its imports are pinned above), not mimic-jax's dependencies.
  .venv-tfds/bin/python -m pip install -q --no-deps -e . 2>&1 | quiet
  echo "$stamp" > .venv-tfds/.installed
fi
.venv-tfds/bin/tfds --help >/dev/null
echo "[setup] .venv-tfds ready: $(.venv-tfds/bin/python -c 'import tensorflow_datasets as t; print("tfds", t.__version__)')"
