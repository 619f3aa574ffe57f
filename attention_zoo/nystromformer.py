"""Nystromformer (Xiong et al., AAAI 2021), the LRA configuration of the authors' code.

With q, k scaled by d^-1/4 and m landmarks q~, k~ (segment means):

    F = softmax(q k~^T)   (L x m)     A = softmax(q~ k~^T)   (m x m)     B = softmax(q~ k^T)   (m x L)
    o = (F A^+) (B v) + DWC(v)

* A^+ by the iterative Moore-Penrose scheme of the paper (Razavi et al. 2014), 6 iterations,
      Z_0 = A^T / (||A||_1 ||A||_inf),  Z <- Z/4 (13 I - A Z (15 I - A Z (7 I - A Z))).
  The paper's Z_0, per matrix (the code's "original" option takes 1/max column sum over the
  whole batch, the same thing for row-stochastic A apart from the batch-wide max).
* DWC: per-head convolution over the length (kernel 35, no bias, shared by the D channels of
  a head), on masked v (the code's Conv2d(H, H, (35, 1), groups=H)); ``conv_kernel=0`` drops it.
* L <= num_landmarks: exact masked softmax attention, as the code does when m == L.

Padding and lengths, ``landmarks="real"`` (the zoo's default; the code needs L divisible by
m and averages zeroed padded tokens into the landmarks): landmarks here are means over real tokens only. Real token number r
(0-based rank among the n real tokens) goes to segment floor(r m / max(n, m)), so segments
are contiguous runs of real tokens whose sizes differ by at most one, any L works, and the
result does not depend on where padding sits. With n < m each real token is its own
landmark and the m - n empty landmarks are dropped: their columns of F are masked and
their rows/columns of A replaced by the identity, so A^+ acts on the valid block only.

``landmarks="padded"`` is the code's form, as its LRA runs use it: q and k zeroed at padded
tokens, landmarks the means over m equal segments of the padded length (the zeros counted;
a segment of padding only gives a zero landmark), F and A softmaxed over every landmark, B
over the real keys. A length that m does not divide is zero-padded at the end to the next
multiple (the code pads its inputs to a power of two, Text's 4,000 bytes to 4,096, which
gives the same segments). ``pinv_scope="batch"`` scales Z_0 by the largest column sum over
the whole batch, as the code's default ("original") does; ``"matrix"`` per matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from attention_zoo.linear import acc_dtype, full_precision, merge_heads, split_heads
from attention_zoo.registry import register


def iterative_pinv(a: Tensor, iters: int = 6, init: Literal["paper", "colsum"] = "paper",
                   scope: Literal["matrix", "batch"] = "matrix") -> Tensor:
    """Moore-Penrose pseudo-inverse of (..., m, m) by the Nystromformer iteration.

    init "paper": Z_0 = A^T / (||A||_1 ||A||_inf); "colsum": Z_0 = A^T / ||A||_1 (Skyformer's
    choice for its symmetric, normalised matrix). scope "matrix": norms per matrix; "batch":
    the largest over every matrix of ``a`` (the reference codes' "original" option).
    """
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    norm1 = a.abs().sum(-2).amax(-1)  # max column sum, (...)
    c = norm1 if init == "colsum" else norm1 * a.abs().sum(-1).amax(-1)
    if scope == "batch":
        c = c.amax().expand_as(c)
    z = a.transpose(-1, -2) / c[..., None, None]
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def masked_softmax(logits: Tensor, keep: Tensor) -> Tensor:
    """softmax over the last axis where ``keep``; a row with nothing kept gets a finite
    uniform row instead of NaN."""
    return torch.softmax(logits.masked_fill(~keep, torch.finfo(logits.dtype).min), dim=-1)


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Exact masked softmax attention, q and k already scaled. (B, H, L, D) -> (B, H, L, D)."""
    return masked_softmax(q @ k.transpose(-1, -2), mask[:, None, None, :]) @ v


def segment_landmarks(x: Tensor, mask: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Means of x over m contiguous segments of the real tokens.

    x: (B, H, L, D); mask: (B, L). Returns landmarks (B, H, m, D) and valid (B, m) bool
    (False for the empty segments there are when a sequence has fewer than m real tokens).
    """
    b, h, l, d = x.shape
    n = mask.sum(-1, keepdim=True)  # (B, 1)
    rank = mask.long().cumsum(-1) - 1  # (B, L)
    seg = torch.where(mask, rank * m // n.clamp_min(m), m)  # (B, L); padded -> spare slot m
    counts = torch.zeros(b, m + 1, dtype=x.dtype, device=x.device).scatter_add_(
        1, seg, torch.ones_like(seg, dtype=x.dtype)
    )[:, :m]  # (B, m)
    sums = torch.zeros(b, h, m + 1, d, dtype=x.dtype, device=x.device).scatter_add(
        2, seg[:, None, :, None].expand(b, h, l, d), x
    )[:, :, :m]  # (B, H, m, D)
    return sums / counts.clamp_min(1)[:, None, :, None], counts > 0


def padded_landmarks(x: Tensor, m: int) -> Tensor:
    """Means of x (B, H, L, D) over m equal segments of its length, zero-padded at the end to a
    multiple of m (padded tokens already zeroed count as zeros). Returns (B, H, m, D)."""
    b, h, l, d = x.shape
    x = nn.functional.pad(x, (0, 0, 0, -l % m))
    return x.reshape(b, h, m, x.shape[2] // m, d).mean(-2)


def nystrom_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, num_landmarks: int, iters: int = 6,
                      landmarks: Literal["real", "padded"] = "real",
                      pinv_scope: Literal["matrix", "batch"] = "matrix") -> Tensor:
    """Nystrom approximation of masked softmax attention (always the approximation, even if
    num_landmarks >= L). q, k (B, H, L, D) already scaled by d^-1/4; returns (B, H, L, D)."""
    keep = mask[:, None, :, None]
    q, k, v = (t.masked_fill(~keep, 0.0) for t in (q, k, v))
    if landmarks == "padded":  # the code's: every landmark counts, padding included
        q_l, k_l = padded_landmarks(q, num_landmarks), padded_landmarks(k, num_landmarks)
        f = torch.softmax(q @ k_l.transpose(-1, -2), dim=-1)  # (B, H, L, m)
        a = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)  # (B, H, m, m)
    else:
        q_l, valid = segment_landmarks(q, mask, num_landmarks)  # (B, H, m, D), (B, m)
        k_l, _ = segment_landmarks(k, mask, num_landmarks)
        cols = valid[:, None, None, :]  # (B, 1, 1, m)
        f = masked_softmax(q @ k_l.transpose(-1, -2), cols)  # (B, H, L, m)
        a = masked_softmax(q_l @ k_l.transpose(-1, -2), cols)  # (B, H, m, m)
        eye = torch.eye(num_landmarks, dtype=a.dtype, device=a.device)
        a = torch.where(valid[:, None, :, None], a, eye)  # empty landmarks: identity rows
    bv = masked_softmax(q_l @ k.transpose(-1, -2), mask[:, None, None, :]) @ v  # (B, H, m, D)
    return (f @ iterative_pinv(a, iters, scope=pinv_scope)) @ bv


@dataclass(frozen=True)
class NystromHP:
    num_landmarks: int = 128
    pinv_iterations: int = 6
    conv_kernel: int = 35
    qkv_bias: bool = True
    # real: landmarks over the real tokens (any L, padding anywhere); padded: the code's segment
    # means over the padded length (module docstring)
    landmarks: Literal["real", "padded"] = "real"
    pinv_scope: Literal["matrix", "batch"] = "matrix"  # Z_0's norm per matrix, or the batch's largest

    def check(self) -> None:
        if self.num_landmarks < 1:
            raise ValueError(f"num_landmarks must be >= 1, got {self.num_landmarks}")
        if self.pinv_iterations < 1:
            raise ValueError(f"pinv_iterations must be >= 1, got {self.pinv_iterations}")
        if self.conv_kernel < 0 or (self.conv_kernel and self.conv_kernel % 2 == 0):
            raise ValueError(f"conv_kernel must be odd, or 0 for no convolution, got {self.conv_kernel}")
        if self.landmarks not in ("real", "padded"):
            raise ValueError(f"landmarks must be 'real' or 'padded', got {self.landmarks!r}")
        if self.pinv_scope not in ("matrix", "batch"):
            raise ValueError(f"pinv_scope must be 'matrix' or 'batch', got {self.pinv_scope!r}")


@register("nystromformer", NystromHP, time="O(L m D + m^3)", memory="O(L m)")
class NystromAttention(nn.Module):
    """Nystromformer: segment-mean landmarks, iterative pseudo-inverse, depthwise conv on v;
    exact softmax attention when L <= num_landmarks."""

    def __init__(self, dim: int, heads: int, max_len: int, hp: NystromHP) -> None:
        super().__init__()
        self.heads, self.num_landmarks, self.iters = heads, hp.num_landmarks, hp.pinv_iterations
        self.landmarks, self.pinv_scope = hp.landmarks, hp.pinv_scope
        self.qkv = nn.Linear(dim, 3 * dim, bias=hp.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.conv = None
        if hp.conv_kernel:
            self.conv = nn.Conv2d(
                heads, heads, (hp.conv_kernel, 1), padding=(hp.conv_kernel // 2, 0), groups=heads, bias=False
            )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        l = x.shape[1]
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, L, D)
        with full_precision(x):
            acc = acc_dtype(q)
            scale = q.shape[-1] ** -0.25
            qa, ka, va = q.to(acc) * scale, k.to(acc) * scale, v.to(acc)
            if l <= self.num_landmarks:
                o = softmax_attention(qa, ka, va, mask)
            else:
                o = nystrom_attention(qa, ka, va, mask, self.num_landmarks, self.iters, self.landmarks,
                                      self.pinv_scope)
        o = o.to(v.dtype)
        if self.conv is not None:
            o = o + self.conv(v.masked_fill(~mask[:, None, :, None], 0.0))  # (B, H, L, D)
        return self.proj(merge_heads(o))
