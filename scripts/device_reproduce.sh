#!/usr/bin/env bash
# Issue 8 on the GPU machine: skyformer-protocol runs (full steps) of one task for some
# variants, resumable across calls. Run folders (with checkpoints) travel one archive per
# run, since $OUT returns at most 8 files of 16 MiB: .carry/run_*.tgz in (if present, name
# .carry in the call's carry), $OUT/run_<task>_<variant>.tgz out.
# Usage: bash scripts/device_reproduce.sh $OUT TASK "VARIANTS" JOBS_PER_GPU SECONDS [SOURCE_PATH]
set -uo pipefail
O=$1; TASK=$2; VARIANTS=$3; JOBS=$4; SECS=$5; SRC=${6:-}
PREP=(); SWEEP=()
[ -n "$SRC" ] && PREP=(--source "$SRC") && SWEEP=(--source "$TASK=$SRC")
export PYTHONUNBUFFERED=1 LRA_DATA=/tmp/lra_data PYTHONPATH=$PWD
mkdir -p runs
for f in .carry/run_*.tgz; do [ -f "$f" ] && tar xzf "$f"; done
t0=$(date +%s)
timeout 300 python -m cli data prepare "$TASK" -p skyformer "${PREP[@]}" --no-progress 2>&1 | tail -2
echo "data ready in $(( $(date +%s) - t0 )) s"
# SIGINT first: the sweep stops its workers at their last checkpoints.
timeout -s INT -k 30 "$SECS" python -m cli sweep --tasks "$TASK" --attention "$VARIANTS" --seeds 0 \
  --protocol skyformer --jobs-per-gpu "$JOBS" --out runs --no-progress "${SWEEP[@]}" > "$O/sweep_$TASK.log" 2>&1
echo "sweep rc $?"
grep -E "cuda graph|step [0-9]+:|test|finished|diverged|failed" "$O/sweep_$TASK.log" | tail -25
for d in runs/"$TASK"/*/*/; do
  tar czf "$O/run_${TASK}_$(basename "$(dirname "$d")").tgz" "$d"
done
python -m cli table --runs runs --protocol skyformer --compare polaformer --times 2>&1 | tail -20
