#!/usr/bin/env bash
# The job queue of one GPU lease (started by session.sh launch, in its own process session).
# Two lanes, one per GPU, run their jobs in order; a job waits for the assets it needs
# (~/ready/<asset>, written by session.sh receive) and runs under its own time limit, with
# its log, exit status and wall time in ~/results/<job>/. The multi-GPU job runs last, on both.
set -u
cd ~/repo
RESULTS=${RESULTS:-$HOME/results}
export PYTHONPATH=$HOME/site:$HOME/repo/src LMPRUNE_CACHE=$HOME/cache HF_HUB_OFFLINE=1 \
  HF_DATASETS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1 \
  TOKENIZERS_PARALLELISM=false NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 \
  NVSHMEM_DISABLE_NVLS=1

job() {  # job NAME GPUS LIMIT_S NEEDS -- COMMAND...
  local name=$1 gpus=$2 limit=$3 needs=$4 waited=0
  shift 5
  local dir="$RESULTS/$name"
  mkdir -p "$dir"
  echo "waiting for: $needs" > "$dir/status"
  for need in ${needs//,/ }; do
    [ "$need" = "-" ] && continue
    while [ ! -f "$HOME/ready/$need" ]; do
      sleep 5; waited=$((waited + 5))
      if [ "$waited" -gt 1200 ]; then echo "skipped: $need never arrived" > "$dir/status"; return; fi
    done
  done
  echo "running on GPU $gpus since $(date +%T)" > "$dir/status"
  local start=$(date +%s)
  OUT=$dir CUDA_VISIBLE_DEVICES=$gpus timeout "$limit" "$@" > "$dir/log.txt" 2>&1
  local rc=$?
  echo "done rc=$rc in $(( $(date +%s) - start )) s (limit $limit s)" > "$dir/status"
  echo "$(date +%T) $name: rc=$rc"
}

GPUS=$(nvidia-smi -L 2>/dev/null | wc -l)
G1=$([ "$GPUS" -ge 2 ] && echo 1 || echo 0)  # one GPU: both lanes share it

# Jobs that time things run alone on their GPU (multigpu, speed, mpnet); the accuracy jobs
# (ablations, llm quality) share GPU 1, whose time columns are therefore not comparable.
# Every job keeps its working files under $RESULTS, so `session.sh collect` brings home
# whatever has finished at any moment (models excluded), also of a job cut by its limit.
# SPEED_SECTIONS, SPREAD (multigpu's spread part: 0 when its results exist) choose parts.
lane0() {  # mpnet first (issue 11's missing benchmark), then the speed sections
  for seed in 0 1 2; do
    job "mpnet-seed$seed" 0 270 mpnet -- env BUDGET=255 BENCH=$RESULTS/bench_base_seed$seed \
      bash benchmarks/apt_base/device_run.sh --set all:seed=$seed
  done
  job speed 0 $((${SPEED_BUDGET:-220} + 100)) - -- env BUDGET=${SPEED_BUDGET:-220} \
    bash benchmarks/speed/device_run.sh \
    --sections "${SPEED_SECTIONS:-encoder,micro,llama7b,smollm2,evidence}"
}

lane1() {
  local budget=${ACCURACY_BUDGET:-1000}
  job ablate-apt "$G1" $((budget + 60)) env -- env PLANS=apt BUDGET=$budget JOBS=${APT_JOBS:-3} \
    ABLATIONS=$RESULTS/ablations bash benchmarks/ablations/device_run.sh &
  job ablate-ri "$G1" $((budget + 60)) env,smol -- env PLANS=sublayer-ri BUDGET=$budget \
    ABLATIONS=$RESULTS/ablations bash benchmarks/ablations/device_run.sh &
  job ablate-ada "$G1" $((budget + 60)) env,smol -- env PLANS=adapruner BUDGET=$budget \
    ABLATIONS=$RESULTS/ablations bash benchmarks/ablations/device_run.sh &
  job llm "$G1" 660 env,smol -- env ROWS_BUDGET=480 BUDGET=600 BENCH=$RESULTS/llm-bench \
    RESUME_FROM=${LLM_RESUME_FROM:-benchmarks/llm_offline/results/h200-2026-11-28/results.json} \
    bash benchmarks/llm_offline/device_run.sh &
  wait
}

echo "$(date +%T) queue started on $GPUS GPU(s)"
if [ "$GPUS" -ge 2 ] && [ -f benchmarks/multigpu/device_run.sh ]; then
  job multigpu 0,1 300 env -- env DP=${DP:-1} SPREAD=${SPREAD:-1} DP_BATCHES="${DP_BATCHES:-256}" \
    bash benchmarks/multigpu/device_run.sh  # first
fi
lane0 & lane1 & wait
echo "$(date +%T) queue finished"
