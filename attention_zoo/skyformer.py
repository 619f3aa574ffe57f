"""Skyformer (Chen et al., NeurIPS 2021, "Skyformer: Remodel Self-Attention with Gaussian
Kernel and Nystrom Method"), following the authors' code (pkuzengqi/Skyformer,
``models/attention_skyformer.py``, LRA configs ``nb_features 128``).

Skyformer approximates Kernelized Attention o = C v, C_ij = kappa(q_i, k_j) with the
Gaussian kernel kappa(x, y) = exp(-||x - y||^2 / 2) on q, k scaled by p^-1/4 (p = head dim),
i.e. exp(-||q - k||^2 / (2 sqrt(p))) on the unscaled vectors, not row-normalised.
C is not symmetric, so the Nystrom method is applied to the symmetric PSD kernel matrix
of all 2L points X = [q; k], whose off-diagonal block is C:

    S: m landmark points, m/2 drawn among the real queries and m/2 among the real keys
       (uniformly, afresh at every forward, as the code does, also in eval)
    A_S = kappa(X, X_S)  (2L x m);  W = kappa(X_S, X_S) + ridge I  (m x m, ridge = 0.1)
    C ~= A_S[:L] W^+ A_S[L:]^T,  o = A_S[:L] (W^+ (A_S[L:]^T v))

W^+ is taken as D (D W D)^+ D with D = diag(rowsum(W))^-1/2 (the code's symmetric
normalisation, which bounds the spectrum by 1) and the Nystromformer iteration, 6 steps,
Z_0 = (DWD)^T / ||DWD||_1 (per matrix; the code takes the batch-wide max).

Differences from the code, all for padding and small L: landmarks are drawn without
replacement (the code: with replacement), only among real tokens wherever padding sits
(the code assumes trailing padding); when a sequence has fewer than m/2 real tokens the
missing landmarks are dropped (identity rows/columns in W, zero columns in A_S), so with
m >= 2L every token is a landmark and, with ridge 0, the approximation is exact. The code
hard-codes p = 32 in the scaling; here p is the head dim. ``normalize=True`` divides each
row by the same approximation applied to a vector of ones (not in the paper).

``sampling="prefix"`` and ``pinv_scope="batch"`` are the code's forms, as its LRA runs use
them: one set of m uniforms u is drawn for the whole batch (m/2 for queries, m/2 for keys),
sequence b takes positions floor(u n_b) with n_b its number of real tokens (so with
replacement, and as if its padding were trailing), and every pick stays a landmark, also a
padded (zeroed) token; Z_0 is scaled by the largest column sum over the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from attention_zoo.kernelized import gaussian_logits
from attention_zoo.linear import acc_dtype, full_precision, merge_heads, split_heads
from attention_zoo.nystromformer import iterative_pinv
from attention_zoo.registry import register


def sample_real(mask: Tensor, s: int) -> Tensor:
    """(B, s) positions drawn uniformly without replacement, real tokens first."""
    scores = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, 2.0)
    return scores.topk(s, dim=-1, largest=False).indices


def sample_prefix(mask: Tensor, s: int) -> Tensor:
    """(B, s) positions floor(u n_b): u ~ U[0, 1)^s shared by the batch, n_b the real tokens of
    sequence b (the code's draw: with replacement, from the first n_b positions)."""
    u = torch.rand(s, device=mask.device)
    n = mask.sum(-1, keepdim=True).to(u.dtype)  # (B, 1)
    return (n * u).long().clamp(0, mask.shape[1] - 1)


def skyformer_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor,
    num_feats: int,
    ridge: float = 0.1,
    iters: int = 6,
    normalize: bool = False,
    landmarks: tuple[Tensor, Tensor] | None = None,
    sampling: Literal["real", "prefix"] = "real",
    pinv_scope: Literal["matrix", "batch"] = "matrix",
) -> Tensor:
    """Nystrom-approximated Gaussian kernel attention. q, k, v (B, H, L, D) unscaled.

    landmarks: optional (B, s) query and key positions; drawn with ``sample_real`` (sampling
    "real") or ``sample_prefix`` ("prefix", where every pick counts, padded or not) if None.
    """
    b, h, l, d = q.shape
    keep = mask[:, None, :, None]
    scale = d**-0.25
    q, k, v = (t.masked_fill(~keep, 0.0) for t in (q * scale, k * scale, v))
    if landmarks is None:
        s = min(num_feats // 2, l) if sampling == "real" else num_feats // 2
        draw = sample_real if sampling == "real" else sample_prefix
        landmarks = (draw(mask, s), draw(mask, s))
    idx_q, idx_k = landmarks  # (B, s) each
    valid = torch.cat([mask.gather(1, idx_q), mask.gather(1, idx_k)], dim=1)  # (B, 2s)
    if sampling == "prefix":
        valid = torch.ones_like(valid)

    def rows(t: Tensor, idx: Tensor) -> Tensor:
        return t.gather(2, idx[:, None, :, None].expand(b, h, idx.shape[1], d))  # (B, H, s, D)

    x_s = torch.cat([rows(q, idx_q), rows(k, idx_k)], dim=2)  # (B, H, 2s, D)

    cols = valid[:, None, None, :]  # (B, 1, 1, 2s)
    a_q = torch.where(cols, torch.exp(gaussian_logits(q, x_s)), 0.0)  # (B, H, L, 2s)
    a_k = torch.where(cols & keep, torch.exp(gaussian_logits(k, x_s)), 0.0)  # (B, H, L, 2s)
    eye = torch.eye(x_s.shape[2], dtype=q.dtype, device=q.device)
    both = valid[:, None, :, None] & cols  # (B, 1, 2s, 2s)
    w = torch.where(both, torch.exp(gaussian_logits(x_s, x_s)), eye) + ridge * eye  # (B, H, 2s, 2s)
    dinv = w.sum(-1).rsqrt()  # (B, H, 2s); row sums >= 1 (diagonal)
    w_pinv = dinv[..., :, None] * iterative_pinv(dinv[..., :, None] * w * dinv[..., None, :], iters, "colsum",
                                                 pinv_scope)
    w_pinv = w_pinv * dinv[..., None, :]  # (B, H, 2s, 2s)

    out = a_q @ (w_pinv @ (a_k.transpose(-1, -2) @ v))  # (B, H, L, D)
    if normalize:
        den = a_q @ (w_pinv @ a_k.sum(-2)[..., None])  # (B, H, L, 1)
        out = out / den.clamp_min(1e-6)
    return out


@dataclass(frozen=True)
class SkyformerHP:
    num_feats: int = 128
    ridge: float = 0.1
    pinv_iterations: int = 6
    normalize: bool = False
    qkv_bias: bool = True
    # real: landmarks drawn among the real tokens; prefix: the code's draw (module docstring)
    sampling: Literal["real", "prefix"] = "real"
    pinv_scope: Literal["matrix", "batch"] = "matrix"  # Z_0's norm per matrix, or the batch's largest

    def check(self) -> None:
        if self.num_feats < 2 or self.num_feats % 2:
            raise ValueError(f"num_feats must be even and >= 2 (half queries, half keys), got {self.num_feats}")
        if self.ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {self.ridge}")
        if self.pinv_iterations < 1:
            raise ValueError(f"pinv_iterations must be >= 1, got {self.pinv_iterations}")
        if self.sampling not in ("real", "prefix"):
            raise ValueError(f"sampling must be 'real' or 'prefix', got {self.sampling!r}")
        if self.pinv_scope not in ("matrix", "batch"):
            raise ValueError(f"pinv_scope must be 'matrix' or 'batch', got {self.pinv_scope!r}")


@register("skyformer", SkyformerHP, time="O(L m D + m^3)", memory="O(L m)")
class SkyformerAttention(nn.Module):
    """Skyformer: Gaussian-kernel attention, Nystrom-approximated on the symmetric kernel
    matrix of [q; k] with m landmarks sampled from the real queries and keys."""

    def __init__(self, dim: int, heads: int, max_len: int, hp: SkyformerHP) -> None:
        super().__init__()
        self.heads, self.num_feats, self.ridge = heads, hp.num_feats, hp.ridge
        self.iters, self.normalize = hp.pinv_iterations, hp.normalize
        self.sampling, self.pinv_scope = hp.sampling, hp.pinv_scope
        self.qkv = nn.Linear(dim, 3 * dim, bias=hp.qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, L, D)
        with full_precision(x):
            acc = acc_dtype(q)
            o = skyformer_attention(
                q.to(acc), k.to(acc), v.to(acc), mask, self.num_feats, self.ridge, self.iters, self.normalize,
                sampling=self.sampling, pinv_scope=self.pinv_scope,
            )
        return self.proj(merge_heads(o.to(v.dtype)))
