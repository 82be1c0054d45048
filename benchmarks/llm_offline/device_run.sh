#!/usr/bin/env bash
# benchmarks/llm_offline on the lent GPU machine: the whole comparison in one command.
#
# Needs the model staged first (benchmarks/llm_offline/stage_model.py; its docstring and
# README.md here give the calls) and the wheels of the packages the machine lacks in .whl/
# (datasets and optuna with their missing dependencies; installed once into ~/site).
# Extra arguments go to run.py. Rows done stay in $BENCH (~/bench) while the machine is warm, and a
# results.json carried in .stage/bench/ is resumed from on a fresh machine.
set -u
if [ -d .whl ] && [ ! -d ~/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target ~/site .whl/*.whl
fi
MODEL=${MODEL:-$HOME/stage/smollm2/model}
if [ ! -f "$MODEL/model.safetensors" ]; then
  echo "no staged model at $MODEL: run stage_model.py unpack for every part first"; exit 1
fi
BENCH=${BENCH:-$HOME/bench}  # rows done stay here (per seed: BENCH/seed<s>/results.json)
mkdir -p "$BENCH"
if [ -f .stage/bench/results.json ] && [ ! -f "$BENCH"/results.json ]; then
  cp -r .stage/bench/. "$BENCH"/
fi
# RESUME_FROM=<results.json>: rows of an earlier machine (e.g. the committed
# results/h200-2026-11-28/results.json) are not run again; split per seed as --jobs keeps them
if [ -n "${RESUME_FROM:-}" ] && [ ! -f "$BENCH"/.resumed ]; then
  python3 benchmarks/llm_offline/split_seeds.py "$RESUME_FROM" "$BENCH" && touch "$BENCH"/.resumed
fi
export PYTHONPATH=~/site:$PWD/src LMPRUNE_CACHE=~/cache HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
set -o pipefail
timeout "${BUDGET:-570}" python3 benchmarks/llm_offline/run.py --model "$MODEL" --out "$BENCH" \
  --jobs "${JOBS:-3}" --time-budget "${ROWS_BUDGET:-450}" --quiet "$@" 2>&1 \
  | grep -v "it/s\]\|it\]$\|Generating\|Passed an\|not of type\|Writing model shards" | tee "$BENCH"/log.txt
status=$?
cp "$BENCH"/results.json "$BENCH"/results.md "$BENCH"/adapruner_histories.json \
  "$BENCH"/adapruner_search.png "$BENCH"/log.txt "$OUT"/ 2>/dev/null
for d in "$BENCH"/seed*; do  # the per-seed rows, also of a run cut by its time limit
  [ -f "$d/results.json" ] && mkdir -p "$OUT/$(basename "$d")" && cp "$d/results.json" "$OUT/$(basename "$d")/"
done
exit $status
