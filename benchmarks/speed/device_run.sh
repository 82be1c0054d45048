#!/usr/bin/env bash
# The speed benchmark in one call on the GPU machine (see BENCHMARKS.md): random-weight models
# at real shapes are built on the device, nothing is carried but the repository. Results go to
# $OUT (results.json, results.md); the short table is printed last. BUDGET (seconds, default
# 420) caps the measurements; extra arguments go to run.py (e.g. --sections llama7b).
set -u
export PYTHONPATH=$PWD/src TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1 \
  TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
OUTDIR=${OUT:-benchmarks/speed/results/latest}
BUDGET=${BUDGET:-420}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null | tail -1
timeout $((BUDGET + 90)) python3 benchmarks/speed/run.py --out "$OUTDIR" --budget-s "$BUDGET" "$@" \
  2>&1 | grep -v "it/s\]\|Writing model shards\|Loading weights"
if [ -f "$OUTDIR/results.json" ] && [ ! -f "$OUTDIR/results.md" ]; then
  python3 benchmarks/speed/report.py "$OUTDIR/results.json"  # the run hit the timeout
fi
exit 0
