"""Real run records of the quick protocol, made once per test session, for the tables
and figures tests.

``quick_records`` trains tiny models (1 layer, a few steps, a low learning rate so
seeds still disagree) through the real training loop and returns the runs root:

- listops (generated, 128/64/64 rows, length <= 40), 20 steps:
  softmax and polarity:alpha=3 with seeds 0 and 1, softmax_naive with seed 0 only;
- pathfinder (generated, n=120: 96/12/12 images of 32x32), 10 steps of batch 8:
  softmax and polarity:alpha=3 with seeds 0 and 1.

So the table has a row with a missing task (softmax_naive), one-seed and two-seed
cells, and no task set complete (every average is over fewer than five tasks).
About 20-30 s on one core.
"""

from __future__ import annotations

from pathlib import Path

import pytest

QUICK_TASKS = {
    "listops": {"train.steps": 20, "data.n_train": 128, "data.n_val": 64, "data.n_test": 64,
                "data.max_length": 40, "data.seq_len": 40},
    "pathfinder": {"train.steps": 10, "train.batch_size": 8, "data.n": 120},
}
QUICK_COMMON = {"model.layers": 1, "train.lr": 1e-4, "train.warmup": 2, "train.eval_every": 10}
# (task, attention, hyperparameters, seed)
QUICK_RUNS = [
    *[(task, name, hp, seed) for task in QUICK_TASKS for name, hp in (("softmax", {}), ("polarity", {"alpha": 3}))
      for seed in (0, 1)],
    ("listops", "softmax_naive", {}, 0),
]


@pytest.fixture(scope="session")
def quick_records(tmp_path_factory, _isolated_cache) -> Path:
    """Root folder of the quick-protocol run records described in this module's docstring."""
    import torch

    from lra import protocols
    from lra.train import train

    root = tmp_path_factory.mktemp("quick_runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the budget is one core; more threads only contend on shared machines
    try:
        for task, name, hp, seed in QUICK_RUNS:
            cfg = protocols.resolve(task, "quick", name, hp, seed, {**QUICK_COMMON, **QUICK_TASKS[task]})
            result = train(cfg, root, torch.device("cpu"), progress=False, log=lambda *_: None)
            assert result["status"] == "finished", result["status"]
    finally:
        torch.set_num_threads(threads)
    return root
