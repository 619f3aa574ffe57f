"""Informer's ProbSparse self-attention (Zhou et al. 2021), non-causal."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from attention_zoo._blocks import QKVAttention, acc_dtype, masked_attention
from attention_zoo.registry import register


@dataclass(frozen=True)
class InformerHP:
    factor: int = 5  # c in u = c * ceil(ln L), Informer's default
    n_top: int | None = None  # fixed u (and sample size) instead; the Skyformer protocol used 128
    qkv_bias: bool = True

    def check(self) -> None:
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if self.n_top is not None and self.n_top < 1:
            raise ValueError(f"n_top must be >= 1, got {self.n_top}")


@register("informer", InformerHP, time="O(L log L)", memory="O(L log L)")
class InformerAttention(QKVAttention):
    """ProbSparse attention: only the u most "active" queries attend; the rest output mean(V).

    ``u = min(L, factor * ceil(ln L))`` (or ``n_top``). Each query samples the same number
    of keys uniformly among the real (unpadded) keys, with replacement, afresh each forward;
    its sparsity measure is ``M = max_j s_ij - mean_j s_ij`` over its sample (the paper's
    M-bar; Informer's code divides the sampled sum by L instead). The u real queries with
    the largest M get exact softmax attention over all real keys; every other query gets
    the mean of V over real keys (the non-causal initial context).
    """

    def __init__(self, dim: int, heads: int, max_len: int, hp: InformerHP) -> None:
        super().__init__(dim, heads, hp.qkv_bias)
        self.factor, self.n_top = hp.factor, hp.n_top

    def n_active(self, length: int) -> int:
        u = self.n_top if self.n_top is not None else self.factor * math.ceil(math.log(length))
        return max(1, min(u, length))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        b, h, length, d = q.shape
        u = self.n_active(length)
        acc = acc_dtype(q.dtype)
        n_real = mask.sum(-1)  # (B,)
        mf = mask.to(acc)[:, None, :, None]  # (B, 1, L, 1)
        mean_v = (v.to(acc) * mf).sum(2, keepdim=True) / n_real.clamp_min(1).to(acc)[:, None, None, None]
        out = mean_v.to(v.dtype).expand(b, h, length, d)
        if u < length:
            real_first = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)  # (B, L)
            rank = (torch.rand(b, length * u, device=q.device) * n_real[:, None]).long()
            rank = torch.minimum(rank, (n_real - 1).clamp_min(0)[:, None])
            sample = real_first.gather(1, rank)  # (B, L u) sampled key positions
            with torch.no_grad():  # the selection is not differentiated
                ks = k.gather(2, sample[:, None, :, None].expand(b, h, -1, d)).view(b, h, length, u, d)
                s = torch.einsum("bhld,bhlud->bhlu", q, ks).to(acc)  # (B, H, L, u)
                m = (s.amax(-1) - s.mean(-1)).masked_fill(~mask[:, None, :], float("-inf"))  # (B, H, L)
                top = m.topk(u, dim=-1).indices  # (B, H, u)
        else:
            top = torch.arange(length, device=q.device).expand(b, h, length)
        idx = top[..., None].expand(-1, -1, -1, d)
        o_top = masked_attention(q.gather(2, idx), k, v, mask[:, None, None, :], self.scale)  # (B, H, u, D)
        return out.scatter(2, idx, o_top.to(out.dtype))
