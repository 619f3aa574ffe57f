#!/usr/bin/env bash
# Issue 3: full-size preparation times on the GPU machine's 16 cores (ListOps 96k/2k/2k
# generated, Pathfinder-32 hard 200k generated, CIFAR-10 from .carry/cifar10) and the
# input pipeline's share of a ListOps / image step. Usage: bash scripts/device_data_prep.sh $OUT
set -uo pipefail
OUT=${1:-/tmp/out}
export PYTHONUNBUFFERED=1 LRA_DATA=/tmp/lra_data PYTHONPATH=$PWD
python -c "import os; print('cpus', os.cpu_count())"
timeout 100 python -m cli data prepare listops --no-progress 2>&1 | tail -3
timeout 100 python -m cli data prepare image --source .carry/cifar10 --no-progress 2>&1 | tail -3
for a in "listops" "listops -a polarity" "image --source .carry/cifar10" "image --source .carry/cifar10 -a polarity"; do
  timeout 60 python -m cli bench input $a 2>&1 | tr -d '\n' | tail -c 400; echo
done
timeout 330 python -m cli data prepare pathfinder --no-progress 2>&1 | tail -3
