#!/usr/bin/env bash
# Issue 5 acceptance run on the GPU machine: every GPU test of the kernel and the CUDA-graph
# step, lra bench kernels (three target shapes + length sweep, reference and SDPA in the
# same run, eager and as CUDA-graph replays) with the host/kernel profile, the text
# training step softmax vs polarity (eager and CUDA graph), and the host launch costs.
# Usage: bash scripts/device_kernel_final.sh $OUT
set -uo pipefail
O=${1:-/tmp/out}
mkdir -p "$O"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
{
  nvidia-smi -L; python -c "import torch, triton; print(torch.__version__, triton.__version__)"
  timeout 200 python -m pytest -q -m gpu -p no:cacheprovider tests/ 2>&1 | tail -15
  timeout 100 python scripts/profile_text_step.py --json "$O/text_step.json" softmax polarity polarity:alpha=7 2>&1 | tail -6
  timeout 240 python -m lra.bench_kernels --out "$O/bench" --no-tests --profile 2>&1 | grep -v '^ *[]["{}]' | tail -40
  timeout 40 python scripts/host_launch_micro.py
} > "$O/final.log" 2>&1
grep -v '^ *[]["{}]' "$O/final.log" | tail -70
