#!/usr/bin/env bash
# Runs benchmarks/apt_base/run.py on the lent GPU machine (see README.md here).
# mpnet-base travels as six bf16 chunks of <= 36 MiB (made here by stage.py: .stage/mpnet.0
# ... .stage/mpnet.5), one per call, unpacked by benchmarks/device/stage.py once all are there:
#   calls 1-5: carry .stage/mpnet.0 ... mpnet.4:           --stage
#   call 6:    carry .stage/mpnet.5 and .stage/whl_ds (the datasets wheels of .stage/whl:
#              README.md here; pip install them into ~/site first),
#              then run seed 0:                          --set all:seed=0
#   calls 7-8: seeds 1 and 2 (nothing carried):           --set all:seed=1 (2)
# The machine keeps ~/stage and ~/models only while it stays warm (30 s after a call): make
# the calls back to back. Results of a seed go to $BENCH (default ~/bench_base_seedS) and
# are copied to $OUT (results.json/.md/.csv and runs.tgz with every run's report and curve).
set -u
MODEL=~/models/mpnet-base
STAGE=~/stage python3 benchmarks/device/stage.py receive
if [ -f ~/stage/assets/mpnet.ready ]; then
  mkdir -p ~/models && ln -sfn ~/stage/assets/mpnet/mpnet-base "$MODEL"
fi
if [ "${1:-}" = "--stage" ]; then exit 0; fi
if [ ! -f "$MODEL/config.json" ]; then echo "mpnet-base is not complete on this machine: carry the missing chunks"; exit 0; fi
SEED=$(printf '%s\n' "$@" | sed -n 's/^all:seed=//p' | tail -1)
BENCH=${BENCH:-$HOME/bench_base_seed${SEED:-0}}
export PYTHONPATH=$HOME/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1 \
  TOKENIZERS_PARALLELISM=false LMPRUNE_CACHE=~/cache
timeout "${BUDGET:-540}" python3 benchmarks/apt_base/run.py --out "$BENCH" --model "$MODEL" "$@" 2>&1 \
  | grep -v "it/s\]\|it\]$\|Loading weights\|LOAD REPORT\|MISSING\|UNEXPECTED\|newly initialized\|^Key \|^---\|^Notes\|^classifier\|^pooler\|Generating\|can be ignored"
cp "$BENCH"/results.json "$BENCH"/results.md "$BENCH"/results.csv "$OUT"/ 2>/dev/null
(cd "$BENCH" && tar czf "$OUT"/runs.tgz --exclude=model */metrics.json */report.md */training_curve.png */training_cost.png 2>/dev/null)
exit 0
