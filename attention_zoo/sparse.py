"""Sparse Transformer's "fixed" attention pattern (Child et al. 2019), non-causal."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from attention_zoo._blocks import QKVAttention, gathered_attention, pad_axis
from attention_zoo.registry import register


@dataclass(frozen=True)
class SparseHP:
    block_size: int = 128  # l, LRA SparseAttention default (the paper's EnWik8 setting)
    summary: int = 32  # c, LRA SparseAttention default
    qkv_bias: bool = True

    def check(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if not 0 <= self.summary <= self.block_size:
            raise ValueError(f"summary must be in [0, block_size], got {self.summary}")


@register("sparse", SparseHP, time="O(L (l + c L / l))", memory="O(L (l + c L / l))")
class SparseAttention(QKVAttention):
    """Sparse Transformer fixed pattern, non-causal, merged into one pattern for all heads.

    With block ``l`` and ``c`` summary positions, query i may attend to key j iff
    ``i // l == j // l`` (its own block, paper's A(1)) or ``j mod l >= l - c`` (the last
    ``c`` positions of every block, paper's A(2) with t = l - c). LRA's version is causal
    (lower-triangular) and adds ``j mod l == 0`` to A(2); here neither, so every query
    sees its whole block plus every block's summary. Keys = own block + all summaries,
    gathered per block (summaries of the own block are not counted twice).
    """

    def __init__(self, dim: int, heads: int, max_len: int, hp: SparseHP) -> None:
        super().__init__(dim, heads, hp.qkv_bias)
        self.block_size, self.summary = hp.block_size, hp.summary

    def pattern(self, length: int) -> Tensor:
        """(L, L) bool: True where query i may attend to key j (before key padding)."""
        l, c = self.block_size, self.summary
        i = torch.arange(length)
        return ((i[:, None] // l) == (i[None, :] // l)) | ((i[None, :] % l) >= l - c)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        b, h, length, d = q.shape
        l, c = self.block_size, self.summary
        n = math.ceil(length / l)
        lp = n * l
        q, k, v = (pad_axis(t, lp, 2) for t in (q, k, v))
        km = pad_axis(mask, lp, 1, False)
        dev = q.device
        own = torch.arange(lp, device=dev).view(n, l)  # (n, l)
        summ = own[:, l - c :].reshape(-1)  # (n c,) summary positions, block-major
        idx = torch.cat([own, summ.expand(n, -1)], dim=1)  # (n, l + n c)
        summ_block = torch.arange(n, device=dev).repeat_interleave(c)  # (n c,)
        not_own = summ_block[None, :] != torch.arange(n, device=dev)[:, None]  # (n, n c)
        allowed = torch.cat([torch.ones(n, l, dtype=torch.bool, device=dev), not_own], dim=1)
        o = gathered_attention(q.view(b, h, n, l, d), k, v, km, idx, allowed[:, None, :], self.scale)
        return o.reshape(b, h, lp, d)[:, :, :length]
