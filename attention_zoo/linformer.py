"""Linformer attention (Wang et al. 2020): keys and values projected along the sequence."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attention_zoo._blocks import QKVAttention, masked_attention
from attention_zoo.registry import register


@dataclass(frozen=True)
class LinformerHP:
    k: int = 128  # Skyformer protocol linformer_k (LRA's JAX configs used smaller k)
    share_kv: bool = False  # one projection for keys and values (Skyformer's code shares E)
    qkv_bias: bool = True

    def check(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@register("linformer", LinformerHP, time="O(L k)", memory="O(L k)")
class LinformerAttention(QKVAttention):
    """Linformer: ``softmax(Q (E K)^T / sqrt(D)) (F V)`` with learned E, F of shape (k, max_len).

    E and F are shared by the heads and sliced to the first L columns for a length-L
    input; keys and values at padded positions are zeroed before the projection, so
    padding never enters (the k projected slots are all attended). Initialised N(0, 0.02^2)
    as Skyformer's code. With ``share_kv`` F is E.
    """

    def __init__(self, dim: int, heads: int, max_len: int, hp: LinformerHP) -> None:
        super().__init__(dim, heads, hp.qkv_bias)
        self.E = nn.Parameter(torch.randn(hp.k, max_len) * 0.02)
        self.F = None if hp.share_kv else nn.Parameter(torch.randn(hp.k, max_len) * 0.02)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        length = q.shape[2]
        keep = mask[:, None, :, None].to(k.dtype)  # (B, 1, L, 1)
        e = self.E[:, :length].to(k.dtype)
        f = e if self.F is None else self.F[:, :length].to(v.dtype)
        kp = torch.matmul(e, k * keep)  # (B, H, k, D)
        vp = torch.matmul(f, v * keep)
        return masked_attention(q, kp, vp, None, self.scale)  # (B, H, L, D)
