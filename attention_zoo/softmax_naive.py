"""Softmax attention with the L x L score matrix materialised, as LRA's vanilla Transformer.

``softmax`` goes through SDPA (flash / memory-efficient kernels, O(L) memory); this
variant builds ``Q K^T``, masks it, normalises and multiplies by ``V`` explicitly, so
its speed and peak-memory figures are those of the dense Transformer LRA measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from attention_zoo._blocks import QKVAttention, masked_attention
from attention_zoo.registry import register


@dataclass(frozen=True)
class SoftmaxNaiveHP:
    qkv_bias: bool = True


@register("softmax_naive", SoftmaxNaiveHP, time="O(L^2)", memory="O(L^2) (explicit score matrix)")
class SoftmaxNaiveAttention(QKVAttention):
    """Vanilla softmax attention with an explicit (B, H, L, L) score matrix (LRA's Transformer).

    Keys at padded positions get zero weight; the normaliser is kept in float32 under
    bf16 autocast. Parameter names match ``softmax`` (``qkv``, ``proj``).
    """

    def __init__(self, dim: int, heads: int, max_len: int, hp: SoftmaxNaiveHP) -> None:
        super().__init__(dim, heads, hp.qkv_bias)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        return masked_attention(q, k, v, mask[:, None, None, :], self.scale)  # (B, H, L, D)
