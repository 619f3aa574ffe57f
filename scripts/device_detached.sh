#!/usr/bin/env bash
# Issue 8 on a multi-GPU machine: skyformer-protocol sweeps that outlive one call.
#
# A call may run 10 minutes, a machine stays held up to 30 while calls follow each other,
# so sweeps start detached (one per GPU, each with its own ordered list) and later calls
# wait for them and collect what finished. Everything lives under /tmp/repro on the
# machine; data sources are copied to /tmp/src/<name> so a run's config (and its hash,
# which resumption keys on) names the same source in every call and every session.
#
#   bash scripts/device_detached.sh start $OUT GPU TASK "VARIANTS" [SOURCE_DIR]
#       prepare TASK's data (once), then start a detached sweep of VARIANTS on GPU.
#       Archives .carry/run_*.tgz from an earlier call or session are unpacked first,
#       so their runs resume from their checkpoints.
#   bash scripts/device_detached.sh wait $OUT SECONDS
#       wait until every sweep has ended or SECONDS have passed, printing progress each
#       minute, then pack: $OUT/records.tgz (finished runs, no checkpoints) and one
#       $OUT/run_<task>_<variant>.tgz per unfinished run (with its checkpoint).
set -uo pipefail
MODE=$1; O=$2
R=/tmp/repro
export PYTHONUNBUFFERED=1 LRA_DATA=/tmp/lra_data PYTHONPATH=$PWD
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$R/logs" "$R/runs" "$O"

if [ "$MODE" = start ]; then
  GPU=$3; TASK=$4; VARIANTS=$5; SRC=${6:-}
  PREP=(); SWEEP=()
  if [ -n "$SRC" ]; then
    name=$(basename "$SRC")
    [ -d "/tmp/src/$name" ] || { mkdir -p /tmp/src && cp -r "$SRC" "/tmp/src/$name"; }
    PREP=(--source "/tmp/src/$name"); SWEEP=(--source "$TASK=/tmp/src/$name")
  fi
  for f in .carry/run_"$TASK"_*.tgz; do [ -f "$f" ] && tar xzf "$f" -C "$R"; done
  t0=$(date +%s)
  python -m cli data prepare "$TASK" -p skyformer "${PREP[@]}" --no-progress 2>&1 | tail -1
  echo "$TASK data ready in $(( $(date +%s) - t0 )) s"
  tag="g${GPU}_${TASK}"
  # All sweeps share one runs root (one folder per run); each GPU works through its own list.
  CUDA_VISIBLE_DEVICES=$GPU setsid nohup python -m cli sweep --tasks "$TASK" --attention "$VARIANTS" --seeds 0 \
    --protocol skyformer --jobs-per-gpu 1 --out "$R/runs" --no-progress "${SWEEP[@]}" \
    > "$R/logs/$tag.log" 2>&1 < /dev/null &
  echo $! > "$R/logs/$tag.pid"
  echo "started $tag: $VARIANTS (pid $!)"
  exit 0
fi

if [ "$MODE" = wait ]; then
  SECS=$3; t0=$(date +%s)
  alive() { for p in "$R"/logs/*.pid; do kill -0 "$(cat "$p")" 2>/dev/null && return 0; done; return 1; }
  while alive && [ $(( $(date +%s) - t0 )) -lt "$SECS" ]; do
    sleep 60
    echo "--- $(( $(date +%s) - t0 )) s"
    for l in "$R"/logs/*.log; do
      echo "$(basename "$l"): $(grep -E "step [0-9]+:|finished|failed|diverged" "$l" | tail -1 | cut -c1-150)"
    done
  done
  for l in "$R"/logs/*.log; do
    echo "=== $(basename "$l")"; grep -E "cuda graph|test|finished|diverged|failed|error" "$l" | tail -8
  done
  cd "$R" || exit 1
  finished=(); for res in runs/*/*/*/result.json; do [ -f "$res" ] && finished+=("$(dirname "$res")"); done
  [ ${#finished[@]} -gt 0 ] && tar czf "$O/records.tgz" --exclude=checkpoint.pt --exclude='*.tmp' "${finished[@]}"
  for d in runs/*/*/*/; do
    [ -f "$d/result.json" ] && continue
    [ -f "$d/checkpoint.pt" ] || continue
    task=$(basename "$(dirname "$(dirname "$d")")"); variant=$(basename "$(dirname "$d")")
    tar czf "$O/run_${task}_${variant}.tgz" "$d"
  done
  ls -la "$O"
  exit 0
fi
echo "usage: $0 start OUT GPU TASK VARIANTS [SOURCE] | wait OUT SECONDS" >&2
exit 2
