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
    per_head: bool = False  # one projection per head (Skyformer's code) instead of one for all heads
    trainable: bool = True  # False: E, F stay at their random init (buffers, never trained)
    qkv_bias: bool = True

    def check(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@register("linformer", LinformerHP, time="O(L k)", memory="O(L k)")
class LinformerAttention(QKVAttention):
    """Linformer: ``softmax(Q (E K)^T / sqrt(D)) (F V)`` with E, F of shape (k, max_len).

    E and F are shared by the heads (``per_head``: one each per head) and sliced to the first
    L columns for a length-L input; keys and values at padded positions are zeroed before the
    projection, so padding never enters (the k projected slots are all attended). Initialised
    N(0, 0.02^2) as Skyformer's code. With ``share_kv`` F is E.

    ``trainable=False`` keeps E and F at that random init, a fixed Johnson-Lindenstrauss
    projection, stored as buffers (in checkpoints, never in the optimizer). It is what
    Skyformer's code trains in effect: its ``nn.Parameter(...).to(device)`` is a plain tensor
    copy, which the module does not register, so the optimizer never sees E.
    """

    def __init__(self, dim: int, heads: int, max_len: int, hp: LinformerHP) -> None:
        super().__init__(dim, heads, hp.qkv_bias)
        shape = (heads if hp.per_head else 1, hp.k, max_len)

        def projection(name: str) -> None:
            init = torch.randn(shape) * 0.02
            if hp.trainable:
                setattr(self, name, nn.Parameter(init))
            else:
                self.register_buffer(name, init)

        projection("E")
        if hp.share_kv:
            self.F = None
        else:
            projection("F")

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        length = q.shape[2]
        keep = mask[:, None, :, None].to(k.dtype)  # (B, 1, L, 1)
        e = self.E[:, :, :length].to(k.dtype)  # (1 or H, k, L): broadcast over the batch (and heads)
        f = e if self.F is None else self.F[:, :, :length].to(v.dtype)
        kp = torch.matmul(e, k * keep)  # (B, H, k, D)
        vp = torch.matmul(f, v * keep)
        return masked_attention(q, kp, vp, None, self.scale)  # (B, H, L, D)
