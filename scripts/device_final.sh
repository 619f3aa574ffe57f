#!/usr/bin/env bash
# Issues 5-7 on the GPU machine: one skyformer text step softmax vs polarity (Triton), the
# kernel benchmark, the LRA Table 2 speed benchmark, and sweep throughput with
# --jobs-per-gpu 1 vs 4 (8 short ListOps runs each). Usage: bash scripts/device_final.sh $OUT
set -uo pipefail
OUT=${1:-/tmp/out}
export PYTHONUNBUFFERED=1 LRA_DATA=/tmp/lra_data PYTHONPATH=$PWD
timeout 90 python scripts/profile_text_step.py softmax polarity > $OUT/profile.txt 2>&1; grep "==" $OUT/profile.txt
GRID="--tasks listops --attention softmax --seeds 0-7 --protocol skyformer --set train.steps=600 --set train.eval_every=300 --set train.warmup=60 --set data.n_train=20000 --no-progress"
timeout 60 python -m cli data prepare listops --set n_train=20000 --no-progress | head -1
for k in 1 4; do
  timeout 150 python -m cli sweep $GRID --jobs-per-gpu $k --out /tmp/sweep$k > $OUT/sweep$k.log 2>&1
  grep -iE "runs/h|runs per hour|finished" $OUT/sweep$k.log | tail -3
  cp /tmp/sweep$k/_sweeps/*.json $OUT/sweep$k.json 2>/dev/null
done
timeout 150 python -m cli bench kernels --out $OUT/kernels.json > $OUT/kernels.log 2>&1; tail -30 $OUT/kernels.log
timeout 140 python -m cli bench speed --out $OUT/speed.json > $OUT/speed.log 2>&1; tail -8 $OUT/speed.log
