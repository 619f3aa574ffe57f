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
    # The Skyformer code (PolaFormer's LRA protocol) drops 0.1 of the attention probabilities
    # and computes attention in float32 under autocast; both are off by default (existing runs
    # keep their identity): ``softmax:dropout=0.1,float32=true`` is that attention.
    dropout: float = 0.0  # on the attention probabilities, training only
    float32: bool = False  # q, k, v and the attention in float32 even under autocast

    def check(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@register("softmax", SoftmaxHP, time="O(L^2)", memory="O(L) (flash/memory-efficient SDPA)")
class SoftmaxAttention(nn.Module):
    """Vanilla multi-head softmax attention (SDPA picks flash / memory-efficient / math).

    The key padding mask is passed to SDPA as a boolean (B, 1, 1, L) mask.
    """

    def __init__(self, dim: int, heads: int, max_len: int, hp: SoftmaxHP) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = hp.dropout
        self.float32 = hp.float32
        self.qkv = nn.Linear(dim, 3 * dim, bias=hp.qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, l, c = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, L, D)
        drop = self.dropout if self.training else 0.0
        if self.float32:  # as the Skyformer code: autocast off, attention in float32
            with torch.autocast(x.device.type, enabled=False):
                o = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask[:, None, None, :],
                                                   dropout_p=drop).to(q.dtype)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], dropout_p=drop)  # (B, H, L, D)
        return self.proj(o.transpose(1, 2).reshape(b, l, c))
