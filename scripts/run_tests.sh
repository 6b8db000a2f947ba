#!/usr/bin/env bash
# Sets up .venv and .venv-torch (if needed) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
bash scripts/setup_torch_env.sh
# shellcheck source=scripts/xla_cpu_env.sh
source scripts/xla_cpu_env.sh
exec .venv/bin/python -m pytest -n 2 -q "$@"
