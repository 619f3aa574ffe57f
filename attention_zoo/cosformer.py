"""cosFormer (Qin et al., ICLR 2022, "cosFormer: Rethinking Softmax in Attention"), non-causal.

The paper's similarity is relu(q_i)^T relu(k_j) cos(pi/2 * (i - j) / M); by
cos(a - b) = cos a cos b + sin a sin b it is the dot product of the features

    phi(x_i) = [relu(x_i) cos(pi i / 2M), relu(x_i) sin(pi i / 2M)]

and o_i = sum_j s_ij v_j / max(sum_j s_ij, 1e-6), the official code's clamp
(OpenNLPLab/cosFormer ``cosformer.py``: positions i = 1..M, M = the padded length).

Choice of M (``reweight_length``): the official code uses the tensor's length, which in
a batch padded to the task length makes M the task's maximum length. Here:
  * "real" (default): M = position of the last real token (1-based), per sequence; with
    trailing padding this is the real length, so the output does not depend on how
    much padding follows;
  * "padded": M = the tensor length L (the official code, batch as given);
  * "max_len": M = the model's max_len (the official code on inputs padded to max_len).
i/M is clipped at 1 so padded positions after the last real token stay non-negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from attention_zoo.linear import acc_dtype, full_precision, kernel_linear_attention, merge_heads, split_heads
from attention_zoo.registry import register


@dataclass(frozen=True)
class CosformerHP:
    reweight_length: Literal["real", "padded", "max_len"] = "real"
    eps: float = 1e-6
    qkv_bias: bool = True

    def check(self) -> None:
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")


@register("cosformer", CosformerHP, time="O(L D^2)", memory="O(L D)")
class CosformerAttention(nn.Module):
    """cosFormer: relu features re-weighted by cos(pi/2 (i - j) / M), decomposed into
    cos/sin halves; normalised linear attention, non-causal."""

    def __init__(self, dim: int, heads: int, max_len: int, hp: CosformerHP) -> None:
        super().__init__()
        self.heads, self.max_len, self.eps = heads, max_len, hp.eps
        self.reweight_length = hp.reweight_length
        self.qkv = nn.Linear(dim, 3 * dim, bias=hp.qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def angles(self, mask: Tensor, dtype: torch.dtype) -> Tensor:
        """(B, L) pi/2 * min(i / M, 1) with positions i = 1..L."""
        b, l = mask.shape
        pos = torch.arange(1, l + 1, device=mask.device, dtype=dtype)  # (L,)
        if self.reweight_length == "real":
            m = (mask * pos).amax(-1).clamp_min(1)  # (B,)
        elif self.reweight_length == "padded":
            m = torch.full((b,), float(l), device=mask.device, dtype=dtype)
        else:
            m = torch.full((b,), float(self.max_len), device=mask.device, dtype=dtype)
        return math.pi / 2 * (pos[None, :] / m[:, None]).clamp_max(1.0)

    def feature_map(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, H, L, D) -> (B, H, L, 2D): [relu(x) cos(angle), relu(x) sin(angle)]."""
        a = self.angles(mask, x.dtype)[:, None, :, None]  # (B, 1, L, 1)
        r = torch.relu(x)
        return torch.cat([r * torch.cos(a), r * torch.sin(a)], dim=-1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, L, D)
        with full_precision(x):
            acc = acc_dtype(q)
            o = kernel_linear_attention(
                self.feature_map(q.to(acc), mask),
                self.feature_map(k.to(acc), mask),
                v,
                mask,
                eps=self.eps,
                clamp=True,
            )  # (B, H, L, D)
        return self.proj(merge_heads(o.to(v.dtype)))
