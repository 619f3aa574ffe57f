"""Exact softmax attention through ``scaled_dot_product_attention``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attention_zoo.registry import register


@dataclass(frozen=True)
class SoftmaxHP:
    qkv_bias: bool = True


@register("softmax", SoftmaxHP, time="O(L^2)", memory="O(L) (flash/memory-efficient SDPA)")
class SoftmaxAttention(nn.Module):
    """Vanilla multi-head softmax attention (SDPA picks flash / memory-efficient / math).

    The key padding mask is passed to SDPA as a boolean (B, 1, 1, L) mask.
    """

    def __init__(self, dim: int, heads: int, max_len: int, hp: SoftmaxHP) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=hp.qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, l, c = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, L, D)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, H, L, D)
        return self.proj(o.transpose(1, 2).reshape(b, l, c))
