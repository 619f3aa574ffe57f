"""Hedgehog (Zhang et al., ICLR 2024, "The Hedgehog & the Porcupine: Expressive Linear
Attentions with Softmax Mimicry"), non-causal.

Learnable feature map, one per head and one each for queries and keys:

    phi(x) = [softmax(x W_h + b_h), softmax(-(x W_h + b_h))]      (softmax over features)

W_h is (D, D) initialised to the identity and b_h to zero (the authors' ``HedgehogFeatureMap``:
``nn.Linear(head_dim, head_dim)`` with ``eye_``/``zeros_`` init; lolcats ``SoftmaxDim``), so
the feature dim is 2D. Output: normalised linear attention,
o_i = phi(q_i)^T sum_j phi(k_j) v_j^T / (phi(q_i)^T sum_j phi(k_j) + eps).

Not implemented: the paper's attention-distillation loss (training phi to mimic softmax
attention); here phi is trained end to end with the task loss only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attention_zoo.linear import acc_dtype, full_precision, kernel_linear_attention, merge_heads, split_heads
from attention_zoo.registry import register


@dataclass(frozen=True)
class HedgehogHP:
    eps: float = 1e-6
    qkv_bias: bool = True

    def check(self) -> None:
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")


@register("hedgehog", HedgehogHP, time="O(L D^2)", memory="O(L D)")
class HedgehogAttention(nn.Module):
    """Hedgehog: learned per-head feature map [softmax(xW+b), softmax(-(xW+b))] for q and k,
    normalised linear attention."""

    def __init__(self, dim: int, heads: int, max_len: int, hp: HedgehogHP) -> None:
        super().__init__()
        d = dim // heads
        self.heads, self.eps = heads, hp.eps
        self.qkv = nn.Linear(dim, 3 * dim, bias=hp.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        eye = torch.eye(d).repeat(heads, 1, 1)  # (H, D, D)
        self.q_weight = nn.Parameter(eye.clone())
        self.k_weight = nn.Parameter(eye.clone())
        self.q_bias = nn.Parameter(torch.zeros(heads, d))
        self.k_bias = nn.Parameter(torch.zeros(heads, d))

    def feature_map(self, x: Tensor, which: str) -> Tensor:
        """(B, H, L, D) -> (B, H, L, 2D) with the query ("q") or key ("k") map."""
        w, b = (self.q_weight, self.q_bias) if which == "q" else (self.k_weight, self.k_bias)
        # A broadcast matmul, not einsum("bhld,hde->bhle"): einsum folds B and L into one GEMM per
        # head, so the weight's gradient is H GEMMs of (D x D) output B*L deep, which cuBLAS ran as
        # H thread blocks (on an H100, 65% of a Text training step's GPU time went there:
        # docs/benchmarks.md). Here that gradient is B*H GEMMs L deep, summed over B.
        z = torch.matmul(x, w.to(x.dtype)) + b.to(x.dtype)[None, :, None, :]
        return torch.cat([torch.softmax(z, dim=-1), torch.softmax(-z, dim=-1)], dim=-1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, L, D)
        with full_precision(x):
            acc = acc_dtype(q)
            o = kernel_linear_attention(
                self.feature_map(q.to(acc), "q"), self.feature_map(k.to(acc), "k"), v, mask, eps=self.eps
            )  # (B, H, L, D)
        return self.proj(merge_heads(o.to(v.dtype)))
