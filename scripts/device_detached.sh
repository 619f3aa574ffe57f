#!/usr/bin/env bash
# Issue 8 on a multi-GPU machine: skyformer-protocol sweeps that outlive one call.
#
# A call may run 10 minutes, a machine stays held up to 30 while calls follow each other,
# so sweeps start detached (one chain per GPU, each with its own ordered jobs) and later
# calls wait for them and collect what finished. Everything lives under /tmp/repro on the
# machine; data sources are copied to /tmp/src/<name> so a run's config (and its hash,
# which resumption keys on) names the same source in every call and every session.
#
#   bash scripts/device_detached.sh prepare TASK [SOURCE|-] [--set data.K=V ...]
#       prepare TASK's data in the foreground (a no-op once it exists). Detached, it generates
#       data while the next calls carry and start (session 22: `setsid nohup bash $0 prepare
#       listops > /tmp/repro/prep_listops.txt 2>&1 < /dev/null &`, then chains that reach ListOps
#       find it ready); a chain that gets there first builds its own copy, and the cache's
#       temp-folder-then-rename keeps the two from corrupting each other.
#   bash scripts/device_detached.sh stage
#       merge every data folder carried as .carry*/<name>/ into /tmp/src/<name> (files already
#       there are kept; start does this too). A source too large for one call with the tracked
#       tree travels in pieces: e.g. .carry_ct/cifar10/test.parquet in one call, then
#       .carry_cr/cifar10/train.parquet in the next, each staged into /tmp/src/cifar10.
#   bash scripts/device_detached.sh start $OUT GPU JOB [then JOB ...]
#       JOB = TASK "VARIANTS" [SOURCE|-] [--seeds N[,N]] [--jobs N] [--set K=V ...]  (SOURCE may be
#       left out for generated data: ListOps, Pathfinder)
#       prepare the first job's data, then start one detached chain on GPU that runs the
#       jobs' sweeps one after the other (seed 0 unless --seeds; --jobs N runs N of a job's runs
#       at once on the GPU, the sweep's --jobs-per-gpu, default 1); a chain started on a GPU that
#       has one already waits for it first (each chain step prepares its data first, a no-op
#       when it exists). --set goes to the sweep (and, for data.* keys, to prepare).
#       Archives .carry*/run_*.tgz from an earlier call or session are unpacked first (never over a live run),
#       so their runs resume from their checkpoints. Each chain runs from its own snapshot of the
#       code ($R/code/<chain>), so the next call's copy of the working tree cannot break it. Every
#       job's sweep is checked with --dry-run first: a bad task, variant or --set starts nothing.
#   bash scripts/device_detached.sh wait $OUT SECONDS
#       wait until every chain has ended or SECONDS have passed (never longer), printing
#       progress each minute, then pack: $OUT/records.tgz (finished runs, no checkpoints) and one
#       $OUT/run_<task>_<variant>_<hash>.tgz per unfinished run (with its checkpoint, copied
#       before its curve, so the curve reaches at least the checkpoint's step).
#       Prefer several waits of ~300 s to one long one: a machine that stops answering mid-call
#       returns nothing (session 16 lost a 560 s wait's four chains that way), while each
#       finished wait leaves checkpoints here that a fresh machine resumes (copy them into .carry/).
# $LRA_REPRO (default /tmp/repro) and $LRA_DATA (default /tmp/lra_data) move the work and data
# folders (tests/scripts/test_device_detached.py runs it on the CPU that way).
set -uo pipefail
MODE=$1
R=${LRA_REPRO:-/tmp/repro}
export PYTHONUNBUFFERED=1 LRA_DATA=${LRA_DATA:-/tmp/lra_data} PYTHONPATH=$PWD
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$R/logs" "$R/runs"

# merge_into SRC_DIR DEST_DIR: copy SRC_DIR's files that DEST_DIR lacks (never overwrites)
merge_into() {
  local f
  (cd "$1" && find . -type f) | while read -r f; do
    [ -e "$2/$f" ] || { mkdir -p "$(dirname "$2/$f")" && cp "$1/$f" "$2/$f"; } || exit 1
  done
}
stage_sources() {
  local d
  for d in .carry*/*/; do [ -d "$d" ] && { merge_into "$d" "/tmp/src/$(basename "$d")" || exit 1; }; done
  return 0
}

# job_cmds TASK VARIANTS [SOURCE|-] [--set K=V ...] -> two shell lines: prepare, sweep
job_cmds() {
  local task=$1 variants=$2 src=-; shift 2
  case ${1:-} in --*|"") ;; *) src=$1; shift ;; esac  # no SOURCE (generated data) when options follow
  local prep=() sweep=() seeds=0 jobs=1
  if [ "$src" != - ]; then
    local name; name=$(basename "$src")
    [ -d "$src" ] && { merge_into "$src" "/tmp/src/$name" || exit 1; }
    prep=(--source "/tmp/src/$name"); sweep=(--source "$task=/tmp/src/$name")
  fi
  while [ $# -gt 0 ]; do
    case $1 in
      --seeds) seeds=$2 ;;
      --jobs) jobs=$2 ;;
      --set) sweep+=(--set "$2"); case $2 in data.*) prep+=(--set "${2#data.}") ;; esac ;;
      *) echo "unexpected argument $1" >&2; exit 2 ;;
    esac
    shift 2
  done
  printf 'python -m cli data prepare %q -p skyformer' "$task"; [ ${#prep[@]} -gt 0 ] && printf ' %q' "${prep[@]}"
  printf ' --no-progress 2>&1 | tail -1\n'
  printf 'python -m cli sweep --tasks %q --attention %q --seeds %q --protocol skyformer --jobs-per-gpu %q --out %q --no-progress' \
    "$task" "$variants" "$seeds" "$jobs" "$R/runs"; [ ${#sweep[@]} -gt 0 ] && printf ' %q' "${sweep[@]}"
  printf '\n'
}

if [ "$MODE" = prepare ]; then
  shift; t0=$(date +%s)
  eval "$(job_cmds "$1" - "${@:2}" | head -1)" || { echo "$1 data failed" >&2; exit 1; }
  echo "$1 data ready in $(( $(date +%s) - t0 )) s"
  exit 0
fi

if [ "$MODE" = stage ]; then
  stage_sources; for d in /tmp/src/*/; do [ -d "$d" ] && echo "$d: $(ls "$d" | tr '\n' ' ')"; done
  exit 0
fi

if [ "$MODE" = start ]; then
  O=$2; GPU=$3; shift 3; mkdir -p "$O"
  stage_sources
  for f in .carry*/run_*.tgz; do [ -f "$f" ] && tar xzf "$f" -C "$R" --skip-old-files; done  # never over a live run
  # every job is checked before anything is made: its sweep's --dry-run refuses an unknown task
  # or variant, or a bad --set, with one line (session 24 named a variant by its record folder,
  # polarity-alpha3, and learnt it from the detached chain's log minutes later)
  all=(); job=()
  check() {
    local cmds out; cmds=$(job_cmds "${job[@]}") || exit 2
    out=$(eval "$(echo "$cmds" | tail -1) --dry-run" 2>&1) || {
      echo "${job[0]} \"${job[1]}\": $(echo "$out" | tail -1) (no chain started)" >&2; exit 2; }
    all+=("$cmds")
  }
  for a in "$@"; do
    if [ "$a" = then ]; then check; job=(); else job+=("$a"); fi
  done
  check
  # the first job's data in the foreground, so this call shows it
  task=${1:-}; t0=$(date +%s)
  eval "$(echo "${all[0]}" | head -1)" || { echo "$task data failed: no chain started" >&2; exit 1; }
  echo "$task data ready in $(( $(date +%s) - t0 )) s"
  name=g$GPU; n=1; while [ -e "$R/logs/$name.sh" ]; do n=$((n+1)); name=g${GPU}_$n; done
  # the chain runs from a snapshot of the code: every later call re-copies the working tree,
  # and a chain importing while that copy replaces lra/*.py fails (session 24 lost Image
  # performer's start to "cannot import name 'records' from 'lra'" that way)
  code="$R/code/$name"; rm -rf "$code"; mkdir -p "$code"
  tar cf - --exclude='./.carry*' --exclude=./.git --exclude=./.venv --exclude=./shared --exclude=./results --exclude=./docs . | tar xf - -C "$code" || {
    rm -rf "$code"; echo "copying the code to $code failed: no chain started" >&2; exit 1; }
  chain="$R/logs/$name.sh"; printf 'cd %q\nexport PYTHONPATH=%q\n' "$code" "$code" > "$chain"
  # a GPU that already has a chain: this one waits for it (appended jobs, one run at a time)
  for p in "$R"/logs/g"$GPU".pid "$R"/logs/g"$GPU"_*.pid; do
    [ -f "$p" ] && echo "while kill -0 $(cat "$p") 2>/dev/null; do sleep 5; done" >> "$chain"
  done
  printf '%s\n' "${all[@]}" >> "$chain"
  CUDA_VISIBLE_DEVICES=$GPU setsid nohup bash "$chain" > "$R/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$R/logs/$name.pid"
  echo "started chain $name on GPU $GPU (pid $!):"; grep sweep "$chain" | cut -c1-200
  exit 0
fi

if [ "$MODE" = wait ]; then
  O=$2; SECS=$3; t0=$(date +%s); mkdir -p "$O"
  alive() { for p in "$R"/logs/*.pid; do kill -0 "$(cat "$p")" 2>/dev/null && return 0; done; return 1; }
  # never past SECS: the call's limit kills the packing below, and nothing comes back
  last=0
  while alive; do  # checked every 5 s, so the call ends as soon as the chains do
    left=$(( SECS - ($(date +%s) - t0) )); [ "$left" -gt 0 ] || break
    sleep $(( left < 5 ? left : 5 ))
    el=$(( $(date +%s) - t0 )); [ $((el - last)) -ge 60 ] || { alive && [ "$el" -lt "$SECS" ] && continue; }
    last=$el; echo "--- $el s"
    for l in "$R"/runs/*/*/*/worker.log; do  # the runs still training
      [ -f "$(dirname "$l")/result.json" ] && continue
      echo "$(basename "$(dirname "$(dirname "$l")")")/$(basename "$(dirname "$(dirname "$(dirname "$l")")")"): $(grep -E "step [0-9]+:" "$l" | tail -1 | cut -c1-150)"
    done
  done
  for l in "$R"/logs/*.log; do
    echo "=== $(basename "$l")"; grep -E "cuda graph|test|finished|diverged|failed|rror" "$l" | tail -8
  done
  cd "$R" || exit 1
  finished=(); for res in runs/*/*/*/result.json; do [ -f "$res" ] && finished+=("$(dirname "$res")"); done
  [ ${#finished[@]} -gt 0 ] && tar czf "$O/records.tgz" --exclude=checkpoint.pt --exclude='*.tmp' "${finished[@]}"
  for d in runs/*/*/*/; do
    [ -f "$d/result.json" ] && continue
    [ -f "$d/checkpoint.pt" ] || continue
    run=$(basename "$d"); variant=$(basename "$(dirname "$d")"); task=$(basename "$(dirname "$(dirname "$d")")")
    # A run still training rewrites its checkpoint and appends to metrics.jsonl while it is
    # packed (session 25: "file changed as we read it"). The checkpoint is copied first: it is
    # replaced whole (os.replace) and written after its step's metrics row, so the later copy
    # of metrics.jsonl holds every row up to the checkpoint's step. Rows past it, or a torn
    # last line, the resume drops. Taken the other way round, a checkpoint written between the
    # two reads would resume past the curve's end and leave a gap in it.
    snap="$R/pack"; rm -rf "$snap"; mkdir -p "$snap/$d" || exit 1
    cp -p "$d/checkpoint.pt" "$snap/$d/" || { rm -rf "$snap"; continue; }
    find "$d" -maxdepth 1 -type f ! -name checkpoint.pt ! -name '*.tmp' -exec cp -p {} "$snap/$d/" \;
    tar czf "$O/run_${task}_${variant}_${run##*-}.tgz" -C "$snap" "$d"
    rm -rf "$snap"
  done
  ls -la "$O"
  exit 0
fi
echo "usage: $0 prepare TASK [SOURCE|-] [--set K=V ...] | stage | start OUT GPU JOB [then JOB ...] | wait OUT SECONDS" >&2
exit 2
