"""Reformer LSH self-attention (Kitaev et al. 2020), shared-QK, non-causal."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attention_zoo._blocks import acc_dtype, masked_logsumexp, masked_softmax, pad_axis
from attention_zoo.registry import register

SELF_LOGIT = -1e5  # HF's self_mask_value: self wins only when nothing else is attendable


@dataclass(frozen=True)
class ReformerHP:
    n_hashes: int = 2  # Skyformer config num_hash
    chunk_len: int = 64  # HF ReformerConfig lsh_attn_chunk_length, the layer Skyformer wraps
    n_buckets: int | None = None  # None: HF's rule, 2 ** floor(log2(2 * n_chunks))
    qkv_bias: bool = True

    def check(self) -> None:
        if self.n_hashes < 1:
            raise ValueError(f"n_hashes must be >= 1, got {self.n_hashes}")
        if self.chunk_len < 1:
            raise ValueError(f"chunk_len must be >= 1, got {self.chunk_len}")
        if self.n_buckets is not None and (self.n_buckets < 1 or (self.n_buckets > 1 and self.n_buckets % 2)):
            raise ValueError(f"n_buckets must be 1 or even, got {self.n_buckets}")


@register("reformer", ReformerHP, time="O(n_h L c)", memory="O(n_h L c)")
class ReformerAttention(nn.Module):
    """LSH attention with shared queries/keys, as the Reformer paper and HF ``LSHSelfAttention``.

    Per head and hash round: angular LSH with a fresh random rotation each forward
    (argmax over [xR, -xR], R ~ N(0, 1) of shape (D, n_buckets / 2)) assigns buckets;
    positions are sorted by (bucket, position), cut into chunks of ``chunk_len``, and each
    chunk attends to itself and the previous chunk (chunk 0 to the last one; no look-back
    when there is a single chunk). Keys are the unit-normalised queries, logits
    ``q_i . q_j / |q_j|`` (HF's length-and-dim normalisation, no further scale). A token's
    own logit is set to -1e5, so it attends to itself only when no other key is available.
    Rounds are combined with weights softmax over rounds of each round's log-sum-exp;
    duplicates across rounds are not discounted (as HF and LRA). Padded positions get a
    bucket of their own, sorted last, so they never share chunks with or displace real tokens.
    """

    def __init__(self, dim: int, heads: int, max_len: int, hp: ReformerHP) -> None:
        super().__init__()
        self.heads, self.hp = heads, hp
        self.qk = nn.Linear(dim, dim, bias=hp.qkv_bias)
        self.v = nn.Linear(dim, dim, bias=hp.qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def n_buckets(self, n_chunks: int) -> int:
        return self.hp.n_buckets or 2 ** ((2 * n_chunks).bit_length() - 1)

    def hash(self, q: Tensor, key_mask: Tensor, n_buckets: int) -> Tensor:
        """Bucket ids (B, H, n_hashes, Lp); padded positions get ``n_buckets``."""
        b, h, lp, d = q.shape
        nh = self.hp.n_hashes
        if n_buckets == 1:
            buckets = torch.zeros(b, h, nh, lp, dtype=torch.long, device=q.device)
        else:
            rot = torch.randn(h, d, nh, n_buckets // 2, device=q.device, dtype=acc_dtype(q.dtype))
            x = torch.einsum("bhld,hdnr->bhnlr", q.detach().to(rot.dtype), rot)
            buckets = torch.cat([x, -x], dim=-1).argmax(dim=-1)  # (B, H, nh, Lp)
        return buckets.masked_fill(~key_mask[:, None, None, :], n_buckets)

    def attend(self, q: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        b, h, length, d = q.shape
        acc = acc_dtype(q.dtype)
        k = (q.to(acc) / q.to(acc).norm(dim=-1, keepdim=True).clamp_min(1e-6)).to(q.dtype)
        c = self.hp.chunk_len
        if length <= c:  # one chunk: every position sees every other
            logits = torch.matmul(q, k.transpose(-1, -2)).to(acc)  # (B, H, L, L)
            eye = torch.eye(length, dtype=torch.bool, device=q.device)
            p = masked_softmax(logits.masked_fill(eye, SELF_LOGIT), mask[:, None, None, :])
            return torch.matmul(p.to(v.dtype), v)
        nc = math.ceil(length / c)
        lp, nh = nc * c, self.hp.n_hashes
        q, k, v = (pad_axis(t, lp, 2) for t in (q, k, v))
        km = pad_axis(mask, lp, 1, False)
        buckets = self.hash(q, km, self.n_buckets(nc))
        pos = torch.arange(lp, device=q.device)
        perm = (buckets * lp + pos).argsort(dim=-1)  # (B, H, nh, Lp): sorted by bucket, then position

        def sort(t: Tensor) -> Tensor:
            idx = perm.reshape(b, h, nh * lp, 1).expand(-1, -1, -1, d)
            return t.gather(2, idx).view(b, h, nh, nc, c, d)  # (B, H, nh, nc, c, D)

        def look_back(t: Tensor) -> Tensor:
            return torch.cat([t, t.roll(1, dims=3)], dim=4)  # chunk i sees chunks i and i-1

        sq, sk, sv = sort(q), look_back(sort(k)), look_back(sort(v))
        spos = perm.view(b, h, nh, nc, c)
        kpos = look_back(spos)  # (B, H, nh, nc, 2c)
        kmask = look_back(km[:, None, None, :].expand(b, h, nh, lp).gather(-1, perm).view(b, h, nh, nc, c))
        logits = torch.matmul(sq, sk.transpose(-1, -2)).to(acc)  # (B, H, nh, nc, c, 2c)
        logits = logits.masked_fill(spos[..., :, None] == kpos[..., None, :], SELF_LOGIT)
        allowed = kmask[..., None, :]
        lse = masked_logsumexp(logits, allowed)  # (B, H, nh, nc, c)
        o = torch.matmul(masked_softmax(logits, allowed).to(v.dtype), sv)  # (B, H, nh, nc, c, D)
        undo = perm.argsort(dim=-1)  # (B, H, nh, Lp)
        o = o.reshape(b, h, nh, lp, d).gather(3, undo[..., None].expand(-1, -1, -1, -1, d))
        lse = lse.reshape(b, h, nh, lp).gather(3, undo)
        w = masked_softmax(lse.transpose(2, 3), torch.isfinite(lse.transpose(2, 3)))  # (B, H, Lp, nh)
        out = torch.einsum("bhln,bhnld->bhld", w.to(o.dtype), o)
        return out[:, :, :length]

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, length, c = x.shape
        h = self.heads

        def heads_first(t: Tensor) -> Tensor:
            return t.view(b, length, h, c // h).transpose(1, 2)  # (B, H, L, D)

        o = self.attend(heads_first(self.qk(x)), heads_first(self.v(x)), mask)
        return self.proj(o.transpose(1, 2).reshape(b, length, c))
