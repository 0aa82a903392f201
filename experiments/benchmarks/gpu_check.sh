#!/usr/bin/env bash
# The GPU check: the project's training loop (run_training + LocalContext) on one GPU, bf16,
# a Qwen2.5-0.5B-shaped model at batch 8 x 1024, ZeRO-0/2/3, LoRA and ZeRO-0 compiled
# (gpu_check.py says what it measures). About 6 minutes on an H200 (an estimate: it has not
# yet run on a device), model building and reference scoring included; pass
# --setups zero0,zero2,zero3,lora to leave the compile out when device time is short.
#
# The device image has torch, transformers and peft but not DeepSpeed, polars or pydantic:
# prepare their wheels here once (experiments/benchmarks/gpu_wheels.sh writes .whl/, which git
# ignores), then run through the device tool with carry [".whl"]:
#     bash experiments/benchmarks/gpu_check.sh --out $OUT
# Smoke check on a machine without a GPU:
#     bash experiments/benchmarks/gpu_check.sh --device cpu --tiny
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=python3
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python  # the project's venv has every package
elif compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/valign-site .whl/*.whl
  export PYTHONPATH="/tmp/valign-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
exec "$PY" experiments/benchmarks/gpu_check.py "$@"
