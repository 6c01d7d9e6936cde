#!/usr/bin/env bash
# lmlab launcher.
#   ./launch.sh            set up .venv if needed, then run the main job (GPT on Shakespeare)
#   ./launch.sh test       set up, then run the test suite (extra args go to pytest)
#   ./launch.sh setup      set up only (e.g. once on a SLURM login node before `srun`)
#   ./launch.sh devices    set up, then print this process's view of processes and devices
#   ./launch.sh CMD ...    set up, then run `lmlab CMD ...` (train, eval, sample, ...)
#   ./launch.sh --config.train.steps=50 ...   options without a command go to the main job
# Commands run in the caller's directory: relative paths mean what they mean in the caller's shell
# (`path/to/launch.sh eval runs/x` reads ./runs/x); only the setup happens in the checkout.
# LMLAB_PYTHON=/path/to/python uses that interpreter (e.g. one with CUDA/TPU JAX preinstalled)
# instead of creating .venv; lmlab is then installed into it in editable mode if missing.
# LMLAB_PIP_EXTRA="jax[tpu]" (or "jax[cuda12]") is installed along with lmlab.
#
# Multi-host: run the same command in every process; lmlab.parallel starts jax.distributed from
# the environment (README "Scaling out"):
#   SLURM:   srun --nodes=2 --ntasks-per-node=1 ./launch.sh train configs/X.py   (one process per host)
#            srun --nodes=2 --ntasks-per-node=8 --gpus-per-task=1 ./launch.sh train configs/X.py
#   TPU pod: gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all \
#                --command="cd lmlab && LMLAB_PIP_EXTRA='jax[tpu]' ./launch.sh train configs/X.py"
#   Any:     LMLAB_COORDINATOR=host0:1234 LMLAB_NUM_PROCESSES=N LMLAB_PROCESS_ID=i ./launch.sh train ...
# srun passes the environment through; processes that share the checkout (a network filesystem)
# also share .venv, which one process at a time sets up (the others wait on a lock).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"

LOCK="$ROOT/.lmlab-setup.lock"

# mkdir is atomic on local and network filesystems: the first process sets up, the others wait
# and then find the install stamp current.
lock() {
  local waited=0
  until mkdir "$LOCK" 2>/dev/null; do
    if (( waited == 0 )); then echo "launch.sh: waiting for another process to finish setting up ($LOCK)" >&2; fi
    sleep 2; waited=$((waited + 2))
    if (( waited > 1800 )); then
      echo "launch.sh: $LOCK held for 30 minutes; remove it if no other setup is running" >&2
      exit 1
    fi
  done
  trap 'rmdir "$LOCK" 2>/dev/null || true' EXIT
}

unlock() {
  rmdir "$LOCK" 2>/dev/null || true
  trap - EXIT
}

setup() {
  lock
  if [[ -n "${LMLAB_PYTHON:-}" ]]; then
    PY="$LMLAB_PYTHON"
  else
    PY="$ROOT/.venv/bin/python"
    if [[ ! -x "$PY" ]]; then
      echo "launch.sh: creating $ROOT/.venv" >&2
      python3 -m venv "$ROOT/.venv"
    fi
  fi
  # Reinstall only when pyproject.toml (or LMLAB_PIP_EXTRA) changed since the last install into this interpreter.
  local stamp; stamp="$("$PY" -c 'import sys; print(sys.prefix)')/.lmlab-installed"
  local want; want="$(cat "$ROOT/pyproject.toml")"
  if [[ -n "${LMLAB_PIP_EXTRA:-}" ]]; then want+=$'\n'"# extra: $LMLAB_PIP_EXTRA"; fi
  if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "$want" ]]; then
    echo "launch.sh: installing lmlab and its dependencies into $("$PY" -c 'import sys; print(sys.prefix)')" >&2
    local log; log="$(mktemp)"
    # Build-backend chatter is noise on success; show it only if the install fails.
    # shellcheck disable=SC2086  # LMLAB_PIP_EXTRA may name several requirements
    if ! { "$PY" -m pip install --quiet --upgrade pip && "$PY" -m pip install --quiet -e "$ROOT[dev]" ${LMLAB_PIP_EXTRA:-}; } >"$log" 2>&1; then
      cat "$log" >&2; rm -f "$log"
      echo "launch.sh: installing failed (see above)" >&2
      exit 1
    fi
    rm -f "$log"
    printf '%s\n' "$want" > "$stamp"
  fi
  unlock
}

# No command, or options first (`./launch.sh --config.train.steps=50`): the main job.
cmd=main
if [[ $# -gt 0 && "$1" != -* ]]; then cmd="$1"; shift; fi
setup
case "$cmd" in
  main)
    exec "$PY" -m lmlab.cli train "$ROOT/configs/gpt_shakespeare.py" "$@" ;;
  test)
    # One worker per test file (module fixtures stay shared); most of the suite is single-threaded
    # XLA compilation, so two workers nearly halve it on a 2-core machine. LMLAB_TEST_WORKERS=0: serial.
    # The tests read configs/ and fixtures relative to the checkout: they run there.
    cd "$ROOT"
    workers="${LMLAB_TEST_WORKERS:-2}"
    if [ "$workers" = "0" ]; then exec "$PY" -m pytest "$@"; fi
    exec "$PY" -m pytest -n "$workers" --dist loadfile "$@" ;;
  setup)
    exit 0 ;;
  devices)
    exec "$PY" -c 'import json; from lmlab import parallel; print(json.dumps(parallel.topology()))' ;;
  *)
    exec "$PY" -m lmlab.cli "$cmd" "$@" ;;
esac
