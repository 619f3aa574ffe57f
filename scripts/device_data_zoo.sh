#!/usr/bin/env bash
# Issue 3/4/6 measurements on the GPU machine (16 cores, one H100): full-size data preparation
# times, the input pipeline's share of a step, every attention layer at 1K/4K/16K, and the LRA
# Table 2 speed benchmark. Usage (repo root, imdb parquet copied to .carry/imdb):
#   bash scripts/device_data_zoo.sh $OUT
set -uo pipefail
OUT=${1:-/tmp/out}
export PYTHONUNBUFFERED=1 LRA_DATA=/tmp/lra_data PYTHONPATH=$PWD
lra() { python -m cli "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cpus', __import__('os').cpu_count())"
timeout 120 python -m cli data prepare listops --no-progress 2>&1 | tail -3
timeout 120 python -m cli data prepare text --source .carry/imdb --no-progress 2>&1 | tail -3
for a in "listops" "listops -a polarity" "text --source .carry/imdb" "text --source .carry/imdb -a polarity"; do
  timeout 60 python -m cli bench input $a 2>&1 | tr -d '\n' | tail -c 600; echo
done
timeout 200 python -m cli bench layers --out $OUT/layers.json > $OUT/layers.log 2>&1; tail -24 $OUT/layers.log
timeout 150 python -m cli bench speed --out $OUT/speed.json > $OUT/speed.log 2>&1; tail -9 $OUT/speed.log
