"""Block-local softmax attention (LRA's "Local Attention")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from attention_zoo._blocks import QKVAttention, masked_attention, pad_axis
from attention_zoo.registry import register


@dataclass(frozen=True)
class LocalHP:
    block_size: int = 50  # LRA LocalTransformerBlock default
    qkv_bias: bool = True

    def check(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")


@register("local", LocalHP, time="O(L b)", memory="O(L b)")
class LocalAttention(QKVAttention):
    """Block-local softmax attention: the sequence is cut into non-overlapping blocks of
    ``block_size`` positions (LRA: 50) and each query attends only to the keys of its own block.

    Pattern: position i may attend to j iff ``i // block_size == j // block_size``. A length
    that is not a multiple of the block is padded internally with masked keys.
    """

    def __init__(self, dim: int, heads: int, max_len: int, hp: LocalHP) -> None:
        super().__init__(dim, heads, hp.qkv_bias)
        self.block_size = hp.block_size

    def pattern(self, length: int) -> Tensor:
        """(L, L) bool: True where query i may attend to key j (before key padding)."""
        i = torch.arange(length)
        return (i[:, None] // self.block_size) == (i[None, :] // self.block_size)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        b, h, l, d = q.shape
        s = min(self.block_size, l)  # one block holding everything is the same pattern
        n = math.ceil(l / s)
        lp = n * s
        q, k, v = (pad_axis(t, lp, 2).view(b, h, n, s, d) for t in (q, k, v))  # (B, H, n, s, D)
        km = pad_axis(mask, lp, 1, False).view(b, 1, n, 1, s)
        o = masked_attention(q, k, v, km, self.scale)  # (B, H, n, s, D)
        return o.reshape(b, h, lp, d)[:, :, :l]
