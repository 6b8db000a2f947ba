#!/usr/bin/env bash
# Sets up .venv, .venv-torch, .venv-tfds and .browser (if needed), checks formatting and lint (ruff;
# pyproject.toml), and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
bash scripts/setup_torch_env.sh
bash scripts/setup_tfds_cli_env.sh
bash scripts/setup_browser.sh
.venv/bin/ruff format --check --quiet . || { echo 'run: .venv/bin/ruff format .' >&2; exit 1; }
.venv/bin/ruff check --quiet .
# shellcheck source=scripts/xla_cpu_env.sh
source scripts/xla_cpu_env.sh
exec .venv/bin/python -m pytest -n 2 -q --durations=25 "$@"
