"""Longformer attention: sliding window plus global tokens (Beltagy et al. 2020)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attention_zoo._blocks import QKVAttention, gathered_attention, masked_attention, pad_axis
from attention_zoo.registry import register


@dataclass(frozen=True)
class LongformerHP:
    window: int = 512  # LRA sliding_window_size
    n_global: int = 1  # the first n_global positions are global (e.g. a CLS token)
    global_projections: bool = True  # separate Q/K/V for global attention, as the paper and LRA
    qkv_bias: bool = True

    def check(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.n_global < 0:
            raise ValueError(f"n_global must be >= 0, got {self.n_global}")


@register("longformer", LongformerHP, time="O(L (w + g))", memory="O(L (w + g))")
class LongformerAttention(QKVAttention):
    """Sliding-window attention with global tokens (Longformer, non-dilated, non-causal).

    Window as LRA's ``_build_sliding_window_mask``: ``window`` positions in all, the
    query itself and ``window - window // 2 - 1`` to its left, ``window // 2`` to its
    right (512 -> offsets -255..+256). The first ``n_global`` positions are global: they
    attend to every key and every query attends to them. Pattern: i may attend to j iff
    ``-(window - window // 2 - 1) <= j - i <= window // 2`` or ``i < g`` or ``j < g``.
    Global rows use their own projections (``q_global``, ``kv_global``) as in the paper
    and LRA; window rows attend to the global keys through the ordinary projections.
    """

    def __init__(self, dim: int, heads: int, max_len: int, hp: LongformerHP) -> None:
        super().__init__(dim, heads, hp.qkv_bias)
        self.left = hp.window - hp.window // 2 - 1
        self.right = hp.window // 2
        self.n_global = hp.n_global
        if hp.n_global > 0 and hp.global_projections:
            self.q_global = nn.Linear(dim, dim, bias=hp.qkv_bias)
            self.kv_global = nn.Linear(dim, 2 * dim, bias=hp.qkv_bias)
        else:
            self.q_global = self.kv_global = None

    def pattern(self, length: int) -> Tensor:
        """(L, L) bool: True where query i may attend to key j (before key padding)."""
        i = torch.arange(length)
        off = i[None, :] - i[:, None]
        band = (off >= -self.left) & (off <= self.right)
        g = self.n_global
        return band | (i[:, None] < g) | (i[None, :] < g)

    def window_attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        b, h, length, d = q.shape
        g = min(self.n_global, length)
        reach = max(self.left, self.right, 1)
        s = min(reach, length)  # query block; keys come from the blocks within `reach`
        n = math.ceil(length / s)
        lp = n * s
        q, k, v = (pad_axis(t, lp, 2) for t in (q, k, v))
        km = pad_axis(mask, lp, 1, False)
        dev = q.device
        side = min(math.ceil(reach / s), n - 1)
        blk = torch.arange(n, device=dev)[:, None] + torch.arange(-side, side + 1, device=dev)  # (n, 2 side + 1)
        kpos = (blk[:, :, None] * s + torch.arange(s, device=dev)).reshape(n, -1)  # (n, m)
        inside = (blk >= 0) & (blk < n)
        inside = inside[:, :, None].expand(-1, -1, s).reshape(n, -1)
        qpos = torch.arange(lp, device=dev).view(n, s)
        off = kpos[:, None, :] - qpos[:, :, None]  # (n, s, m)
        allowed = inside[:, None, :] & (off >= -self.left) & (off <= self.right) & (kpos[:, None, :] >= g)
        gpos = torch.arange(g, device=dev).expand(n, g)
        idx = torch.cat([gpos, kpos.clamp(0, lp - 1)], dim=1)  # global keys first
        allowed = torch.cat([torch.ones(n, s, g, dtype=torch.bool, device=dev), allowed], dim=2)
        o = gathered_attention(q.view(b, h, n, s, d), k, v, km, idx, allowed, self.scale)
        return o.reshape(b, h, lp, d)[:, :, :length]

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, length, c = x.shape
        h = self.heads
        q, k, v = self.split(x)
        o = self.window_attention(q, k, v, mask)  # (B, H, L, D)
        g = min(self.n_global, length)
        if g > 0:
            if self.q_global is not None:
                qg = self.q_global(x[:, :g]).view(b, g, h, -1).transpose(1, 2)  # (B, H, g, D)
                kg, vg = self.kv_global(x).view(b, length, 2, h, -1).permute(2, 0, 3, 1, 4)
            else:
                qg, kg, vg = q[:, :, :g], k, v
            og = masked_attention(qg, kg, vg, mask[:, None, None, :], self.scale)  # (B, H, g, D)
            o = torch.cat([og.to(o.dtype), o[:, :, g:]], dim=2)
        return self.merge(o)
