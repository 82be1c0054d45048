#!/usr/bin/env bash
# Runs one slice of run.py on the lent GPU machine (see README.md here): installs the carried
# wheels once, points lmprune at the staged SmolLM2 GGUF, runs, copies the results to $OUT.
set -u
if [ ! -d ~/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target ~/site .stage/w/*.whl
fi
export PYTHONPATH=~/site:~/stage/site:$PWD/src LMPRUNE_CACHE=~/cache HF_HUB_OFFLINE=1 \
  TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
timeout "${BUDGET:-480}" python3 benchmarks/llm_offline/run.py --out ~/bench "$@" 2>&1 \
  | grep -v "it/s\]\|it\]$\|Generating\|Passed an\|not of type"
cp ~/bench/results.json ~/bench/results.md "$OUT"/ 2>/dev/null
exit 0
