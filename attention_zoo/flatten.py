"""Focused linear attention (FLatten Transformer, Han et al., ICCV 2023), adapted to 1-D sequences.

Follows the released layer (LeapLabTHU/FLatten-Transformer, ``FocusedLinearAttention`` in
``models/flatten_pvt.py``):

    k <- k + pos                                   (learned key position table, zero init)
    x <- (relu(x) + 1e-6) / softplus(s)            (s: learned (C,) scale, zero init)
    phi(x) = f_p(x) = ||x|| * x^p / ||x^p||        (focusing factor p = 3; norms over all C
                                                    channels, as the released code takes them
                                                    before splitting heads)
    o_i = phi(q_i)^T (K^T V / n) / (phi(q_i)^T mean_j phi(k_j) + 1e-6)   per head
    o  <- o + DWC(v)                                (depthwise conv, kernel 5, shared by heads)

n is the number of real keys; padded keys and values are zeroed. FLatten released no LRA
code, so two choices here are ours: the depthwise convolution is a 1-D convolution over
the length axis (the released code's Conv2d(head_dim, head_dim, 5, groups=head_dim) over
the H x W grid), and the key position table has the task's maximum length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attention_zoo.linear import acc_dtype, full_precision, kernel_linear_attention, merge_heads, split_heads
from attention_zoo.registry import register


@dataclass(frozen=True)
class FlattenHP:
    focusing_factor: float = 3.0
    kernel_size: int = 5
    qkv_bias: bool = True

    def check(self) -> None:
        if self.focusing_factor <= 0:
            raise ValueError(f"focusing_factor must be > 0, got {self.focusing_factor}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {self.kernel_size}")


@register("flatten", FlattenHP, time="O(L D^2)", memory="O(L D)")
class FlattenAttention(nn.Module):
    """Focused linear attention (FLatten): relu features sharpened by the focusing function
    f_p, learned scale and key positions, normalised linear attention plus a depthwise conv on v."""

    def __init__(self, dim: int, heads: int, max_len: int, hp: FlattenHP) -> None:
        super().__init__()
        d = dim // heads
        self.heads, self.p = heads, hp.focusing_factor
        self.qkv = nn.Linear(dim, 3 * dim, bias=hp.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))  # added to k only
        self.dwc = nn.Conv1d(d, d, hp.kernel_size, padding=hp.kernel_size // 2, groups=d)

    def feature_map(self, x: Tensor) -> Tensor:
        """(B, L, C) -> (B, L, C): f_p((relu(x) + 1e-6) / softplus(scale))."""
        x = (torch.relu(x) + 1e-6) / F.softplus(self.scale.to(x.dtype))
        xp = x**self.p
        return xp * (x.norm(dim=-1, keepdim=True) / xp.norm(dim=-1, keepdim=True))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, l, c = x.shape
        h, d = self.heads, c // self.heads
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, L, C) each
        k = k + self.pos[:, :l]
        v = v.masked_fill(~mask[..., None], 0.0)  # padded values never reach the conv
        with full_precision(x):
            acc = acc_dtype(q)
            o = kernel_linear_attention(
                split_heads(self.feature_map(q.to(acc)), h),
                split_heads(self.feature_map(k.to(acc)), h),
                split_heads(v, h),
                mask,
                eps=1e-6,
                mean=True,
            )  # (B, H, L, D)
        conv = self.dwc(split_heads(v, h).reshape(b * h, l, d).transpose(1, 2))  # (B*H, D, L)
        o = o.to(v.dtype) + conv.transpose(1, 2).reshape(b, h, l, d)
        return self.proj(merge_heads(o))
