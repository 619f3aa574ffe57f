"""Performer: FAVOR+ attention with orthogonal random features (Choromanski et al., ICLR 2021).

Forms follow the Performer paper and its authors' reference code
(google-research/performer ``fast_attention``, ``softmax_kernel_transformation`` and
``relu_kernel_transformation``):

* softmax kernel (positive random features). With x scaled by d^-1/4 (so that
  q'.k' = q.k / sqrt(d)) and w_1..w_m the feature rows,

      phi(x) = m^-1/2 (exp(w_r . x - |x|^2 / 2 - c) + 1e-6)_r

  c is the stabiliser: for a query the max of its own m projections, for keys the max
  over all real keys and features of the (batch, head). c cancels in the normalised
  output (up to the 1e-6), so it is taken without gradient. (The PyTorch port
  lucidrains/performer-pytorch, vendored by Skyformer, adds 1e-4 instead; with many
  features the key-side c grows and 1e-4 biases the output towards uniform attention.)
* relu kernel: phi(x) = relu(m^-1/2 W x) + 1e-3.
* W: blocks of d orthogonal rows (QR of a Gaussian matrix, sign-fixed so Q is Haar);
  row norms drawn as the norms of d-dim Gaussian vectors ("gaussian", scaling=0 in the
  reference) or all sqrt(d) ("sqrt_d", scaling=1).

The Skyformer code's LRA Performer (``models/attention_performer.py``, the Nystromformer
LRA wrapper around the port's ``FastAttention`` with ``kernel_type="exp"``, which still takes
the softmax-kernel path) differs in four ways, each a hyperparameter here (the skyformer
protocol sets all four):

* ``qk_scale="d"``: the wrapper divides q and k by d^1/4 and the kernel scales them by d^-1/4
  again, so the features estimate exp(q.k / d) instead of exp(q.k / sqrt(d));
* ``padded_keys=True``: padded keys are zeroed (k = 0, v = 0) but stay in the sum, so each
  adds m^-1/2 (exp(-c) + stabiliser) to every normaliser;
* ``key_max="batch"``: the key-side c is one number, the max over the whole batch, heads,
  keys (padded ones included) and features;
* ``stabiliser=1e-4``.

Features live in a buffer drawn from a seed buffer, so DDP ranks (which broadcast
buffers) and checkpoints share them; ``redraw_interval`` N > 0 redraws every N training
forward passes (the port's default is 1000; the LRA ports never redraw, hence 0 here).
Published LRA settings: 256 features with the relu kernel (Nystromformer LRA configs,
``performer-256``), 128 with the softmax kernel (Skyformer configs, ``rp_dim 128``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from attention_zoo.linear import acc_dtype, full_precision, kernel_linear_attention, merge_heads, split_heads
from attention_zoo.registry import register

SOFTMAX_STABILISER = 1e-6
RELU_STABILISER = 1e-3


def orthogonal_random_features(
    nb_features: int, dim: int, seed: int, norms: Literal["gaussian", "sqrt_d"] = "gaussian"
) -> Tensor:
    """(nb_features, dim) float64 on CPU: stacked blocks of orthogonal rows with random norms."""
    g = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(math.ceil(nb_features / dim)):
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))  # Haar-distributed Q
        blocks.append(q.T)  # rows are orthonormal
    w = torch.cat(blocks)[:nb_features]  # (m, d)
    if norms == "gaussian":
        scale = torch.randn(nb_features, dim, generator=g, dtype=torch.float64).norm(dim=1)
    else:
        scale = torch.full((nb_features,), math.sqrt(dim), dtype=torch.float64)
    return w * scale[:, None]


@dataclass(frozen=True)
class PerformerHP:
    nb_features: int = 256
    kernel: Literal["softmax", "relu"] = "softmax"
    redraw_interval: int = 0
    feature_norms: Literal["gaussian", "sqrt_d"] = "gaussian"
    qkv_bias: bool = True
    # The next three shape the softmax kernel only (the relu kernel ignores them, so a protocol
    # that sets them still admits kernel=relu).
    # estimate exp(q.k / sqrt(d)) (the paper) or exp(q.k / d) (Skyformer code)
    qk_scale: Literal["sqrt_d", "d"] = "sqrt_d"
    # the keys' c per (batch, head) over real keys, or one over the whole batch
    key_max: Literal["head", "batch"] = "head"
    stabiliser: float = SOFTMAX_STABILISER  # added to every exp feature
    padded_keys: bool = False  # padded keys, zeroed, stay in the normaliser (Skyformer code)

    def check(self) -> None:
        if self.nb_features < 1:
            raise ValueError(f"nb_features must be >= 1, got {self.nb_features}")
        if self.redraw_interval < 0:
            raise ValueError(f"redraw_interval must be >= 0 (0 = never), got {self.redraw_interval}")
        if not self.stabiliser >= 0:
            raise ValueError(f"stabiliser must be >= 0, got {self.stabiliser}")


@register("performer", PerformerHP, time="O(L m D)", memory="O(L m + m D)")
class PerformerAttention(nn.Module):
    """Performer (FAVOR+): orthogonal random features for the softmax (or relu) kernel,
    normalised linear attention in float32."""

    def __init__(self, dim: int, heads: int, max_len: int, hp: PerformerHP) -> None:
        super().__init__()
        self.heads, self.kernel, self.norms = heads, hp.kernel, hp.feature_norms
        self.qk_scale, self.key_max, self.stabiliser, self.padded_keys = (
            hp.qk_scale, hp.key_max, hp.stabiliser, hp.padded_keys)
        self.redraw_interval = hp.redraw_interval
        self.calls_since_redraw = 0
        self.qkv = nn.Linear(dim, 3 * dim, bias=hp.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        seed = int(torch.randint(0, 2**62, ()).item())
        self.register_buffer("feature_seed", torch.tensor(seed, dtype=torch.long))
        # Shared by all heads, as in the reference port.
        self.register_buffer(
            "features", orthogonal_random_features(hp.nb_features, dim // heads, seed, self.norms).float()
        )

    @property
    def cuda_graph_safe(self) -> bool:
        """A replayed CUDA graph would never run the host-side redraw (lra/graphs.py)."""
        return self.redraw_interval == 0

    @torch.no_grad()
    def redraw(self) -> None:
        self.feature_seed += 1
        m, d = self.features.shape
        w = orthogonal_random_features(m, d, int(self.feature_seed.item()), self.norms)
        self.features.copy_(w.to(self.features))

    def feature_map(self, x: Tensor, mask: Tensor, is_query: bool) -> Tensor:
        """(B, H, L, D) -> (B, H, L, m) non-negative features, in x's dtype (use float32+).
        ``mask`` marks the keys that count (all of them with ``padded_keys``)."""
        w = self.features.to(x.dtype)  # (m, D)
        if self.kernel == "relu":
            return torch.relu(w.shape[0] ** -0.5 * (x @ w.T)) + RELU_STABILISER
        x = x * x.shape[-1] ** (-0.25 if self.qk_scale == "sqrt_d" else -0.5)
        proj = x @ w.T  # (B, H, L, m)
        half_sq = (x * x).sum(-1, keepdim=True) / 2  # (B, H, L, 1)
        if is_query:
            c = proj.detach().amax(-1, keepdim=True)  # (B, H, L, 1)
        else:
            real = mask[:, None, :, None]
            dims = (0, 1, 2, 3) if self.key_max == "batch" else (-2, -1)
            c = proj.detach().masked_fill(~real, float("-inf")).amax(dim=dims, keepdim=True)  # (B, H, 1, 1) or one
            c = torch.where(torch.isfinite(c), c, 0.0)  # no real key: anything finite
        return w.shape[0] ** -0.5 * (torch.exp(proj - half_sq - c) + self.stabiliser)

    def query_key_features(self, q: Tensor, k: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, H, L, D) q, k and (B, L) mask -> phi(q), phi(k) (B, H, L, m) and the (B, L) mask
        of the keys that count: the real ones, or with ``padded_keys`` all of them, the padded
        ones zeroed (their v must be zeroed too). Features in q's dtype (use float32+)."""
        if self.padded_keys:  # padded keys zeroed, then counted like real ones
            k = torch.where(mask[:, None, :, None], k, 0.0)
            mask = torch.ones_like(mask)
        return self.feature_map(q, mask, is_query=True), self.feature_map(k, mask, is_query=False), mask

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """(B, H, L, D) q, k, v -> (B, H, L, D) in the accumulation dtype."""
        with full_precision(q):
            acc = acc_dtype(q)
            phi_q, phi_k, counted = self.query_key_features(q.to(acc), k.to(acc), mask)
            if self.padded_keys:
                v = torch.where(mask[:, None, :, None], v, 0.0)
            # Features are >= m^-1/2 stabiliser, so den > 0 whenever a key counts; the clamp
            # only turns a row without one (or underflowed features at stabiliser 0) into 0, not 0/0.
            return kernel_linear_attention(phi_q, phi_k, v, counted, eps=1e-30, clamp=True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.training and self.redraw_interval > 0:
            if self.calls_since_redraw >= self.redraw_interval:
                self.redraw()
                self.calls_since_redraw = 0
            self.calls_since_redraw += 1
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, L, D)
        o = self.attend(q, k, v, mask)
        return self.proj(merge_heads(o.to(v.dtype)))
