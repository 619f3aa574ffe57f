"""Kernel / low-rank attention variants against exact forms written here, in float64.

* linear, cosformer, flatten, hedgehog, performer (fixed features), kernelized: equal to an
  explicit L x L "left product" (similarity matrix from the feature map or kernel, rows
  normalised here), with and without padding;
* nystromformer, skyformer with as many landmarks as tokens: close to exact softmax /
  Gaussian-kernel attention (tolerances stated below), exact once the pseudo-inverse
  iteration has converged;
* performer: the error against exact softmax attention shrinks as features grow.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import attention_zoo as az
from attention_zoo.nystromformer import nystrom_attention, segment_landmarks
from attention_zoo.registry import HyperparameterError
from attention_zoo.skyformer import skyformer_attention

DIM, HEADS, MAX_LEN = 32, 2, 512
D = DIM // HEADS


def masks(l: int) -> torch.Tensor:
    """(3, l): no padding; trailing padding; interior and trailing padding."""
    m = torch.ones(3, l, dtype=torch.bool)
    m[1, 2 * l // 3 :] = False
    m[2, 3:7] = False
    m[2, l // 2 :] = False
    m[2, l - 2] = True
    return m


def to_heads(t: torch.Tensor) -> torch.Tensor:
    b, l, _ = t.shape
    return t.reshape(b, l, HEADS, D).permute(0, 2, 1, 3)  # (B, H, L, D)


def from_heads(t: torch.Tensor) -> torch.Tensor:
    b, h, l, d = t.shape
    return t.permute(0, 2, 1, 3).reshape(b, l, h * d)


def build(name: str, seed: int = 0, **hp) -> torch.nn.Module:
    torch.manual_seed(seed)
    return az.build(name, DIM, HEADS, MAX_LEN, **hp).double().eval()


def inputs(l: int, seed: int = 1, scale: float = 1.0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(3, l, DIM, dtype=torch.float64) * scale


def qkv(mod: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return mod.qkv(x).chunk(3, dim=-1)  # (B, L, C) each


def normalise_rows(sim: torch.Tensor, mask: torch.Tensor, v: torch.Tensor, eps: float, clamp: bool = False):
    """sum_j sim_ij v_j / (sum_j sim_ij + eps) over real keys j; sim (B, H, L, L) explicit."""
    sim = sim * mask[:, None, None, :].double()
    den = sim.sum(-1, keepdim=True)
    den = den.clamp_min(eps) if clamp else den + eps
    return torch.einsum("bhij,bhjd->bhid", sim / den, v)


def assert_close_on_real(out: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, rtol: float) -> None:
    err = (out - ref)[mask].norm() / ref[mask].norm()
    assert err < rtol, f"relative error {err:.3e} >= {rtol:.1e}"


def rel_err(out: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    sel = mask[:, None, :, None].expand_as(ref)
    return ((out - ref)[sel].norm() / ref[sel].norm()).item()


def exact_softmax(q, k, v, mask, temperature=None):
    """softmax(q.k / temperature) over real keys; temperature sqrt(d) unless given."""
    temperature = math.sqrt(q.shape[-1]) if temperature is None else temperature
    logits = torch.einsum("bhid,bhjd->bhij", q, k) / temperature
    logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1) @ v


def exact_gaussian(q, k, v, mask, normalize=False):
    """exp(-||q_i - k_j||^2 / (2 sqrt(d))) over real keys, optionally row-normalised."""
    dist2 = torch.cdist(q, k) ** 2  # (B, H, L, L)
    c = torch.exp(-dist2 / (2 * math.sqrt(q.shape[-1]))) * mask[:, None, None, :].double()
    if normalize:
        c = c / c.sum(-1, keepdim=True)
    return c @ v


@pytest.mark.parametrize("l", [41, 64])
def test_linear_left_product(l):
    mod, x, mask = build("linear"), inputs(l), masks(l)
    q, k, v = (to_heads(t) for t in qkv(mod, x))
    phi = lambda t: torch.where(t > 0, t + 1, torch.exp(t))  # noqa: E731  elu(t) + 1
    sim = torch.einsum("bhid,bhjd->bhij", phi(q), phi(k))
    ref = mod.proj(from_heads(normalise_rows(sim, mask, v, 1e-6)))
    assert_close_on_real(mod(x, mask), ref, mask, 1e-12)


@pytest.mark.parametrize("mode", ["real", "padded", "max_len"])
def test_cosformer_left_product(mode):
    l = 45
    mod, x, mask = build("cosformer", reweight_length=mode), inputs(l), masks(l)
    q, k, v = (to_heads(t) for t in qkv(mod, x))
    pos = torch.arange(1, l + 1, dtype=torch.float64)
    if mode == "real":
        big_m = torch.tensor([max(i + 1 for i in range(l) if row[i]) for row in mask], dtype=torch.float64)
    elif mode == "padded":
        big_m = torch.full((3,), float(l), dtype=torch.float64)
    else:
        big_m = torch.full((3,), float(MAX_LEN), dtype=torch.float64)
    ratio = (pos[None, :] / big_m[:, None]).clamp_max(1.0)  # (B, L), i / M
    # The paper's similarity: relu(q_i).relu(k_j) cos(pi/2 (i - j) / M).
    cos_w = torch.cos(math.pi / 2 * (ratio[:, :, None] - ratio[:, None, :]))  # (B, L, L)
    sim = torch.einsum("bhid,bhjd->bhij", q.relu(), k.relu()) * cos_w[:, None]
    ref = mod.proj(from_heads(normalise_rows(sim, mask, v, 1e-6, clamp=True)))
    assert_close_on_real(mod(x, mask), ref, mask, 1e-12)


def test_cosformer_real_length_ignores_trailing_padding():
    mod, x = build("cosformer"), inputs(40)
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[:, 30:] = False
    full = mod(x, mask)[:, :30]
    cut = mod(x[:, :30], mask[:, :30])
    torch.testing.assert_close(full, cut, rtol=1e-12, atol=1e-12)


def test_flatten_left_product():
    l = 47
    mod, x, mask = build("flatten"), inputs(l), masks(l)
    with torch.no_grad():  # non-trivial learned scale and key positions
        mod.scale.normal_()
        mod.pos.normal_(std=0.3)
    q, k, v = qkv(mod, x)
    k = k + mod.pos[:, :l]

    def focus(t):  # f_p((relu(t) + 1e-6) / softplus(s)), norms over all C channels, p = 3
        t = (t.clamp_min(0) + 1e-6) / torch.log1p(torch.exp(mod.scale))
        return t.norm(dim=-1, keepdim=True) * t**3 / (t**3).norm(dim=-1, keepdim=True)

    vh = to_heads(v) * mask[:, None, :, None].double()
    sim = torch.einsum("bhid,bhjd->bhij", to_heads(focus(q)), to_heads(focus(k)))
    n = mask.sum(-1).double()[:, None, None, None]
    sim = sim * mask[:, None, None, :].double() / n  # K^T V / n and mean of keys
    o = torch.einsum("bhij,bhjd->bhid", sim, vh) / (sim.sum(-1, keepdim=True) + 1e-6)
    w, bias = mod.dwc.weight, mod.dwc.bias  # (D, 1, 5), (D,)
    conv = F.conv1d(vh.reshape(3 * HEADS, l, D).transpose(1, 2), w, bias, padding=2, groups=D)
    o = o + conv.transpose(1, 2).reshape(3, HEADS, l, D)
    assert_close_on_real(mod(x, mask), mod.proj(from_heads(o)), mask, 1e-12)


def test_hedgehog_left_product():
    """Output and every gradient (input, feature-map weights and biases, projections) equal the
    explicit form, whose feature map is the per-head einsum the module's broadcast matmul replaced."""
    l = 43
    mod, x, mask = build("hedgehog"), inputs(l).requires_grad_(), masks(l)
    with torch.no_grad():  # move away from the identity init
        for p in (mod.q_weight, mod.k_weight, mod.q_bias, mod.k_bias):
            p.add_(0.3 * torch.randn_like(p))
    q, k, v = (to_heads(t) for t in qkv(mod, x))

    def phi(t, w, b):
        z = torch.einsum("bhld,hde->bhle", t, w) + b[None, :, None, :]
        return torch.cat([torch.softmax(z, -1), torch.softmax(-z, -1)], dim=-1)

    sim = torch.einsum(
        "bhid,bhjd->bhij", phi(q, mod.q_weight, mod.q_bias), phi(k, mod.k_weight, mod.k_bias)
    )
    ref = mod.proj(from_heads(normalise_rows(sim, mask, v, 1e-6)))
    out = mod(x, mask)
    assert_close_on_real(out, ref, mask, 1e-12)
    leaves = [x, *mod.parameters()]
    probe = torch.randn_like(out) * mask[..., None]  # a loss on the real positions only
    got = torch.autograd.grad((out * probe).sum(), leaves)
    want = torch.autograd.grad((ref * probe).sum(), leaves)
    names = ["x"] + [n for n, _ in mod.named_parameters()]
    assert len(names) == 9 and all(g.abs().max() > 0 for g in want)
    for name, g, w in zip(names, got, want):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_performer_left_product(kernel):
    l = 50
    mod, x, mask = build("performer", nb_features=64, kernel=kernel), inputs(l), masks(l)
    q, k, v = (to_heads(t) for t in qkv(mod, x))
    phi_q = mod.feature_map(q, mask, is_query=True)
    phi_k = mod.feature_map(k, mask, is_query=False)
    assert (phi_q > 0).all() and (phi_k > 0).all()
    sim = torch.einsum("bhif,bhjf->bhij", phi_q, phi_k)
    ref = mod.proj(from_heads(normalise_rows(sim, mask, v, 0.0)))
    assert_close_on_real(mod(x, mask), ref, mask, 1e-12)


# The Skyformer code's LRA Performer (attention_zoo/performer.py says where each comes from).
SKYFORMER_CODE = dict(qk_scale="d", key_max="batch", stabiliser=1e-4, padded_keys=True)


def test_performer_skyformer_code_form():
    """Written out: q and k scaled by d^-1/2 in all, padded keys zeroed but kept in the
    normaliser, the key-side c one max over the whole batch (padded keys included), 1e-4."""
    l = 37
    mod, x, mask = build("performer", nb_features=48, **SKYFORMER_CODE), inputs(l), masks(l)
    assert not mask.all()  # padded keys present, so counting them is tested
    q, k, v = (to_heads(t) for t in qkv(mod, x))
    keep = mask[:, None, :, None].double()
    k, v = k * keep, v * keep
    w = mod.features  # (m, D)
    m, d = w.shape

    def phi(t, c):
        t = t / math.sqrt(d)
        return (torch.exp(t @ w.T - (t * t).sum(-1, keepdim=True) / 2 - c) + 1e-4) / math.sqrt(m)

    phi_q = phi(q, ((q / math.sqrt(d)) @ w.T).amax(-1, keepdim=True))
    phi_k = phi(k, ((k / math.sqrt(d)) @ w.T).max())
    sim = phi_q @ phi_k.transpose(-1, -2)  # (B, H, L, L), every key
    ref = mod.proj(from_heads((sim @ v) / sim.sum(-1, keepdim=True)))
    assert_close_on_real(mod(x, mask), ref, mask, 1e-12)
    # each of the four differs from the paper's form on this input
    for name, paper in [("qk_scale", "sqrt_d"), ("key_max", "head"), ("stabiliser", 1e-6), ("padded_keys", False)]:
        other = build("performer", nb_features=48, **{**SKYFORMER_CODE, name: paper})
        assert (other(x, mask) - ref)[mask].abs().max() > 1e-9, name


def test_performer_relu_kernel_ignores_the_softmax_kernel_options():
    l = 23
    x, mask = inputs(l), masks(l)
    plain = build("performer", nb_features=32, kernel="relu")(x, mask)
    other = build("performer", nb_features=32, kernel="relu", qk_scale="d", key_max="batch", stabiliser=1e-4)
    assert torch.equal(other(x, mask), plain)


def test_performer_options_are_checked():
    with pytest.raises(HyperparameterError, match="stabiliser must be >= 0"):
        az.make_hparams("performer", stabiliser=-1e-4)
    with pytest.raises(HyperparameterError, match="qk_scale"):
        az.make_hparams("performer", qk_scale="d2")


@pytest.mark.parametrize("qk_scale", ["sqrt_d", "d"])
def test_performer_error_shrinks_with_features(qk_scale):
    l, seeds = 60, range(4)

    def mean_err(m: int) -> float:
        errs = []
        for seed in seeds:
            mod = build("performer", seed=seed, nb_features=m, qk_scale=qk_scale)
            x, mask = inputs(l, seed=seed), masks(l)
            q, k, v = (to_heads(t) for t in qkv(mod, x))
            temperature = math.sqrt(D) if qk_scale == "sqrt_d" else D
            errs.append(rel_err(mod.attend(q, k, v, mask), exact_softmax(q, k, v, mask, temperature), mask))
        return sum(errs) / len(errs)

    small, large = mean_err(16), mean_err(1024)
    # Monte-Carlo error ~ m^-1/2: 16 -> 1024 should cut it ~8x; ask for 2.5x.
    assert large < small / 2.5, (small, large)
    assert large < 0.2, large


def test_performer_redraw_interval():
    mod = build("performer", nb_features=16, redraw_interval=2).train()
    x, mask = inputs(10), masks(10)
    seen = [mod.features.clone()]
    for _ in range(5):
        mod(x, mask)
        seen.append(mod.features.clone())
    # Redraw before the 3rd and 5th training forward passes.
    changed = [not torch.equal(a, b) for a, b in zip(seen, seen[1:])]
    assert changed == [False, False, True, False, True]
    mod.eval()
    before = mod.features.clone()
    for _ in range(3):
        mod(x, mask)
    assert torch.equal(before, mod.features)
    assert "features" in dict(mod.named_buffers()) and "features" not in dict(mod.named_parameters())


@pytest.mark.parametrize("normalize", [False, True])
def test_kernelized_left_product(normalize):
    l = 45
    mod, x, mask = build("kernelized", normalize=normalize), inputs(l), masks(l)
    q, k, v = (to_heads(t) for t in qkv(mod, x))
    ref = mod.proj(from_heads(exact_gaussian(q, k, v, mask, normalize)))
    assert_close_on_real(mod(x, mask), ref, mask, 1e-12)


def test_nystrom_segment_landmarks():
    x = torch.randn(1, 1, 10, 3, dtype=torch.float64)
    mask = torch.ones(1, 10, dtype=torch.bool)
    lm, valid = segment_landmarks(x, mask, 4)  # 10 tokens -> segments of 3, 2, 3, 2
    ref = torch.stack([x[0, 0, a:b].mean(0) for a, b in [(0, 3), (3, 5), (5, 8), (8, 10)]])
    torch.testing.assert_close(lm[0, 0], ref)
    assert valid.all()
    mask[0, [1, 6]] = False  # 8 real tokens -> 4 segments of 2 real tokens each
    lm, valid = segment_landmarks(x, mask, 4)
    ref = torch.stack([x[0, 0, idx].mean(0) for idx in ([0, 2], [3, 4], [5, 7], [8, 9])])
    torch.testing.assert_close(lm[0, 0], ref)
    lm, valid = segment_landmarks(x, mask, 12)  # fewer real tokens than landmarks
    assert valid.tolist() == [[True] * 8 + [False] * 4]
    torch.testing.assert_close(lm[0, 0, :8], x[0, 0, mask[0]])


@pytest.mark.parametrize("iters, tol", [(6, 5e-2), (20, 1e-8)])
def test_nystrom_landmarks_as_tokens_approach_softmax(iters, tol):
    # As many landmarks as tokens: F A^+ B = softmax(qk^T) once A^+ is exact; with the
    # default 6 iterations the pseudo-inverse is not converged (about 2e-2 here).
    l = 40
    torch.manual_seed(2)
    q, k, v = (torch.randn(3, HEADS, l, D, dtype=torch.float64) for _ in range(3))
    mask = masks(l)
    s = D**-0.25
    out = nystrom_attention(q * s, k * s, v, mask, num_landmarks=l, iters=iters)
    assert rel_err(out, exact_softmax(q, k, v, mask), mask) < tol


def test_nystromformer_short_sequence_is_exact_softmax():
    l = 30  # <= num_landmarks: exact path
    mod, x, mask = build("nystromformer", num_landmarks=32), inputs(l), masks(l)
    q, k, v = (to_heads(t) for t in qkv(mod, x))
    vm = v * mask[:, None, :, None].double()
    w = mod.conv.weight  # (H, 1, 35, 1): one length kernel per head, shared by its D channels
    conv = F.conv2d(vm, w, padding=(17, 0), groups=HEADS)
    ref = mod.proj(from_heads(exact_softmax(q, k, v, mask) + conv))
    assert_close_on_real(mod(x, mask), ref, mask, 1e-12)


def test_nystromformer_long_sequence_ignores_trailing_padding():
    # L > landmarks and not divisible by them; landmarks are over real tokens only.
    mod = build("nystromformer", num_landmarks=8)
    x = inputs(61)
    mask = torch.ones(3, 61, dtype=torch.bool)
    mask[:, 45:] = False
    full = mod(x, mask)
    assert torch.isfinite(full).all()
    cut = mod(x[:, :45], mask[:, :45])
    torch.testing.assert_close(full[:, :45], cut, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("iters, tol", [(6, 5e-2), (20, 1e-8)])
def test_skyformer_all_tokens_as_landmarks_approach_gaussian_kernel(normalize, iters, tol):
    # 2L landmarks (every query and key) and no ridge: the Nystrom form is exact once the
    # iterative pseudo-inverse has converged.
    l = 40
    torch.manual_seed(3)
    q, k, v = (torch.randn(3, HEADS, l, D, dtype=torch.float64) for _ in range(3))
    mask = masks(l)
    out = skyformer_attention(q, k, v, mask, num_feats=2 * l, ridge=0.0, iters=iters, normalize=normalize)
    assert rel_err(out, exact_gaussian(q, k, v, mask, normalize), mask) < tol


def test_skyformer_module_samples_only_real_tokens():
    l = 90  # > num_feats / 2: sampled landmarks
    mod, x, mask = build("skyformer", num_feats=32), inputs(l), masks(l)
    torch.manual_seed(5)
    out = mod(x, mask)
    assert torch.isfinite(out).all()
    x2 = x.clone()
    x2[~mask] = 1e3 * torch.randn_like(x2[~mask])
    torch.manual_seed(5)  # same landmark draw
    torch.testing.assert_close(mod(x2, mask)[mask], out[mask], rtol=1e-10, atol=1e-10)


# --- the Skyformer code's forms (the skyformer protocol's nystromformer and skyformer) ---------


def newton_schulz(a: torch.Tensor, c: torch.Tensor, iters: int = 6) -> torch.Tensor:
    """Z_0 = A^T / c, then Z <- Z/4 (13 I - AZ (15 I - AZ (7 I - AZ))), written out."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    z = a.transpose(-1, -2) / c
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def nystrom_code_form(q, k, v, mask, m):
    """The Nyströmformer / Skyformer code's Nystrom attention, q and k already scaled: zeroed
    padding, landmarks = means of m equal segments of the (zero-extended) length, the landmark
    kernels softmaxed over every landmark, the third over the real keys, Z_0 = A^T / (largest
    column sum in the batch)."""
    keep = mask[:, None, :, None].double()
    q, k = q * keep, k * keep
    l = q.shape[2]
    seg = -(-l // m)  # tokens a segment after zero-extending to m * seg
    ext = [F.pad(t, (0, 0, 0, m * seg - l)) for t in (q, k)]
    q_l, k_l = (torch.stack([t[:, :, j * seg:(j + 1) * seg].sum(2) / seg for j in range(m)], 2) for t in ext)
    k1 = torch.softmax(q @ k_l.transpose(-1, -2), -1)
    k2 = torch.softmax(q_l @ k_l.transpose(-1, -2), -1)
    k3 = torch.softmax((q_l @ k.transpose(-1, -2)).masked_fill(~mask[:, None, None, :], float("-inf")), -1)
    return k1 @ newton_schulz(k2, k2.sum(-2).max()) @ (k3 @ v)


@pytest.mark.parametrize("l, m", [(24, 4), (22, 4), (37, 8)])
def test_nystrom_padded_landmarks_are_the_codes_form(l, m):
    torch.manual_seed(4)
    q, k, v = (torch.randn(3, HEADS, l, D, dtype=torch.float64) for _ in range(3))
    mask = masks(l)
    out = nystrom_attention(q, k, v, mask, num_landmarks=m, landmarks="padded", pinv_scope="batch")
    torch.testing.assert_close(out, nystrom_code_form(q, k, v, mask, m), rtol=1e-10, atol=1e-12)
    # each option is a change where sequences are padded
    for landmarks, scope in [("real", "batch"), ("padded", "matrix")]:
        other = nystrom_attention(q, k, v, mask, num_landmarks=m, landmarks=landmarks, pinv_scope=scope)
        assert rel_err(other, out, mask) > 1e-6, (landmarks, scope)
    # one unpadded sequence and one head, m dividing L: the two forms are one
    if l % m == 0:
        one = (t[:1, :1] for t in (q, k, v))
        a, b, c = one
        torch.testing.assert_close(nystrom_attention(a, b, c, mask[:1], m, landmarks="padded", pinv_scope="batch"),
                                   nystrom_attention(a, b, c, mask[:1], m), rtol=1e-10, atol=1e-12)


def test_nystromformer_module_in_the_codes_form():
    l, m = 45, 8
    mod = build("nystromformer", num_landmarks=m, conv_kernel=0, landmarks="padded", pinv_scope="batch")
    x, mask = inputs(l), masks(l)
    q, k, v = (to_heads(t) for t in qkv(mod, x))
    s = D**-0.25
    ref = mod.proj(from_heads(nystrom_code_form(q * s, k * s, v, mask, m)))
    assert_close_on_real(mod(x, mask), ref, mask, 1e-10)


def test_iterative_pinv_batch_scope():
    """scope "batch": Z_0 by the largest norm over every matrix; the same pseudo-inverse once
    converged, another iterate before."""
    from attention_zoo.nystromformer import iterative_pinv

    torch.manual_seed(6)
    a = torch.softmax(torch.randn(2, 3, 5, 5, dtype=torch.float64) * torch.tensor([0.5, 3.0])[:, None, None, None], -1)
    batch = iterative_pinv(a, 6, "colsum", "batch")
    torch.testing.assert_close(batch, newton_schulz(a, a.sum(-2).max()), rtol=1e-12, atol=1e-12)
    assert (batch - iterative_pinv(a, 6, "colsum")).abs().max() > 1e-6
    torch.testing.assert_close(iterative_pinv(a, 60, "colsum", "batch"), torch.linalg.pinv(a), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(iterative_pinv(a[:1, :1], 6, "paper", "batch"), iterative_pinv(a[:1, :1], 6))


def skyformer_code_form(q, k, v, mask, idx_q, idx_k, ridge=0.1):
    """The Skyformer code's attention for given landmark positions: q, k scaled by d^-1/4 and
    zeroed at padding, every pick a landmark (padded ones are zero vectors), Gaussian kernel
    exp(-|x - y|^2 / 2), W + ridge I normalised by its row sums, Z_0 by the batch's largest
    column sum, padded keys and values zeroed."""
    keep = mask[:, None, :, None].double()
    s = q.shape[-1] ** -0.25
    q, k, v = q * s * keep, k * s * keep, v * keep
    b = torch.arange(q.shape[0])[:, None]
    x_s = torch.cat([q.transpose(1, 2)[b, idx_q], k.transpose(1, 2)[b, idx_k]], 1).transpose(1, 2)  # (B, H, 2s, D)

    def kern(x, y):
        return torch.exp(-torch.cdist(x, y) ** 2 / 2)

    w = kern(x_s, x_s) + ridge * torch.eye(x_s.shape[2], dtype=q.dtype)
    dn = w.sum(-1) ** -0.5
    n = dn[..., :, None] * w * dn[..., None, :]
    z = newton_schulz(n, n.sum(-2).max())
    a_k = kern(k, x_s) * keep
    return kern(q, x_s) @ (dn[..., :, None] * z * dn[..., None, :]) @ (a_k.transpose(-1, -2) @ v)


def test_skyformer_prefix_sampling_is_the_codes_form():
    from attention_zoo.skyformer import sample_prefix

    l, s = 30, 12
    mask = masks(l)
    mask[0, -1] = False  # rows 0 and 1 get different numbers of real tokens
    torch.manual_seed(7)
    idx = sample_prefix(mask, s)
    n = mask.sum(-1)
    assert idx.shape == (3, s) and (idx >= 0).all() and (idx < n[:, None]).all()
    torch.manual_seed(7)
    u = torch.rand(s, dtype=torch.float32)
    assert torch.equal(idx, (n[:, None].float() * u).long())  # one draw for the batch, scaled per sequence
    assert not mask.gather(1, idx).all()  # row 2's interior padding sits in its prefix: zeroed picks stay
    torch.manual_seed(8)
    q, k, v = (torch.randn(3, HEADS, l, D, dtype=torch.float64) for _ in range(3))
    idx_k = sample_prefix(mask, s)
    out = skyformer_attention(q, k, v, mask, num_feats=2 * s, landmarks=(idx, idx_k), sampling="prefix",
                              pinv_scope="batch")
    torch.testing.assert_close(out, skyformer_code_form(q, k, v, mask, idx, idx_k), rtol=1e-10, atol=1e-12)
    real = skyformer_attention(q, k, v, mask, num_feats=2 * s, landmarks=(idx, idx_k), pinv_scope="batch")
    assert rel_err(real, out, mask) > 1e-6  # "real" drops the padded picks
    # more picks than tokens: with replacement
    assert sample_prefix(mask[:1, :5], 16).unique().numel() <= 5


@pytest.mark.parametrize("name, hp, message", [
    ("nystromformer", {"landmarks": "all"}, "landmarks must be"),
    ("nystromformer", {"pinv_scope": "global"}, "pinv_scope must be"),
    ("skyformer", {"sampling": "first"}, "sampling must be"),
    ("skyformer", {"pinv_scope": "global"}, "pinv_scope must be"),
])
def test_code_form_options_are_checked(name, hp, message):
    with pytest.raises(HyperparameterError, match=message):
        az.build(name, DIM, HEADS, MAX_LEN, **hp)
