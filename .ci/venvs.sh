#!/usr/bin/env bash
# Creates (or refreshes) the two test environments .venv-a1111 and .venv-forge. Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
make_env() {  # name, pins...
  local name=$1; shift
  local venv=".venv-$name"
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "$@" -e ".[test,api,ui,cli,bench]"
}
make_env a1111 -c .ci/pins-a1111.txt
make_env forge -c constraints.txt
