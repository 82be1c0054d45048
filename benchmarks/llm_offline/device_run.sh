#!/usr/bin/env bash
# benchmarks/llm_offline on the lent GPU machine: the whole comparison in one command.
#
# Needs the model staged first (benchmarks/llm_offline/stage_model.py; its docstring and
# README.md here give the calls) and the wheels of the packages the machine lacks in .whl/
# (datasets and optuna with their missing dependencies; installed once into ~/site).
# Extra arguments go to run.py. Rows done stay in ~/bench while the machine is warm, and a
# results.json carried in .stage/bench/ is resumed from on a fresh machine.
set -u
if [ -d .whl ] && [ ! -d ~/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target ~/site .whl/*.whl
fi
MODEL=${MODEL:-$HOME/stage/smollm2/model}
if [ ! -f "$MODEL/model.safetensors" ]; then
  echo "no staged model at $MODEL: run stage_model.py unpack for every part first"; exit 1
fi
mkdir -p ~/bench
if [ -f .stage/bench/results.json ] && [ ! -f ~/bench/results.json ]; then
  cp -r .stage/bench/. ~/bench/
fi
export PYTHONPATH=~/site:$PWD/src LMPRUNE_CACHE=~/cache HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
set -o pipefail
timeout "${BUDGET:-570}" python3 benchmarks/llm_offline/run.py --model "$MODEL" --out ~/bench \
  --jobs "${JOBS:-3}" --time-budget "${ROWS_BUDGET:-450}" --quiet "$@" 2>&1 \
  | grep -v "it/s\]\|it\]$\|Generating\|Passed an\|not of type\|Writing model shards" | tee ~/bench/log.txt
status=$?
cp ~/bench/results.json ~/bench/results.md ~/bench/adapruner_histories.json \
  ~/bench/adapruner_search.png ~/bench/log.txt "$OUT"/ 2>/dev/null
exit $status
