"""Evaluation batches: the whole split, or a fixed random subset (never the first rows)."""

from __future__ import annotations

import torch

from lra.data import eval_batches


def _indices(n, batch, max_batches, seed=0):
    return torch.cat(list(eval_batches(n, batch, max_batches, torch.device("cpu"), seed)))


def test_whole_split_in_order_when_not_capped():
    assert _indices(100, 32, 0).tolist() == list(range(100))
    assert _indices(100, 32, 10).tolist() == list(range(100))  # the cap covers the split


def test_capped_subset_is_random_fixed_and_spans_a_sorted_split():
    # A split sorted by label (as the IMDB test parquet): the first 6,400 rows would all be
    # negatives; the subset must see both classes in about their proportion.
    labels = torch.cat([torch.zeros(12500), torch.ones(12500)])
    idx = _indices(25000, 32, 200)
    assert len(idx) == 6400 and len(set(idx.tolist())) == 6400
    assert 0.45 < labels[idx].mean().item() < 0.55
    assert torch.equal(idx, _indices(25000, 32, 200))  # same rows at every evaluation
    batches = list(eval_batches(25000, 32, 200, torch.device("cpu")))
    assert all(len(b) == 32 for b in batches)
