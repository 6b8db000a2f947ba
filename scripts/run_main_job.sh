#!/usr/bin/env bash
# Sets up .venv (if needed) and runs the main job on the embedded synthetic data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python main.py --config=configs/mimic.py:synthetic --workdir=runs/synthetic "$@"
