"""Batches from prepared arrays with no per-batch Python work over examples.

On CUDA a split that fits lives on the GPU and batches are gathered there; on CPU the
arrays stay memory-mapped and a batch is one fancy-indexing read. Training order is a
per-epoch permutation drawn from a seeded generator, so a run is reproducible.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _to_tensor(a: np.ndarray) -> Tensor:
    if a.dtype == np.uint16:  # torch's uint16 support is thin; int32 holds every id
        a = a.astype(np.int32)
    if not a.flags.writeable:  # a memory map: torch wants memory it may write
        a = np.array(a)
    return torch.from_numpy(np.ascontiguousarray(a))


class SplitArrays:
    """One split's tokens (N, ...) and labels (N,) placed for fast gathering."""

    def __init__(self, x: np.ndarray, y: np.ndarray, device: torch.device, gpu_budget_bytes: int = 8 << 30):
        self.n = len(y)
        self.device = device
        self.on_device = device.type != "cpu" and x.nbytes <= gpu_budget_bytes
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
        self.x = _to_tensor(np.asarray(x)).to(device) if self.on_device else x  # mmap stays on disk

    def gather(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """idx: (B,) int64 on ``self.device`` -> tokens (B, ...) int64, labels (B,)."""
        if self.on_device:
            return self.x[idx].long(), self.y[idx]
        ids = idx.cpu().numpy()
        order = np.argsort(ids)  # sorted reads are sequential on a memory map
        rows = np.empty((len(ids), *self.x.shape[1:]), dtype=self.x.dtype)
        rows[order] = self.x[ids[order]]
        return _to_tensor(rows).long().to(self.device, non_blocking=True), self.y[idx]


class TrainSampler:
    """Endless shuffled batches: one permutation per epoch, moved to the device once."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device):
        self.n, self.batch_size, self.device = n, batch_size, device
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def next(self) -> Tensor:
        if self.pos + self.batch_size > len(self.perm):
            # Drop the epoch's ragged tail so every batch has the same size (as torch's drop_last).
            if self.batch_size > self.n:
                reps = -(-self.batch_size // self.n)
                self.perm = torch.cat([torch.randperm(self.n, generator=self.gen) for _ in range(reps)]).to(self.device)
            else:
                self.perm = torch.randperm(self.n, generator=self.gen).to(self.device)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm.cpu(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.perm = state["perm"].to(self.device)
        self.pos = state["pos"]


def eval_batches(n: int, batch_size: int, max_batches: int, device: torch.device, seed: int = 0):
    """Index batches over the whole split (``max_batches`` 0), or over a fixed random subset
    of ``max_batches`` batches, the same for every evaluation of a run.

    A subset must be random, not the first rows: split files can be sorted by label (the
    IMDB test split is 12,500 negatives then 12,500 positives), and the first rows would
    be one class, turning "best validation accuracy" into "most often predicts that class".
    """
    total = n if max_batches == 0 else min(n, max_batches * batch_size)
    if total == n:
        order = torch.arange(n)
    else:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:total].sort().values
    order = order.to(device)
    for start in range(0, total, batch_size):
        yield order[start : start + batch_size]
