#!/usr/bin/env bash
# One GPU lease for every benchmark: stage the offline models over several size-limited calls
# while the benchmarks already run in the background, then collect their results.
#
#   bash benchmarks/device/session.sh receive   # every call: take what the call carried
#   bash benchmarks/device/session.sh launch    # once: start the job queue (setsid) and return
#   bash benchmarks/device/session.sh status    # any call: what runs, what is done
#   bash benchmarks/device/session.sh collect   # last call: results into $OUT (tar parts)
#
# What travels (made here by `bash benchmarks/device/pack.sh`, one folder per call): the
# wheels the GPU image lacks plus minilm-l6 (.stage/env.0..2), SmolLM2 losslessly
# (.stage/smollm2/part0, part1: benchmarks/llm_offline/stage_model.py) and mpnet-base in bf16
# (.stage/mpnet.0..5: benchmarks/apt_base/stage.py, chunks of device/stage.py), each at most 36 MiB. The queue (queue.sh) starts each job
# when the assets it needs are ready, so compute overlaps the transfers. The machine keeps
# ~/stage, ~/site, ~/cache and ~/results only while it stays warm (30 s after a call).
set -u
cd "$(dirname "$0")/../.."
RESULTS=${RESULTS:-$HOME/results}
READY=$HOME/ready
mkdir -p "$RESULTS" "$READY" ~/stage ~/site ~/cache/models

receive() {
  STAGE=~/stage python3 benchmarks/device/stage.py receive
  if [ -f ~/stage/assets/env.ready ] && [ ! -f "$READY/env" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target ~/site \
      ~/stage/assets/env/whl/*.whl && cp -r ~/stage/assets/env/site/. ~/site/ && touch "$READY/env"
  fi
  for part in .stage/smollm2/part*; do
    [ -d "$part" ] && PYTHONPATH=src python3 benchmarks/llm_offline/stage_model.py unpack \
      "$part" ~/stage/smollm2
  done
  local smol=~/cache/models/smollm2-135m
  if [ -f ~/stage/smollm2/model/model.safetensors ] && [ ! -f "$READY/smol" ] \
      && [ -f ~/stage/assets/env/smollm2_cache.json ]; then
    rm -rf "$smol" && cp -r ~/stage/smollm2/model "$smol" \
      && cp ~/stage/assets/env/smollm2_cache.json "$smol/lmprune_cache.json" && touch "$READY/smol"
  fi
  if [ -f ~/stage/assets/mpnet.ready ] && [ ! -f "$READY/mpnet" ]; then
    mkdir -p ~/models && ln -sfn ~/stage/assets/mpnet/mpnet-base ~/models/mpnet-base \
      && touch "$READY/mpnet"
  fi
  echo "ready: $(ls "$READY" | tr '\n' ' ')"
}

launch() {
  if [ -f "$RESULTS/queue.pid" ] && kill -0 "$(cat "$RESULTS/queue.pid")" 2>/dev/null; then
    echo "queue already running (pid $(cat "$RESULTS/queue.pid"))"; return 0
  fi
  rm -rf ~/repo && mkdir -p ~/repo
  tar cf - --exclude=./.stage --exclude=./.whl --exclude=./.git --exclude=./.venv . \
    | tar xf - -C ~/repo
  setsid nohup bash ~/repo/benchmarks/device/queue.sh >"$RESULTS/queue.log" 2>&1 < /dev/null &
  echo $! > "$RESULTS/queue.pid"
  echo "queue started (pid $!); jobs: $(grep -c '^ *job ' ~/repo/benchmarks/device/queue.sh)"
}

status() {
  nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
  for f in "$RESULTS"/*/status; do [ -f "$f" ] && echo "$(basename "$(dirname "$f")"): $(cat "$f")"; done
  tail -n 5 "$RESULTS/queue.log" 2>/dev/null
}

collect() {
  local out=${OUT:-/tmp/out}
  (cd "$RESULTS/.." && tar czf - --exclude='*.safetensors' --exclude='*/model/*' --exclude='*.bin' \
     --exclude='*.pt' "$(basename "$RESULTS")") | split -b 15m -d - "$out/results.tgz.part"
  ls -la "$out"
}

case "${1:-}" in
  receive) receive ;;
  launch) launch ;;
  status) status ;;
  collect) collect ;;
  *) echo "usage: session.sh receive|launch|status|collect" >&2; exit 2 ;;
esac
