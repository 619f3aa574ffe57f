"""Profile one skyformer text training step (batch 32, L=4000) per variant on CUDA.

python scripts/profile_text_step.py softmax polarity  -> median step ms (CUDA events) and the
top CUDA kernels / host time from torch.profiler, to see where a step's time goes.
"""

import statistics
import sys

import torch
import torch.nn.functional as F

from lra import protocols
from lra.bench import time_fn
from lra.model import Classifier

dev = torch.device("cuda")
for spec in sys.argv[1:] or ["softmax", "polarity"]:
    cfg = protocols.resolve("text", "skyformer", spec, overrides={"data.seq_len": 4000})
    model = Classifier(cfg.model, 257, 4000, 2).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(1, 257, (32, 4000), device=dev)
    y = torch.randint(0, 2, (32,), device=dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    ms = statistics.median(time_fn(step, dev, 5, 30))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    print(f"== {spec}: median step {ms:.3f} ms")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))
