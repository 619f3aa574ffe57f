#!/usr/bin/env bash
# Polarity kernel work on the GPU machine, in two calls (each under the 10-minute limit):
#   bash scripts/device_tune.sh a $OUT   GPU tests (bf16 subset, code paths, CUDA-graph steps),
#                                        the text step (eager and CUDA graph, softmax vs polarity),
#                                        lra bench kernels on the three target shapes + host profile
#   bash scripts/device_tune.sh b $OUT   the launch-setting / code-path sweep with correctness checks
set -uo pipefail
MODE=${1:-a}
O=${2:-/tmp/out}
mkdir -p "$O"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if [ "$MODE" = a ]; then
  {
    nvidia-smi -L; python -c "import torch, triton; print(torch.__version__, triton.__version__)"
    timeout 240 python -m pytest -q -m gpu -p no:cacheprovider tests/attention_zoo/test_polarity_triton.py \
      tests/lra/test_graphs.py -k "bf16 or code_paths or direct or graphed" 2>&1 | tail -25
    timeout 120 python scripts/profile_text_step.py --json "$O/text_step.json" softmax polarity 2>&1 | tail -6
    timeout 180 python -m lra.bench_kernels --out "$O/bench" --no-tests --lengths '' --profile 2>&1 | tail -60
  } > "$O/tune_a.log" 2>&1
  cat "$O/tune_a.log" | grep -v "^{" | tail -80
else
  {
    for i in 0 1 2 3 4 5 6 7; do
      timeout 200 python -m lra.bench_kernels --out /tmp/sw --sweep-warm $i/8 --shapes 8x16x4096x64,32x2x4096x32 > /tmp/warm$i.log 2>&1 &
    done
    wait
    tail -2 /tmp/warm*.log
    for k in all bwd_q1 bwd_k state out bwd_dq bwd_dstate; do
      timeout 75 python -m lra.bench_kernels --out "$O" --sweep-only --sweep-kernels $k --shapes 8x16x4096x64,32x2x4096x32 2>&1 | tail -2
    done
    timeout 60 python scripts/host_launch_micro.py
  } > "$O/tune_b.log" 2>&1
  grep -A 12 "torch.empty:" "$O/tune_b.log"
  python - "$O/sweep.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    cfg = "/".join(str(r.get(k, "")) for k in ("BL", "BM", "num_warps", "num_stages") if k in r)
    print(f"{r['shape']:>14} {r['kernel']:>10} {json.dumps(r.get('flags', {})):>26} {cfg:>10} {r.get('waves', ''):>3} "
          f"{r.get('ms', float('nan')):8.3f} ms  err {r.get('max_rel_err', float('nan')):.2e} ok={r.get('ok')} {r.get('error', '')[:60]}")
PY
fi
