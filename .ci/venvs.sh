#!/usr/bin/env bash
# Creates (or refreshes) the three test environments .venv-a1111, .venv-forge and .venv-newest. Idempotent; quick
# when done (the newest one asks the package index for newer releases every time: that is its point).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
make_env() {  # name, extras, pip arguments...
  local name=$1 extras=$2
  shift 2
  local venv=".venv-$name"
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "$@" -e ".[$extras]"
}
make_env a1111 test,api,ui,cli,bench,openvino -c .ci/pins-a1111.txt
make_env forge test,api,ui,cli,bench,openvino -c constraints.txt
# The newest release of everything the core, the command line and the API use, as `pip install -e ".[cli]"`
# gets them for a new user (numpy 2, Pillow 12+, huggingface_hub 1.x and later, the newest fastapi/pydantic).
# No ui extra: the gradio the page is built for (3.41-4.x) needs huggingface_hub below 1.0, so the page's tests
# skip here, as they do for anyone without gradio. The ray extra (the dataset command's tests) is here only: Ray is
# large (~0.5 GB with pyarrow and pandas), and its tests skip elsewhere with their reason.
make_env newest test,api,cli,bench,ray,openvino --upgrade --upgrade-strategy eager
