"""Synthesizer attention (Tay et al. 2021): attention weights synthesised without (only) Q K^T."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from attention_zoo._blocks import masked_softmax
from attention_zoo.registry import register


@dataclass(frozen=True)
class SynthesizerHP:
    mode: Literal["dense", "random", "factorized_random"] = "random"  # LRA SynthesizerBlock default
    k: int = 32  # rank of factorized_random (LRA default)
    dot_product: bool = True  # also add Q K^T / sqrt(D) (LRA's block: ignore_dot_product=False)
    qkv_bias: bool = True

    def check(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@register("synthesizer", SynthesizerHP, time="O(L^2)", memory="O(L^2) (+ O(H max_len^2) params for random)")
class SynthesizerAttention(nn.Module):
    """Synthesizer: per-head logits B (L x L) synthesised from the token (dense) or learned
    outright (random), optionally plus the dot product, then ``softmax(B) V``.

    - ``dense``: ``B[i, :] = W2 relu(W1 x_i)`` per head; W1: dim -> dim split into heads,
      W2: head_dim -> max_len shared by the heads (as LRA), sliced to the first L keys.
    - ``random``: a learned (H, max_len, max_len) matrix, sliced to (L, L).
    - ``factorized_random``: ``R1 R2`` with R1 (H, max_len, k), R2 (H, k, max_len).
    With ``dot_product`` (LRA's configuration: random + vanilla) ``Q K^T / sqrt(D)`` is
    added to B. Padded keys get zero weight.
    """

    def __init__(self, dim: int, heads: int, max_len: int, hp: SynthesizerHP) -> None:
        super().__init__()
        self.heads, self.mode = heads, hp.mode
        d = dim // heads
        self.scale = 1.0 / math.sqrt(d)
        self.v = nn.Linear(dim, dim, bias=hp.qkv_bias)
        self.qk = nn.Linear(dim, 2 * dim, bias=hp.qkv_bias) if hp.dot_product else None
        self.proj = nn.Linear(dim, dim)
        if hp.mode == "dense":
            self.w1 = nn.Linear(dim, dim)
            self.w2 = nn.Linear(d, max_len)
        elif hp.mode == "random":
            bound = math.sqrt(3.0 / max_len)
            self.random = nn.Parameter(torch.empty(heads, max_len, max_len).uniform_(-bound, bound))
        else:
            bound = math.sqrt(6.0 / (max_len + hp.k))
            self.r1 = nn.Parameter(torch.empty(heads, max_len, hp.k).uniform_(-bound, bound))
            self.r2 = nn.Parameter(torch.empty(heads, hp.k, max_len).uniform_(-bound, bound))

    def synthetic(self, x: Tensor) -> Tensor:
        """The synthesised logits, (B, H, L, L) or (H, L, L)."""
        b, length, c = x.shape
        if self.mode == "dense":
            hid = torch.relu(self.w1(x)).view(b, length, self.heads, -1).transpose(1, 2)  # (B, H, L, D)
            return self.w2(hid)[..., :length]  # (B, H, L, L)
        if self.mode == "random":
            return self.random[:, :length, :length]
        return torch.matmul(self.r1[:, :length], self.r2[:, :, :length])  # (H, L, L)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, length, c = x.shape
        h = self.heads
        v = self.v(x).view(b, length, h, c // h).transpose(1, 2)  # (B, H, L, D)
        logits = self.synthetic(x)
        if self.qk is not None:
            q, k = self.qk(x).view(b, length, 2, h, c // h).permute(2, 0, 3, 1, 4)
            logits = logits + torch.matmul(q, k.transpose(-1, -2)) * self.scale
        p = masked_softmax(logits.expand(b, -1, -1, -1), mask[:, None, None, :])
        o = torch.matmul(p.to(v.dtype), v)
        return self.proj(o.transpose(1, 2).reshape(b, length, c))
