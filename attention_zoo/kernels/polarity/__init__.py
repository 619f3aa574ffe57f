"""Polarity attention: ``reference.py`` (plain PyTorch) and ``triton.py`` (fused kernels).

``polarity_attention(..., backend="auto")`` runs the Triton kernels on CUDA when Triton
is importable and the plain PyTorch reference elsewhere.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from attention_zoo.kernels.polarity import reference


def triton_available() -> bool:
    try:
        from attention_zoo.kernels.polarity import triton as _  # noqa: F401
    except ImportError:
        return False
    return True


def polarity_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    power: Tensor,
    key_mask: Tensor | None = None,
    eps: float = 1e-6,
    backend: Literal["auto", "triton", "torch"] = "auto",
) -> Tensor:
    """Dispatch to the Triton kernels or the reference; same semantics (see reference.py)."""
    use_triton = backend == "triton" or (backend == "auto" and q.is_cuda and triton_available())
    if use_triton:
        from attention_zoo.kernels.polarity import triton as triton_impl

        return triton_impl.polarity_attention(q, k, v, power, key_mask=key_mask, eps=eps)
    return reference.polarity_attention(q, k, v, power, key_mask=key_mask, eps=eps)
