"""Kernelized attention: exact Gaussian-kernel attention, Skyformer's O(L^2) baseline
(Chen et al., NeurIPS 2021, "Skyformer: Remodel Self-Attention with Gaussian Kernel and
Nystrom Method", section "Kernelized Attention"; code ``SoftmaxAttention_RBF`` in
pkuzengqi/Skyformer ``code/models/attention.py``).

With q, k scaled by p^-1/4 (p the head dim), padded rows of q and k zeroed and padded keys
excluded,

    C_ij = exp(q_i.k_j - |q_i|^2/2 - |k_j|^2/2) = exp(-||q_i - k_j||^2 / (2 sqrt(p)))   (unscaled q, k)
    o = C v

The Skyformer paper and code use C without row normalisation: the Gaussian kernel is
bounded by 1, which the paper gives as the reason it trains more stably than softmax.
``normalize=True`` divides each row by its sum over the real keys instead, which is
softmax attention with logits -||q - k||^2 / (2 sqrt(p)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attention_zoo.linear import acc_dtype, full_precision, merge_heads, split_heads
from attention_zoo.registry import register


def gaussian_logits(x: Tensor, y: Tensor) -> Tensor:
    """-||x_i - y_j||^2 / 2 for (..., N, D) and (..., M, D) -> (..., N, M), clipped at <= 0."""
    sq_x = (x * x).sum(-1, keepdim=True) / 2  # (..., N, 1)
    sq_y = (y * y).sum(-1, keepdim=True).transpose(-1, -2) / 2  # (..., 1, M)
    return (x @ y.transpose(-1, -2) - sq_x - sq_y).clamp_max(0.0)


def kernelized_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, normalize: bool = False) -> Tensor:
    """Exact Gaussian-kernel attention. q, k, v (B, H, L, D) unscaled; returns (B, H, L, D)."""
    scale = q.shape[-1] ** -0.25
    keep = mask[:, None, :, None]
    q, k, v = (t.masked_fill(~keep, 0.0) for t in (q * scale, k * scale, v))
    logits = gaussian_logits(q, k)  # (B, H, L, L)
    real_keys = mask[:, None, None, :]
    if normalize:
        p = torch.softmax(logits.masked_fill(~real_keys, torch.finfo(logits.dtype).min), dim=-1)
    else:
        p = torch.exp(logits)
    return torch.where(real_keys, p, 0.0) @ v


@dataclass(frozen=True)
class KernelizedHP:
    normalize: bool = False
    qkv_bias: bool = True


@register("kernelized", KernelizedHP, time="O(L^2 D)", memory="O(L^2)")
class KernelizedAttention(nn.Module):
    """Kernelized attention (Skyformer's baseline): exact Gaussian kernel
    exp(-||q - k||^2 / (2 sqrt(d))) times v, without (default) or with row normalisation."""

    def __init__(self, dim: int, heads: int, max_len: int, hp: KernelizedHP) -> None:
        super().__init__()
        self.heads, self.normalize = heads, hp.normalize
        self.qkv = nn.Linear(dim, 3 * dim, bias=hp.qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, L, D)
        with full_precision(x):
            acc = acc_dtype(q)
            o = kernelized_attention(q.to(acc), k.to(acc), v.to(acc), mask, self.normalize)
        return self.proj(merge_heads(o.to(v.dtype)))
