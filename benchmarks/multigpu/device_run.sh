#!/usr/bin/env bash
# benchmarks/multigpu on the 2-GPU machine, in about 4 minutes (README.md here):
#  (a) spread.py: a LLaMA-2-13B-shape model with random bf16 weights spread over the GPUs:
#      Taylor element1 importance, one RI step, 3 LoRA recovery steps (time, peak per GPU), and
#      the same model on one GPU: equal scores; then the 70B shape (larger than one GPU);
#  (b) dp.py: APT on a BERT-base-shape encoder, `lmprune train --num-gpus 2` vs one GPU with
#      the same global batch: throughput ratio and whether the final models agree.
# Results (spread-13b.json, spread-70b.json, dp.json, results.md) go to $OUT; the table is
# printed last. `--quick`: the same code on the CPU at tiny shapes (two gloo processes).
# Needs `datasets` for the foods task: installed from .whl/ or .stage/w/ when carried.
set -u
export NCCL_NVLS_ENABLE=0  # NVLink multicast stays off on the lent machines
QUICK=""
[ "${1:-}" = "--quick" ] && QUICK="--quick"
OUT=${OUT:-benchmarks/multigpu/results}
mkdir -p "$OUT"
if ! python3 -c "import datasets" 2>/dev/null; then
  for w in .whl .stage/w; do
    if ls "$w"/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target ~/site "$w"/*.whl && break
    fi
  done
fi
export PYTHONPATH=~/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 \
  TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
PYTHON=${PYTHON:-python3}
status=0
if [ "${SPREAD:-1}" = 1 ]; then  # SPREAD=0 / DP=0 leave out one of the two parts
  $PYTHON benchmarks/multigpu/spread.py $QUICK --shape 13b --out "$OUT" || status=1
  [ -z "$QUICK" ] && { $PYTHON benchmarks/multigpu/spread.py --shape 70b --no-check \
    --out "$OUT" || status=1; }
fi
if [ "${DP:-1}" = 1 ]; then  # DP_BATCHES: global batches (256: dp.json, B: dp-bB.json)
  for batch in ${DP_BATCHES:-256}; do
    tag=""; [ "$batch" = 256 ] || tag="-b$batch"
    $PYTHON benchmarks/multigpu/dp.py $QUICK --batch "$batch" --tag="$tag" --out "$OUT" || status=1
  done
fi
$PYTHON benchmarks/multigpu/table.py "$OUT"
exit $status
