"""Sparse Sinkhorn attention (Tay et al. 2020): local blocks plus a learned block sorting."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attention_zoo._blocks import QKVAttention, acc_dtype, masked_attention, pad_axis
from attention_zoo.registry import register


@dataclass(frozen=True)
class SinkhornHP:
    block_size: int = 50  # LRA SinkhornAttention default
    n_iters: int = 7  # Sinkhorn iterations; 0 = plain row softmax (LRA's default sort_activation)
    temperature: float = 0.75
    gumbel: bool = False  # Gumbel noise on the sort logits while training (Gumbel-Sinkhorn)
    qkv_bias: bool = True

    def check(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.n_iters < 0:
            raise ValueError(f"n_iters must be >= 0, got {self.n_iters}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@register("sinkhorn", SinkhornHP, time="O(L b + (L / b)^2 b D)", memory="O(L b + (L / b)^2)")
class SinkhornAttention(QKVAttention):
    """Sparse Sinkhorn attention: each query block attends to its own block and to the
    key block that a learned, Sinkhorn-normalised sorting puts in its slot.

    Blocks of ``block_size`` (LRA: 50). Block summaries are the mean of each block's real
    keys (B, H, n, D); a sorting network (one linear layer head_dim -> max number of
    blocks, shared by the heads, sliced to the n blocks present, as LRA) maps summary i
    to logits R[i, :]. ``P = Sinkhorn(R / temperature)``: ``n_iters`` rounds of row then
    column normalisation in log space (``n_iters = 0``: a row softmax). The block sorted
    into slot i is the soft mixture ``sum_j P[i, j] K_j`` taken over real tokens only
    (position t of slot i is ``sum_j P[i,j] m[j,t] K[j,t] / sum_j P[i,j] m[j,t]``; the same
    for V), so padded keys never enter. Query block i attends to [own block, sorted slot i].
    """

    def __init__(self, dim: int, heads: int, max_len: int, hp: SinkhornHP) -> None:
        super().__init__(dim, heads, hp.qkv_bias)
        self.block_size, self.n_iters = hp.block_size, hp.n_iters
        self.temperature, self.gumbel = hp.temperature, hp.gumbel
        # No bias: Sinkhorn's column normalisation cancels a per-column offset exactly.
        self.sort_net = nn.Linear(self.head_dim, math.ceil(max_len / hp.block_size), bias=False)

    def sort_matrix(self, kb: Tensor, m: Tensor) -> Tensor:
        """Soft permutation P (B, H, n, n) from blocked keys kb (B, H, n, s, D) and real-token mask m (B, n, s)."""
        n = kb.shape[2]
        w = m.to(acc_dtype(kb.dtype))[:, None, :, :, None]  # (B, 1, n, s, 1)
        summary = (kb.to(w.dtype) * w).sum(3) / w.sum(3).clamp_min(1.0)  # (B, H, n, D)
        logits = self.sort_net(summary.to(kb.dtype))[..., :n].to(w.dtype) / self.temperature  # (B, H, n, n)
        if self.gumbel and self.training:
            u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
            logits = logits - torch.log(-torch.log(u))
        if self.n_iters == 0:
            return torch.softmax(logits, dim=-1)
        for _ in range(self.n_iters):
            logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
            logits = logits - torch.logsumexp(logits, dim=-2, keepdim=True)
        return logits.exp()

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        b, h, length, d = q.shape
        s = min(self.block_size, length)
        n = math.ceil(length / s)
        lp = n * s
        qb, kb, vb = (pad_axis(t, lp, 2).view(b, h, n, s, d) for t in (q, k, v))  # (B, H, n, s, D)
        m = pad_axis(mask, lp, 1, False).view(b, n, s)
        p = self.sort_matrix(kb, m)  # (B, H, n, n)
        mf = m.to(p.dtype)
        den = torch.einsum("bhij,bjt->bhit", p, mf)  # (B, H, n, s)
        inv_den = 1.0 / den.clamp_min(torch.finfo(p.dtype).tiny)

        def sort(t: Tensor) -> Tensor:
            num = torch.einsum("bhij,bhjtd->bhitd", p, t.to(p.dtype) * mf[:, None, :, :, None])
            return (num * inv_den[..., None]).to(t.dtype)  # (B, H, n, s, D)

        keys = torch.cat([kb, sort(kb)], dim=3)  # (B, H, n, 2 s, D)
        vals = torch.cat([vb, sort(vb)], dim=3)
        allowed = torch.cat([m[:, None].expand(b, h, n, s), den > 0], dim=-1)[:, :, :, None, :]  # (B, H, n, 1, 2 s)
        o = masked_attention(qb, keys, vals, allowed, self.scale)
        return o.reshape(b, h, lp, d)[:, :, :length]
