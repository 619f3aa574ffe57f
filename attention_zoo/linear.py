"""Linear attention (Katharopoulos et al., ICML 2020, "Transformers are RNNs"), non-causal.

    phi(x) = elu(x) + 1
    o_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j) + eps),   eps = 1e-6

as in the authors' ``fast_transformers/attention/linear_attention.py`` (eps 1e-6, keys
of padded positions zeroed). The Nystromformer LRA port (``LRA/code/attention_linear.py``)
drops the denominator and scales by d^-1/4; we keep the paper's normalised form.

This module also holds the helpers every kernel ("right product") variant of the zoo
shares: head reshapes, the float32 accumulation context and the masked, normalised
linear-attention product.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attention_zoo.registry import register


def split_heads(t: Tensor, heads: int) -> Tensor:
    b, l, c = t.shape
    return t.view(b, l, heads, c // heads).transpose(1, 2)  # (B, H, L, D)


def merge_heads(t: Tensor) -> Tensor:
    b, h, l, d = t.shape
    return t.transpose(1, 2).reshape(b, l, h * d)  # (B, L, H*D)


def acc_dtype(*ts: Tensor) -> torch.dtype:
    """float64 stays float64 (tests); everything else accumulates in float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


def full_precision(x: Tensor) -> contextlib.AbstractContextManager:
    """Autocast off: running sums, normalisers and exponentials stay in float32 under bf16."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def kernel_linear_attention(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    mask: Tensor,
    *,
    eps: float = 1e-6,
    mean: bool = False,
    clamp: bool = False,
) -> Tensor:
    """Non-causal normalised linear attention over the real keys only.

        o_i = phi_q_i^T (sum_j phi_k_j v_j^T) / (phi_q_i^T sum_j phi_k_j + eps)

    Args:
        phi_q, phi_k: (B, H, L, F) non-negative features.
        v: (B, H, L, D).
        mask: (B, L) bool, True for real tokens; padded keys contribute nothing.
        mean: divide K^T V and the key sum by n, the number of real keys (FLatten's
            form, which changes only how eps weighs against the sums).
        clamp: ``max(den, eps)`` (cosFormer) instead of ``den + eps``.

    Returns (B, H, L, D) in the accumulation dtype (float32, or float64 for float64 input).
    Call it inside ``full_precision`` so autocast does not drop the products to bf16.
    """
    acc = acc_dtype(phi_q, phi_k, v)
    keep = mask[:, None, :, None]  # (B, 1, L, 1)
    phi_q = phi_q.to(acc)
    phi_k = torch.where(keep, phi_k.to(acc), 0.0)  # where, not *, so non-finite padding cannot leak
    v = torch.where(keep, v.to(acc), 0.0)
    kv = phi_k.transpose(-1, -2) @ v  # (B, H, F, D)
    ksum = phi_k.sum(dim=-2, keepdim=True).transpose(-1, -2)  # (B, H, F, 1)
    if mean:
        n = mask.sum(-1).clamp_min(1).to(acc)[:, None, None, None]  # (B, 1, 1, 1)
        kv, ksum = kv / n, ksum / n
    den = phi_q @ ksum  # (B, H, L, 1)
    den = den.clamp_min(eps) if clamp else den + eps
    return (phi_q @ kv) / den


@dataclass(frozen=True)
class LinearHP:
    eps: float = 1e-6
    qkv_bias: bool = True

    def check(self) -> None:
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")


@register("linear", LinearHP, time="O(L D^2)", memory="O(L D)")
class LinearAttention(nn.Module):
    """Linear attention (Katharopoulos et al. 2020): elu(x)+1 features, normalised, non-causal."""

    def __init__(self, dim: int, heads: int, max_len: int, hp: LinearHP) -> None:
        super().__init__()
        self.heads, self.eps = heads, hp.eps
        self.qkv = nn.Linear(dim, 3 * dim, bias=hp.qkv_bias)
        self.proj = nn.Linear(dim, dim)

    @staticmethod
    def feature_map(x: Tensor) -> Tensor:
        return F.elu(x) + 1

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, L, D)
        with full_precision(x):
            acc = acc_dtype(q)
            o = kernel_linear_attention(
                self.feature_map(q.to(acc)), self.feature_map(k.to(acc)), v, mask, eps=self.eps
            )  # (B, H, L, D)
        return self.proj(merge_heads(o.to(v.dtype)))
