#!/usr/bin/env bash
# Issue 8 on the GPU machine: skyformer-protocol runs (full steps) of one task for some
# variants, resumable across calls. Run records (with checkpoints) travel as one archive:
# .carry/runs.tgz in (if present), $OUT/runs.tgz out.
# Usage: bash scripts/device_reproduce.sh $OUT TASK "VARIANTS" JOBS_PER_GPU SECONDS [SOURCE_PATH]
set -uo pipefail
O=$1; TASK=$2; VARIANTS=$3; JOBS=$4; SECS=$5; SRC=${6:-}
PREP=(); SWEEP=()
[ -n "$SRC" ] && PREP=(--source "$SRC") && SWEEP=(--source "$TASK=$SRC")
export PYTHONUNBUFFERED=1 LRA_DATA=/tmp/lra_data PYTHONPATH=$PWD
mkdir -p runs
[ -f .carry/runs.tgz ] && tar xzf .carry/runs.tgz
t0=$(date +%s)
timeout 300 python -m cli data prepare "$TASK" -p skyformer "${PREP[@]}" --no-progress 2>&1 | tail -2
echo "data ready in $(( $(date +%s) - t0 )) s"
# SIGINT first: the sweep stops its workers at their last checkpoints.
timeout -s INT -k 30 "$SECS" python -m cli sweep --tasks "$TASK" --attention "$VARIANTS" --seeds 0 \
  --protocol skyformer --jobs-per-gpu "$JOBS" --out runs --no-progress "${SWEEP[@]}" > "$O/sweep_$TASK.log" 2>&1
echo "sweep rc $?"
grep -E "cuda graph|step [0-9]+:|test|finished|diverged|failed" "$O/sweep_$TASK.log" | tail -25
tar czf "$O/runs.tgz" runs
python -m cli table --runs runs --protocol skyformer --compare polaformer --times 2>&1 | tail -20
