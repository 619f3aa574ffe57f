"""Same-machine A/B of the polarity op's host path: the current module against an older
copy of triton.py (path given), fwd+bwd through autograd (do_bench median, cold L2) and as
a CUDA-graph replay, at the text shape and a small one. Alternates A/B/A/B.

python scripts/host_ab.py OLD_TRITON_PY [--json OUT]
"""

import argparse
import importlib.util
import json

import torch

from attention_zoo.kernels.polarity import triton as new
from lra.bench_kernels import _inputs, _median_graph_ms, _median_ms, host_us_per_call

parser = argparse.ArgumentParser()
parser.add_argument("old")
parser.add_argument("--json", default=None)
args = parser.parse_args()
spec = importlib.util.spec_from_file_location("old_triton", args.old)
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)

rows = []
for shape in [(32, 2, 4096, 32), (2, 16, 1024, 64)]:
    q, k, v, power, do = _inputs(shape, torch.bfloat16)
    leaves = [t.requires_grad_() for t in (q, k, v, power)]
    for rep in range(2):
        for name, mod in (("old", old), ("new", new)):
            fn = lambda: torch.autograd.grad(mod.polarity_attention(*leaves), leaves, do)  # noqa: E731
            fn()
            row = {"shape": "x".join(map(str, shape)), "code": name, "rep": rep,
                   "fwd_bwd_ms": _median_ms(fn), "graph_fwd_bwd_ms": _median_graph_ms(fn, 50),
                   "host_us_per_call": host_us_per_call(fn, 300, warmup=20)}
            rows.append(row)
            print(json.dumps(row))
if args.json:
    with open(args.json, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
