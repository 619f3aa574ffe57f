"""The polarity reference against an explicit O(L^2) form, and padding behaviour."""

import pytest
import torch

from attention_zoo.kernels.polarity.reference import polarity_attention


def explicit(q, k, v, power, key_mask=None, eps=1e-6):
    """o_i = sum_j s_ij v_j / (sum_j s_ij + n eps), s_ij = phi(q_i).phi(k_j) + phi(-q_i).phi(-k_j)
    on the first half of v, and the opposite pairing (phi(q).phi(-k) + phi(-q).phi(k)) on the second."""
    b, h, l, d = q.shape
    p = power.reshape(1, h, 1, d)
    phi = lambda x: torch.clamp(x, min=0) ** p  # noqa: E731  (fine in float64 forward)
    same = phi(q) @ phi(k).transpose(-1, -2) + phi(-q) @ phi(-k).transpose(-1, -2)  # (B, H, L, L)
    opp = phi(q) @ phi(-k).transpose(-1, -2) + phi(-q) @ phi(k).transpose(-1, -2)
    if key_mask is None:
        key_mask = torch.ones(b, l, dtype=torch.bool)
    m = key_mask[:, None, None, :].double()
    n = key_mask.sum(-1).double()[:, None, None, None]
    out = []
    for s, vh in ((same * m, v[..., : d // 2]), (opp * m, v[..., d // 2 :])):
        out.append((s @ vh) / (s.sum(-1, keepdim=True) + n * eps))
    return torch.cat(out, -1)


def inputs(b=2, h=3, l=37, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, l, d, generator=g, dtype=torch.float64) for _ in range(3))
    power = 1 + 3 * torch.rand(h, d, generator=g, dtype=torch.float64)
    return q, k, v, power


def test_equals_explicit_form():
    q, k, v, power = inputs()
    torch.testing.assert_close(polarity_attention(q, k, v, power), explicit(q, k, v, power), rtol=1e-10, atol=1e-12)


def test_equals_explicit_form_with_padding():
    q, k, v, power = inputs()
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[0, 20:] = False
    mask[1, 5:9] = False
    got = polarity_attention(q, k, v, power, key_mask=mask)
    torch.testing.assert_close(got, explicit(q, k, v, power, mask), rtol=1e-10, atol=1e-12)


def test_padding_does_not_change_real_positions():
    q, k, v, power = inputs(b=1, l=30)
    mask = torch.zeros(1, 30, dtype=torch.bool)
    mask[:, :18] = True
    base = polarity_attention(q, k, v, power, key_mask=mask)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for t in (q2, k2, v2):
        t[:, :, 18:] = 100 * torch.randn_like(t[:, :, 18:])
    moved = polarity_attention(q2, k2, v2, power, key_mask=mask)
    torch.testing.assert_close(moved[:, :, :18], base[:, :, :18], rtol=0, atol=0)
    # and a truncated sequence gives the same real outputs (n counts only real keys)
    short = polarity_attention(q[:, :, :18], k[:, :, :18], v[:, :, :18], power)
    torch.testing.assert_close(base[:, :, :18], short, rtol=1e-12, atol=1e-12)


def test_power_gradient_is_finite_where_relu_is_zero():
    q, k, v, power = inputs(l=9)
    power.requires_grad_(True)
    q[..., 0] = 0.0  # exact zeros: d/dp of 0**p must be 0, not NaN
    polarity_attention(q, k, v, power).sum().backward()
    assert torch.isfinite(power.grad).all()
    assert power.grad.abs().sum() > 0


def test_gradcheck_all_inputs():
    q, k, v, power = inputs(b=1, h=1, l=5, d=4)
    mask = torch.tensor([[True, True, True, False, True]])
    args = [t.requires_grad_(True) for t in (q, k, v, power)]
    assert torch.autograd.gradcheck(lambda *a: polarity_attention(*a, key_mask=mask), args)


@pytest.mark.parametrize("bad", ["odd_d", "mask_shape"])
def test_shape_errors(bad):
    q, k, v, power = inputs(d=8)
    if bad == "odd_d":
        q, k, v = q[..., :7], k[..., :7], v[..., :7]
        power = power[:, :7]
        with pytest.raises(ValueError, match="even"):
            polarity_attention(q, k, v, power)
    else:
        with pytest.raises(ValueError, match="key_mask"):
            polarity_attention(q, k, v, power, key_mask=torch.ones(2, 5, dtype=torch.bool))


def test_layer_feeds_the_kernel_one_low_precision_dtype(monkeypatch):
    """Under bf16 autocast, float32 parameters (scale, pos) must not promote q or k to float32:
    the kernel would take its slow float32 path (measured: a 3x slower attention on the H100)."""
    import attention_zoo
    import attention_zoo.polarity as layer_mod

    seen = []
    real = layer_mod.polarity_attention

    def spy(q, k, v, power, **kw):
        seen.append((q.dtype, k.dtype, v.dtype))
        return real(q, k, v, power, **kw)

    monkeypatch.setattr(layer_mod, "polarity_attention", spy)
    m = attention_zoo.build("polarity", 32, 2, 40)
    x = torch.randn(2, 40, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x, torch.ones(2, 40, dtype=torch.bool))
    assert seen == [(torch.bfloat16,) * 3]
    assert torch.isfinite(out.float()).all()
