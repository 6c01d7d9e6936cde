#!/usr/bin/env bash
# lmlab launcher.
#   ./launch.sh            set up .venv if needed, then run the main job (GPT on Shakespeare)
#   ./launch.sh test       set up, then run the test suite (extra args go to pytest)
#   ./launch.sh CMD ...    set up, then run `lmlab CMD ...` (train, eval, sample, ...)
# LMLAB_PYTHON=/path/to/python uses that interpreter (e.g. one with CUDA/TPU JAX preinstalled)
# instead of creating .venv; lmlab is then installed into it in editable mode if missing.
set -euo pipefail
cd "$(dirname "$0")"

setup() {
  if [[ -n "${LMLAB_PYTHON:-}" ]]; then
    PY="$LMLAB_PYTHON"
  else
    PY=.venv/bin/python
    if [[ ! -x "$PY" ]]; then
      echo "launch.sh: creating .venv" >&2
      python3 -m venv .venv
    fi
  fi
  # Reinstall only when pyproject.toml changed since the last install into this interpreter.
  local stamp; stamp="$("$PY" -c 'import sys; print(sys.prefix)')/.lmlab-installed"
  if [[ ! -f "$stamp" ]] || ! cmp -s pyproject.toml "$stamp"; then
    echo "launch.sh: installing lmlab and its dependencies into $("$PY" -c 'import sys; print(sys.prefix)')" >&2
    local log; log="$(mktemp)"
    # Build-backend chatter is noise on success; show it only if the install fails.
    if ! { "$PY" -m pip install --quiet --upgrade pip && "$PY" -m pip install --quiet -e ".[dev]"; } >"$log" 2>&1; then
      cat "$log" >&2; rm -f "$log"
      echo "launch.sh: installing failed (see above)" >&2
      exit 1
    fi
    rm -f "$log"
    cp pyproject.toml "$stamp"
  fi
}

cmd="${1:-main}"
[[ $# -gt 0 ]] && shift
setup
case "$cmd" in
  main)
    exec "$PY" -m lmlab.cli train configs/gpt_shakespeare.py "$@" ;;
  test)
    exec "$PY" -m pytest "$@" ;;
  *)
    exec "$PY" -m lmlab.cli "$cmd" "$@" ;;
esac
