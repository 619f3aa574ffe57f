"""Helpers shared by the softmax-family variants (naive, local, sparse, longformer,
bigbird, sinkhorn, reformer, informer, linformer, synthesizer). Registers no variant.

Every helper keeps the softmax normaliser in float32 when the inputs are half
precision (bf16 autocast) and in the inputs' own dtype otherwise, so the float64
tests run in float64 end to end.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype softmax sums are kept in: float32 for half types, else unchanged."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def masked_softmax(scores: Tensor, allowed: Tensor | None) -> Tensor:
    """Softmax over the last axis counting only ``allowed`` entries, in ``acc_dtype``.

    A row with nothing allowed gets all-zero weights (not NaN), with finite gradients.
    """
    s = scores.to(acc_dtype(scores.dtype))
    if allowed is not None:
        s = s.masked_fill(~allowed, float("-inf"))
    mx = s.amax(-1, keepdim=True).detach()
    mx = mx.masked_fill(~torch.isfinite(mx), 0.0)
    p = torch.exp(s - mx)
    den = p.sum(-1, keepdim=True)
    return p / den.clamp_min(torch.finfo(p.dtype).tiny)


def masked_logsumexp(scores: Tensor, allowed: Tensor | None) -> Tensor:
    """log sum exp over the allowed entries of the last axis (-inf for an empty row)."""
    s = scores.to(acc_dtype(scores.dtype))
    if allowed is not None:
        s = s.masked_fill(~allowed, float("-inf"))
    mx = s.amax(-1, keepdim=True).detach()
    mx = mx.masked_fill(~torch.isfinite(mx), 0.0)
    den = torch.exp(s - mx).sum(-1, keepdim=True)
    lse = torch.log(den.clamp_min(torch.finfo(den.dtype).tiny)) + mx  # finite gradient for empty rows
    return lse.masked_fill(den == 0, float("-inf")).squeeze(-1)


def masked_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None, scale: float) -> Tensor:
    """softmax(q k^T * scale restricted to ``allowed``) v.

    q (..., M, D), k and v (..., N, D), ``allowed`` broadcastable to (..., M, N).
    """
    p = masked_softmax(torch.matmul(q, k.transpose(-1, -2)) * scale, allowed)  # (..., M, N)
    return torch.matmul(p.to(v.dtype), v)


def pad_axis(t: Tensor, length: int, dim: int, value: float | bool = 0) -> Tensor:
    """Pad ``t`` with ``value`` along ``dim`` up to ``length``."""
    extra = length - t.shape[dim]
    if extra == 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t, t.new_full(shape, value)], dim=dim)


def gather_positions(t: Tensor, idx: Tensor) -> Tensor:
    """Rows of ``t`` (B, H, N, D) at positions ``idx`` (nq, m) or per head (H, nq, m) -> (B, H, nq, m, D)."""
    if idx.dim() == 2:
        return t[:, :, idx]
    b, h, _, d = t.shape
    flat = idx.reshape(1, h, -1, 1).expand(b, h, -1, d)
    return t.gather(2, flat).view(b, h, *idx.shape[1:], d)


def gathered_attention(
    qb: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, idx: Tensor, allowed: Tensor | None, scale: float
) -> Tensor:
    """Blocked sparse attention: query block ``i`` attends to the key positions ``idx[i]``.

    qb (B, H, nq, s, D) blocked queries; k, v (B, H, N, D); key_mask (B, N) bool;
    idx (nq, m) or (H, nq, m) long key positions per query block; ``allowed``
    broadcastable to (H, nq, s, m): the static pattern (False also for duplicate or
    out-of-range slots). Returns (B, H, nq, s, D).
    """
    kb, vb = gather_positions(k, idx), gather_positions(v, idx)  # (B, H, nq, m, D)
    km = key_mask[:, idx]  # (B, nq, m) or (B, H, nq, m)
    km = km[:, None, :, None, :] if idx.dim() == 2 else km[:, :, :, None, :]
    ok = km if allowed is None else km & allowed
    return masked_attention(qb, kb, vb, ok, scale)


class QKVAttention(nn.Module):
    """Base for variants with one fused q/k/v projection and an output projection.

    Parameter names (``qkv``, ``proj``) match ``softmax`` so weights can be copied.
    Subclasses implement ``attend(q, k, v, mask) -> (B, H, L, D)``.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, l, c = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v  # (B, H, L, D) each

    def merge(self, o: Tensor) -> Tensor:
        b, h, l, d = o.shape
        return self.proj(o.transpose(1, 2).reshape(b, l, h * d))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q, k, v = self.split(x)
        return self.merge(self.attend(q, k, v, mask))
