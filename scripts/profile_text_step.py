"""Time one skyformer text training step (batch 32, L=4000) per variant on CUDA.

python scripts/profile_text_step.py [--json OUT.json] [--profile] softmax polarity

Each variant is timed twice in the same process: eager steps, and steps whose forward +
loss + backward replay from a CUDA graph (``lra/graphs.py``, what ``lra run`` uses on one
GPU). Both include gradient clipping and the AdamW step, as the training loop does.
Median step time from CUDA events; ``--profile`` adds torch.profiler's kernel table.
"""

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

from attention_zoo.registry import parse_spec
from lra import graphs, protocols
from lra.bench import time_fn
from lra.model import Classifier

parser = argparse.ArgumentParser()
parser.add_argument("variants", nargs="*", default=["softmax", "polarity"])
parser.add_argument("--json", default=None)
parser.add_argument("--profile", action="store_true")
args = parser.parse_args()

dev = torch.device("cuda")
rows = []
for spec in args.variants:
    name, hp = parse_spec(spec)
    cfg = protocols.resolve("text", "skyformer", name, hp, overrides={"data.seq_len": 4000})
    torch.manual_seed(0)
    model = Classifier(cfg.model, 257, 4000, 2).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(1, 257, (32, 4000), device=dev)
    y = torch.randint(0, 2, (32,), device=dev)

    def autocast(**kw):
        return torch.autocast("cuda", dtype=torch.bfloat16, **kw)

    def finish():
        torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
        opt.step()

    def eager_step():
        with autocast():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        finish()

    eager_ms = statistics.median(time_fn(eager_step, dev, 5, 30))
    graphed = graphs.GraphedStep(model, x, y, autocast)

    def graph_step():
        graphed(x, y)
        finish()

    graph_ms = statistics.median(time_fn(graph_step, dev, 5, 30))
    row = {"variant": spec, "eager_ms": eager_ms, "cuda_graph_ms": graph_ms, "device": torch.cuda.get_device_name()}
    rows.append(row)
    print(json.dumps(row))
    if args.profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                eager_step()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))

print("| variant | eager step ms | CUDA-graph step ms |\n|---|---|---|")
for r in rows:
    print(f"| {r['variant']} | {r['eager_ms']:.2f} | {r['cuda_graph_ms']:.2f} |")
if args.json:
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
