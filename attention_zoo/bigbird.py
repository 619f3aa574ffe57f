"""BigBird block-sparse attention, ITC form (Zaheer et al. 2020)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from attention_zoo._blocks import QKVAttention, gathered_attention, masked_attention, pad_axis
from attention_zoo.registry import register


@dataclass(frozen=True)
class BigBirdHP:
    block_size: int = 64  # Skyformer config (all tasks)
    n_random: int = 3  # random key blocks per query block, Skyformer config / BigBird ITC
    seed: int | None = None  # None: drawn from torch's RNG when the layer is built
    qkv_bias: bool = True

    def check(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.n_random < 0:
            raise ValueError(f"n_random must be >= 0, got {self.n_random}")


@register("bigbird", BigBirdHP, time="O(L b (5 + r))", memory="O(L b (5 + r))")
class BigBirdAttention(QKVAttention):
    """BigBird ITC block-sparse attention: window of 3 blocks, 2 global blocks, r random blocks.

    The (internally padded) sequence is cut into ``n`` blocks of ``block_size``. Blocks 0
    and n-1 are global: their queries attend to every key, and every query attends to
    their keys. A middle query block i (1 <= i <= n-2) attends to key blocks
    {0, n-1} U {i-1, i, i+1} U R_i, where R_i holds ``n_random`` distinct blocks drawn
    from {1..n-2} minus {i-1, i, i+1} (all of them if fewer remain). R_i differs per head
    and is a fixed function of (seed, n, head): the pattern is fixed per layer; the seed
    is saved as the module's extra state, so it travels with the state dict. With n <= 3 every query sees every key.
    """

    def __init__(self, dim: int, heads: int, max_len: int, hp: BigBirdHP) -> None:
        super().__init__(dim, heads, hp.qkv_bias)
        self.block_size, self.n_random = hp.block_size, hp.n_random
        self.seed = hp.seed if hp.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        self._plans: dict[tuple, tuple[Tensor, Tensor]] = {}

    def get_extra_state(self) -> dict:
        return {"seed": self.seed}  # saved in the state dict, so a reload keeps the pattern

    def set_extra_state(self, state: dict) -> None:
        self.seed = int(state["seed"])

    def random_blocks(self, n: int) -> tuple[Tensor, Tensor]:
        """(H, n, r) random key blocks per query block and (H, n, r) validity (CPU tensors)."""
        key = (self.seed, n)
        if key not in self._plans:
            gen = torch.Generator().manual_seed(key[0] * 1_000_003 + n)
            r = self.n_random
            i = torch.arange(n)
            cand = (i[None, :] >= 1) & (i[None, :] <= n - 2) & ((i[None, :] - i[:, None]).abs() > 1)  # (n, n)
            score = torch.rand(self.heads, n, n, generator=gen).masked_fill(~cand, 2.0)
            top = min(r, n)
            picks = score.argsort(dim=-1)[..., :top]  # (H, n, top)
            valid = score.gather(-1, picks) < 1.5
            if top < r:
                picks = torch.cat([picks, picks.new_zeros(self.heads, n, r - top)], dim=-1)
                valid = torch.cat([valid, valid.new_zeros(self.heads, n, r - top)], dim=-1)
            self._plans[key] = (picks, valid)
        return self._plans[key]

    def block_lists(self, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Key blocks of the middle query blocks 1..n-2: (H, n-2, 5 + r) ids and validity."""
        key = (self.seed, n, str(device))
        if key not in self._plans:
            blocks, ok = self._block_lists(n)
            self._plans[key] = (blocks.to(device), ok.to(device))
        return self._plans[key]

    def _block_lists(self, n: int) -> tuple[Tensor, Tensor]:
        picks, valid = self.random_blocks(n)
        i = torch.arange(1, n - 1)[:, None]  # (n-2, 1)
        fixed = torch.cat([torch.zeros_like(i), torch.full_like(i, n - 1), i - 1, i, i + 1], dim=1)  # (n-2, 5)
        fixed_ok = torch.ones_like(fixed, dtype=torch.bool)
        fixed_ok[:, 2] = fixed[:, 2] != 0  # block i-1 is the first global block
        fixed_ok[:, 4] = fixed[:, 4] != n - 1  # block i+1 is the last global block
        h = self.heads
        blocks = torch.cat([fixed.expand(h, -1, -1), picks[:, 1 : n - 1]], dim=-1)
        ok = torch.cat([fixed_ok.expand(h, -1, -1), valid[:, 1 : n - 1]], dim=-1)
        return blocks, ok

    def pattern(self, length: int) -> Tensor:
        """(H, L, L) bool: True where query i may attend to key j in each head."""
        bs = self.block_size
        n = math.ceil(length / bs)
        if n <= 3:
            return torch.ones(self.heads, length, length, dtype=torch.bool)
        blocks, ok = self.block_lists(n, torch.device("cpu"))
        allowed = torch.zeros(self.heads, n, n, dtype=torch.bool)
        allowed[:, [0, n - 1], :] = True
        # invalid slots may repeat a valid block id, so count hits instead of scattering bools
        mid = torch.zeros(self.heads, n - 2, n, dtype=torch.int64).scatter_add_(-1, blocks, ok.long()) > 0
        allowed[:, 1 : n - 1] = mid
        full = allowed.repeat_interleave(bs, dim=1).repeat_interleave(bs, dim=2)
        return full[:, :length, :length]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        b, h, length, d = q.shape
        bs = self.block_size
        n = math.ceil(length / bs)
        if n <= 3:  # every block is global or in every window
            return masked_attention(q, k, v, mask[:, None, None, :], self.scale)
        lp = n * bs
        q, k, v = (pad_axis(t, lp, 2) for t in (q, k, v))
        km = pad_axis(mask, lp, 1, False)
        blocks, ok = self.block_lists(n, q.device)  # (H, n-2, 5 + r)
        ar = torch.arange(bs, device=q.device)
        idx = (blocks[..., None] * bs + ar).flatten(-2)  # (H, n-2, m)
        allowed = ok[..., None].expand(-1, -1, -1, bs).flatten(-2)[:, :, None, :]  # (H, n-2, 1, m)
        mid = gathered_attention(q[:, :, bs : lp - bs].view(b, h, n - 2, bs, d), k, v, km, idx, allowed, self.scale)
        glob = masked_attention(
            torch.cat([q[:, :, :bs], q[:, :, lp - bs :]], dim=2), k, v, km[:, None, None, :], self.scale
        )  # (B, H, 2 bs, D)
        o = torch.cat([glob[:, :, :bs], mid.reshape(b, h, lp - 2 * bs, d), glob[:, :, bs:]], dim=2)
        return o[:, :, :length]
