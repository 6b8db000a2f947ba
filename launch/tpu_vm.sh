#!/usr/bin/env bash
# Train mimic-jax on a Cloud TPU VM or slice: create, set up, copy data, train (relaunching
# after preemption), evaluate, collect logs, delete. Every step is a gcloud command; with
# --dry-run they are printed instead of run. See launch/README.md.
#
#   launch/tpu_vm.sh COMMAND [options]
#
# Commands:
#   create    create the TPU VM/slice (--spot, or --queued for a queued resource)
#   setup     copy this checkout to every worker; Python 3.12 venv (uv) + pip install .[tpu]
#   data      copy a locally built TFDS dataset (--local-data-dir) to the gs:// data dir
#   train     run the training command once on all workers (--worker=all)
#   run       train, and after a preemption recreate/set up the slice and train again,
#             until the run completes (at most --max-restarts relaunches)
#   evaluate  evaluate the latest checkpoint on all workers (process 0 writes the report)
#   logs      copy the workers' console logs to logs/<run-name>/
#   delete    delete the TPU VM (or the queued resource)
#   all       create, setup, data (if --local-data-dir), run, evaluate, logs, delete
#
# Options (defaults in brackets; each also reads the environment variable in capitals):
#   --name NAME            TPU name [mimic-jax]
#   --project PROJECT      GCP project [gcloud's default]
#   --zone ZONE            zone [us-west4-a]
#   --accelerator TYPE     accelerator type [v5litepod-16: 16 v5e chips on 4 hosts]
#   --version VERSION      TPU runtime version [v2-alpha-tpuv5-lite]
#   --spot                 spot capacity (preemptible)
#   --queued               create through a queued resource (waits until ACTIVE)
#   --bucket gs://B/P      where runs and data live: gs://B/P/runs/<run-name>, gs://B/P/tfds
#   --run-name NAME        run name [mimic]
#   --config SPEC          config [configs/mimic.py]
#   --local-data-dir DIR   local TFDS data dir holding mimic_cxr_egd/ (for `data`)
#   --max-restarts N       relaunches after preemption [20]
#   --dry-run              print the commands, run nothing
#   Anything after `--` is passed to main.py (e.g. -- --config.num_epochs=30).
set -euo pipefail

GCLOUD=${GCLOUD:-gcloud}
NAME=${TPU_NAME:-mimic-jax}
PROJECT=${PROJECT:-}
ZONE=${ZONE:-us-west4-a}
ACCELERATOR=${ACCELERATOR:-v5litepod-16}
VERSION=${VERSION:-v2-alpha-tpuv5-lite}
SPOT=${SPOT:-0}
QUEUED=${QUEUED:-0}
BUCKET=${BUCKET:-}
RUN_NAME=${RUN_NAME:-mimic}
CONFIG=${CONFIG:-configs/mimic.py}
LOCAL_DATA_DIR=${LOCAL_DATA_DIR:-}
MAX_RESTARTS=${MAX_RESTARTS:-20}
DRY_RUN=${DRY_RUN:-0}
POLL_SECONDS=${POLL_SECONDS:-60}
PREEMPTED_EXIT_CODE=42   # main.py's exit code after a SIGTERM checkpoint
PREEMPTED_LOG_LINE='SIGTERM: checkpoint at step'  # what main.py logs then
EXTRA_ARGS=()

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

parse_args() {
  [[ $# -ge 1 ]] || { usage; exit 2; }
  COMMAND=$1; shift
  while [[ $# -gt 0 ]]; do
    case $1 in
      --name) NAME=$2; shift 2 ;;
      --project) PROJECT=$2; shift 2 ;;
      --zone) ZONE=$2; shift 2 ;;
      --accelerator) ACCELERATOR=$2; shift 2 ;;
      --version) VERSION=$2; shift 2 ;;
      --spot) SPOT=1; shift ;;
      --queued) QUEUED=1; shift ;;
      --bucket) BUCKET=$2; shift 2 ;;
      --run-name) RUN_NAME=$2; shift 2 ;;
      --config) CONFIG=$2; shift 2 ;;
      --local-data-dir) LOCAL_DATA_DIR=$2; shift 2 ;;
      --max-restarts) MAX_RESTARTS=$2; shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      -h|--help) usage; exit 0 ;;
      --) shift; EXTRA_ARGS=("$@"); break ;;
      *) die "unknown option $1 (see --help)" ;;
    esac
  done
  [[ $BUCKET == gs://* ]] || die "--bucket gs://BUCKET/PREFIX is required (got '${BUCKET}')"
  BUCKET=${BUCKET%/}
  WORKDIR=$BUCKET/runs/$RUN_NAME
  DATA_DIR=$BUCKET/tfds
  SCOPE=(--zone="$ZONE")
  if [[ -n $PROJECT ]]; then SCOPE+=(--project="$PROJECT"); fi
}

# Commands are echoed on file descriptor 3 (the script's stdout), also from inside $(...).
exec 3>&1

# Prints a command (shell-quoted, one line) and runs it unless --dry-run.
run() {
  { printf '+'; printf ' %q' "$@"; printf '\n'; } >&3
  if [[ $DRY_RUN == 1 ]]; then return 0; fi
  "$@"
}

# Like run, for a command whose output is wanted; in a dry run, $1 stands in for the output.
query() {
  local dry_answer=$1; shift
  { printf '+'; printf ' %q' "$@"; printf '\n'; } >&3
  if [[ $DRY_RUN == 1 ]]; then echo "$dry_answer"; return 0; fi
  "$@"
}

tpu() { run "$GCLOUD" compute tpus tpu-vm "$@" "${SCOPE[@]}"; }

on_all_workers() { tpu ssh "$NAME" --worker=all --command="$1"; }

create() {
  local spot=()
  if [[ $SPOT == 1 ]]; then spot=(--spot); fi
  if [[ $QUEUED == 1 ]]; then
    run "$GCLOUD" compute tpus queued-resources create "$NAME-qr" --node-id="$NAME" \
      --accelerator-type="$ACCELERATOR" --runtime-version="$VERSION" "${spot[@]}" "${SCOPE[@]}"
    local state
    while true; do
      state=$(query ACTIVE "$GCLOUD" compute tpus queued-resources describe "$NAME-qr" \
        --format='value(state.state)' "${SCOPE[@]}")
      echo "queued resource $NAME-qr: $state"
      case $state in
        ACTIVE) break ;;
        FAILED|SUSPENDED) die "queued resource $NAME-qr is $state" ;;
      esac
      sleep "$POLL_SECONDS"
    done
  else
    tpu create "$NAME" --accelerator-type="$ACCELERATOR" --version="$VERSION" "${spot[@]}"
  fi
}

delete() {
  if [[ $QUEUED == 1 ]]; then
    run "$GCLOUD" compute tpus queued-resources delete "$NAME-qr" --force --quiet "${SCOPE[@]}"
  else
    tpu delete "$NAME" --quiet
  fi
}

setup() {
  local archive=/tmp/mimic-jax-$RUN_NAME.tar.gz
  run git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$archive" HEAD
  tpu scp "$archive" "$NAME:mimic-jax.tar.gz" --worker=all
  # Cloud TPU images ship an older Python; uv provides 3.12 (jax >= 0.12 needs it).
  on_all_workers "set -e; rm -rf ~/mimic-jax; mkdir -p ~/mimic-jax; \
tar -xzf ~/mimic-jax.tar.gz -C ~/mimic-jax; cd ~/mimic-jax; \
command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh; \
export PATH=\$HOME/.local/bin:\$PATH; uv venv --python 3.12 .venv; \
uv pip install --python .venv/bin/python -e '.[tpu]'; \
.venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count())'"
}

data() {
  [[ -n $LOCAL_DATA_DIR ]] || die "data needs --local-data-dir (the TFDS data dir you built)"
  [[ $DRY_RUN == 1 || -d $LOCAL_DATA_DIR/mimic_cxr_egd ]] ||
    die "$LOCAL_DATA_DIR/mimic_cxr_egd does not exist: build it first (python -m data_builders.build)"
  run "$GCLOUD" storage rsync --recursive "$LOCAL_DATA_DIR/mimic_cxr_egd" "$DATA_DIR/mimic_cxr_egd"
}

# The training/evaluation command every worker runs; its console goes to ~/mimic-jax-<host>.log.
main_command() {
  local mode=$1 args=""
  local a
  for a in "${EXTRA_ARGS[@]}"; do args+=" $(printf '%q' "$a")"; done
  echo "cd ~/mimic-jax && .venv/bin/python main.py --config=$CONFIG --workdir=$WORKDIR \
--mode=$mode --multiprocess=on --config.data.data_dir=$DATA_DIR$args \
2>&1 | tee -a ~/mimic-jax-\$(hostname).log; exit \${PIPESTATUS[0]}"
}

train() { on_all_workers "$(main_command train)"; }

evaluate() { on_all_workers "$(main_command evaluate)"; }

logs() {
  run mkdir -p "logs/$RUN_NAME"
  tpu scp "$NAME:mimic-jax-*.log" "logs/$RUN_NAME/" --worker=all
}

# READY, PREEMPTED, ... or NOT_FOUND.
vm_state() {
  local state
  state=$(query READY "$GCLOUD" compute tpus tpu-vm describe "$NAME" --format='value(state)' \
    "${SCOPE[@]}" 2>/dev/null) || state=NOT_FOUND
  echo "${state:-NOT_FOUND}"
}

# True if the last attempt ended in a preemption: main.py exited 42 (gcloud may pass on
# another code for --worker=all, so its log line counts too), or the slice is gone.
was_preempted() {
  local rc=$1
  [[ $rc == "$PREEMPTED_EXIT_CODE" ]] && return 0
  grep -qs "$PREEMPTED_LOG_LINE" "logs/$RUN_NAME"/*.log && return 0
  [[ $(vm_state) != READY ]]
}

# Trains until main.py exits 0. After a preemption it relaunches, on a recreated slice if
# the old one is no longer READY; the checkpoint in the gs:// workdir makes it resume. Any
# other failure stops.
run_to_completion() {
  local attempt rc state
  for ((attempt = 0; attempt <= MAX_RESTARTS; attempt++)); do
    state=$(vm_state)
    if [[ $state != READY ]]; then
      echo "TPU $NAME is $state: recreating it"
      if [[ $state != NOT_FOUND ]]; then delete; fi
      create
      setup
    fi
    rc=0
    run rm -f "logs/$RUN_NAME"/*.log
    train || rc=$?
    logs || true
    if [[ $rc == 0 ]]; then
      echo "training of $RUN_NAME complete (relaunches: $attempt)"
      return 0
    fi
    if ! was_preempted "$rc"; then
      echo "training failed with exit code $rc (not a preemption); see logs/$RUN_NAME/" >&2
      return "$rc"
    fi
    echo "preempted (exit code $rc): relaunch $((attempt + 1)) of $MAX_RESTARTS"
  done
  echo "gave up after $MAX_RESTARTS relaunches" >&2
  return 1
}

main() {
  parse_args "$@"
  case $COMMAND in
    create) create ;;
    setup) setup ;;
    data) data ;;
    train) train ;;
    run) run_to_completion ;;
    evaluate) evaluate ;;
    logs) logs ;;
    delete) delete ;;
    all)
      create
      setup
      if [[ -n $LOCAL_DATA_DIR ]]; then data; fi
      local rc=0
      run_to_completion && evaluate || rc=$?
      logs || true
      delete
      return "$rc" ;;
    *) die "unknown command $COMMAND (see --help)" ;;
  esac
}

main "$@"
