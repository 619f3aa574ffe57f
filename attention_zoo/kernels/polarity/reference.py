"""Polarity-aware linear attention (PolaFormer, ICLR 2025), plain PyTorch.

This is the exact math of ``docs/POLARITY.md`` and the reference every faster
implementation (``triton.py`` beside it) is tested against. It materialises the
feature maps, so it is simple rather than fast.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _as_power(power: Tensor, h: int, d: int) -> Tensor:
    """Broadcast ``power`` (H, D), (1, H, 1, D) or anything broadcastable to (1, H, 1, D)."""
    if power.dim() == 2:
        power = power.reshape(1, h, 1, d) if power.shape == (h, d) else power[None, :, None, :]
    return power.expand(1, h, 1, d)


def polarity_feature(x: Tensor, p: Tensor) -> Tensor:
    """phi(x) = relu(x) ** p, with a gradient in p that is 0 where relu(x) is 0.

    ``relu(x) ** p`` alone gives 0 * log(0) = NaN in d/dp at x <= 0, so the power is
    taken of a safe base and the result selected.
    """
    pos = x > 0
    base = torch.where(pos, x, torch.ones_like(x))
    return torch.where(pos, base**p, torch.zeros_like(x))


def _both_features(x: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    """(phi(x), phi(-x)) from one power of |x|: relu(x)^p and relu(-x)^p share |x|^p."""
    nonzero = x != 0
    a = torch.where(nonzero, x.abs(), torch.ones_like(x)) ** p  # safe base: no log(0) in d/dp
    zero = torch.zeros_like(a)
    return torch.where(x > 0, a, zero), torch.where(x < 0, a, zero)


def polarity_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    power: Tensor,
    key_mask: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Non-causal polarity-aware linear attention.

    Args:
        q, k, v: (B, H, L, D) tensors, D even.
        power: per head and channel exponent, (H, D) or broadcastable to (1, H, 1, D).
        key_mask: optional (B, L) bool, True for real keys. Masked keys contribute
            nothing and the normaliser's n counts only real keys.
        eps: added to the mean-key normaliser.

    Returns:
        o: (B, H, L, D) with ``o[..., :D/2]`` the same-sign part (x_sim, values v[..., :D/2])
        and ``o[..., D/2:]`` the opposite-sign part (x_opp, values v[..., D/2:]).
        Sums run in float32 (float64 stays float64); the result has q's dtype.
    """
    b, h, l, d = q.shape
    if k.shape != (b, h, l, d) or v.shape != (b, h, l, d):
        raise ValueError(f"q, k, v must share the shape (B, H, L, D); got {q.shape}, {k.shape}, {v.shape}")
    if d % 2:
        raise ValueError(f"head dim D must be even to split v in two halves, got {d}")
    out_dtype = q.dtype
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v = q.to(acc), k.to(acc), v.to(acc)
    p = _as_power(power.to(acc), h, d)

    q_pos, q_neg = _both_features(q, p)  # (B, H, L, D) each
    k_f = torch.cat(_both_features(k, p), dim=-1)  # (B, H, L, 2D)
    q_sim = torch.cat([q_pos, q_neg], dim=-1)  # (B, H, L, 2D)
    q_opp = torch.cat([q_neg, q_pos], dim=-1)  # (B, H, L, 2D)
    v1, v2 = v.chunk(2, dim=-1)  # (B, H, L, D/2) each

    if key_mask is None:
        n = torch.full((b, 1, 1, 1), float(l), dtype=acc, device=q.device)
    else:
        if key_mask.shape != (b, l):
            raise ValueError(f"key_mask must be (B, L) = {(b, l)}, got {tuple(key_mask.shape)}")
        km = key_mask.to(acc)[:, None, :, None]  # (B, 1, L, 1)
        k_f = k_f * km
        n = km.sum(dim=2, keepdim=True).clamp_min(1.0)  # (B, 1, 1, 1)

    k_mean = k_f.sum(dim=2, keepdim=True) / n  # (B, H, 1, 2D)
    kv1 = k_f.transpose(-1, -2) @ v1 / n  # (B, H, 2D, D/2)
    kv2 = k_f.transpose(-1, -2) @ v2 / n  # (B, H, 2D, D/2)
    z_sim = (q_sim * k_mean).sum(-1, keepdim=True) + eps  # (B, H, L, 1)
    z_opp = (q_opp * k_mean).sum(-1, keepdim=True) + eps
    o = torch.cat([(q_sim @ kv1) / z_sim, (q_opp @ kv2) / z_opp], dim=-1)  # (B, H, L, D)
    return o.to(out_dtype)
