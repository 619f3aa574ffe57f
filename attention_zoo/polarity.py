"""PolaFormer's polarity-aware linear attention layer, adapted to 1-D sequences.

The layer follows the released PolaFormer code (``models/pola_pvt.py``) line by line;
PolaFormer released no LRA code, so two choices here are ours: the depthwise
convolution on v is a 1-D convolution (kernel 5) over the length axis, and the learned
key position table has the task's maximum length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attention_zoo.kernels.polarity import polarity_attention
from attention_zoo.registry import register


@dataclass(frozen=True)
class PolarityHP:
    alpha: float = 3.0
    kernel_size: int = 5
    qkv_bias: bool = False
    backend: Literal["auto", "triton", "torch"] = "auto"

    def check(self) -> None:
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {self.kernel_size}")


@register("polarity", PolarityHP, time="O(L D^2)", memory="O(L D)")
class PolarityAttention(nn.Module):
    """Polarity-aware linear attention (PolaFormer): relu(+-x)^p features, same- and
    opposite-sign terms on the two halves of v, learned power p in (1, 1 + alpha),
    a depthwise conv on v and a multiplicative gate."""

    def __init__(self, dim: int, heads: int, max_len: int, hp: PolarityHP) -> None:
        super().__init__()
        d = dim // heads
        if d % 2:
            raise ValueError(f"polarity needs an even head dim, got {d}")
        self.heads, self.alpha, self.backend = heads, hp.alpha, hp.backend
        self.qg = nn.Linear(dim, 2 * dim, bias=hp.qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=hp.qkv_bias)
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))  # added to k only
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))
        self.power = nn.Parameter(torch.zeros(1, heads, 1, d))
        # Shared across heads, as the released code's Conv2d(head_dim, head_dim, groups=head_dim).
        self.dwc = nn.Conv1d(d, d, hp.kernel_size, padding=hp.kernel_size // 2, groups=d)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, l, c = x.shape
        h, d = self.heads, c // self.heads
        q, g = self.qg(x).chunk(2, dim=-1)  # (B, L, C) each
        k, v = self.kv(x).chunk(2, dim=-1)
        # Parameters are float32; under autocast q, k are bf16 and must stay so (a float32
        # q would send the kernel down its slow float32 path: measured 3x slower steps).
        k = k + self.pos[:, :l].to(k.dtype)
        s = F.softplus(self.scale).to(q.dtype)
        q, k = q / s, k / s
        v = v * mask[..., None].to(v.dtype)  # padded values never reach the conv

        def heads_first(t: Tensor) -> Tensor:
            return t.view(b, l, h, d).transpose(1, 2)  # (B, H, L, D)

        p = 1 + self.alpha * torch.sigmoid(self.power)  # (1, H, 1, D)
        o = polarity_attention(
            heads_first(q), heads_first(k), heads_first(v), p.reshape(h, d), key_mask=mask, backend=self.backend
        )  # (B, H, L, D)
        conv = self.dwc(heads_first(v).reshape(b * h, l, d).transpose(1, 2))  # (B*H, D, L)
        o = o + conv.transpose(1, 2).reshape(b, h, l, d)
        o = o.transpose(1, 2).reshape(b, l, c) * g
        return self.proj(o)
