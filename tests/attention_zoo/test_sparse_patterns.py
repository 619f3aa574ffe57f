"""Exact checks of the softmax-family variants against forms written out independently.

softmax_naive, local, sparse, longformer, bigbird, sinkhorn, reformer, informer,
linformer, synthesizer. Everything runs in float64; the references below compute
projections from the modules' weights by hand and never call the variants' helpers.
"""

from __future__ import annotations

import math

import pytest
import torch

import attention_zoo as zoo
from attention_zoo.registry import HyperparameterError

DIM, HEADS, D = 16, 2, 8
MINE = [
    "softmax_naive",
    "local",
    "sparse",
    "longformer",
    "bigbird",
    "sinkhorn",
    "reformer",
    "informer",
    "linformer",
    "synthesizer",
]
# small block sizes so that short sequences already have several blocks
SMALL = {
    "local": {"block_size": 16},
    "sparse": {"block_size": 16, "summary": 4},
    "longformer": {"window": 12, "n_global": 2},
    "bigbird": {"block_size": 8, "seed": 3},
    "sinkhorn": {"block_size": 16},
    "reformer": {"chunk_len": 16, "n_buckets": 4},
    "informer": {"factor": 2},
    "linformer": {"k": 24},
    "synthesizer": {"k": 8},
}


def make(name: str, max_len: int = 300, **hp) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.build(name, DIM, HEADS, max_len, **hp).double().eval()


def inputs(b: int, length: int, pad: list[int] | None = None, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, L, C) float64 and a key mask with ``pad[i]`` padded positions at the end of row i."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, DIM, generator=g, dtype=torch.float64)
    mask = torch.ones(b, length, dtype=torch.bool)
    for i, p in enumerate(pad or []):
        if p:
            mask[i, length - p :] = False
    return x, mask


def heads(t: torch.Tensor) -> torch.Tensor:
    b, length, _ = t.shape
    return t.view(b, length, HEADS, D).transpose(1, 2)  # (B, H, L, D)


def qkv(m: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    w = x @ m.qkv.weight.T + m.qkv.bias
    return tuple(heads(t) for t in w.split(DIM, dim=-1))


def out_proj(m: torch.nn.Module, o: torch.Tensor) -> torch.Tensor:
    b, _, length, _ = o.shape
    return o.transpose(1, 2).reshape(b, length, DIM) @ m.proj.weight.T + m.proj.bias


def softmax_ref(q, k, v, allowed) -> torch.Tensor:
    """Dense softmax over the allowed keys; a row with none allowed outputs 0."""
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~allowed, float("-inf"))
    p = torch.softmax(s, dim=-1)
    p = torch.where(allowed.any(-1, keepdim=True), p, torch.zeros_like(p))
    return p @ v


def dense_ref(m, x, mask, pattern=None) -> torch.Tensor:
    """Output of a q/k/v module whose attention is ``pattern`` (or full) AND the key mask."""
    q, k, v = qkv(m, x)
    allowed = mask[:, None, None, :]
    if pattern is not None:
        allowed = allowed & pattern
    return out_proj(m, softmax_ref(q, k, v, allowed))


def real_rows(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return y[mask]


# ---------------------------------------------------------------------------- generic


@pytest.mark.parametrize("name", MINE)
def test_registered_with_typed_defaults(name):
    v = zoo.get(name)
    assert v.defaults() == zoo.make_hparams(name).__dict__


@pytest.mark.parametrize("name", MINE)
def test_finite_with_lonely_tokens_and_grads(name):
    m = zoo.build(name, DIM, HEADS, 120, **SMALL.get(name, {}))
    x, mask = inputs(3, 101, [0, 100, 40])  # row 1: a single real token, only itself to attend
    x = x.float().requires_grad_()
    torch.manual_seed(0)
    y = m(x, mask)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.sum().backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", MINE)
def test_padding_does_not_leak(name):
    m = make(name, 120, **SMALL.get(name, {}))
    x, mask = inputs(2, 77, [0, 30])
    x2 = x.clone()
    x2[~mask] = 1e3 * torch.randn_like(x2[~mask])
    torch.manual_seed(5)  # reformer and informer draw random numbers each forward
    y = m(x, mask)
    torch.manual_seed(5)
    y2 = m(x2, mask)
    torch.testing.assert_close(real_rows(y2, mask), real_rows(y, mask), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", MINE)
def test_bf16_autocast_runs(name):
    m = zoo.build(name, DIM, HEADS, 120, **SMALL.get(name, {}))
    x, mask = inputs(2, 90, [0, 25])
    torch.manual_seed(0)
    ref = m(x.float(), mask)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x.float(), mask)
    assert torch.isfinite(y).all()
    assert (y.float() - ref)[mask].abs().max() < 0.1 * ref[mask].abs().max() + 0.05


# ---------------------------------------------------------------------- softmax_naive


def test_softmax_naive_equals_softmax():
    ref, m = make("softmax"), make("softmax_naive")
    m.load_state_dict(ref.state_dict())
    x, mask = inputs(3, 45, [0, 7, 44])
    torch.testing.assert_close(m(x, mask), ref(x, mask), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m(x, mask), dense_ref(m, x, mask), rtol=1e-12, atol=1e-12)


def test_softmax_skyformer_options(monkeypatch):
    """``softmax:dropout=p,float32=true``: the Skyformer code's attention (dropout on the
    probabilities, float32 under autocast); the defaults keep the plain variant."""
    ref, m = make("softmax"), make("softmax", dropout="0.25", float32="true")
    m.load_state_dict(ref.state_dict())
    x, mask = inputs(2, 9, [0, 4])
    torch.testing.assert_close(m(x, mask), ref(x, mask), rtol=1e-5, atol=1e-6)  # eval: no dropout; float32 maths
    m.train()
    draws = torch.stack([m(x, mask) for _ in range(3000)])
    assert (draws[0] - draws[1]).abs().max() > 1e-3  # dropout acts in training
    torch.testing.assert_close(draws.mean(0), ref(x, mask), rtol=0, atol=0.05)  # and is unbiased
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, *a, **k: seen.append((q.dtype, torch.is_autocast_enabled("cpu"))) or real(q, *a, **k))
    for module in (make("softmax").float(), make("softmax", float32=True).float()):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            module(x.float(), mask)
    assert seen == [(torch.bfloat16, True), (torch.float32, False)]
    with pytest.raises(HyperparameterError, match="dropout must be in"):
        make("softmax", dropout=1.0)


def full_copy(name: str, **hp):
    """(module, softmax_naive with the same q/k/v/out weights)."""
    m, ref = make(name, **hp), make("softmax_naive")
    ref.qkv.load_state_dict(m.qkv.state_dict())
    ref.proj.load_state_dict(m.proj.state_dict())
    return m, ref


# ------------------------------------------------------------------------------ local


def test_local_covering_block_is_full_softmax():
    m, ref = full_copy("local", block_size=64)
    x, mask = inputs(2, 60, [0, 13])
    torch.testing.assert_close(m(x, mask), ref(x, mask), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length,block", [(133, 20), (100, 50), (7, 50)])
def test_local_pattern_count(length, block):
    m = make("local", block_size=block)
    expected = (length // block) * block**2 + (length % block) ** 2
    assert int(m.pattern(length).sum()) == expected


def test_local_matches_dense_pattern():
    m = make("local", block_size=20)
    x, mask = inputs(2, 133, [0, 30])
    torch.testing.assert_close(m(x, mask), dense_ref(m, x, mask, m.pattern(133)), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- sparse


def sparse_count(length: int, l: int, c: int) -> int:
    sizes = [min(l, length - s) for s in range(0, length, l)]
    summ = [max(0, n - (l - c)) for n in sizes]  # last c slots of each block (those that exist)
    total = sum(summ)
    return sum(n * (n + total - s) for n, s in zip(sizes, summ))


def test_sparse_covering_block_is_full_softmax():
    m, ref = full_copy("sparse", block_size=128, summary=32)
    x, mask = inputs(2, 90, [0, 20])
    torch.testing.assert_close(m(x, mask), ref(x, mask), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length,l,c", [(150, 32, 8), (256, 128, 32), (300, 128, 32), (100, 128, 32), (64, 16, 0)])
def test_sparse_pattern_count(length, l, c):
    m = make("sparse", block_size=l, summary=c)
    assert int(m.pattern(length).sum()) == sparse_count(length, l, c)


def test_sparse_pattern_published_defaults():
    p = make("sparse").pattern(400)  # l = 128, c = 32: blocks [0, 128), [128, 256), [256, 384), [384, 400)
    row = p[200]  # a query of block 1
    assert row[128:256].all()  # its own block
    assert row[96:128].all() and not row[:96].any()  # block 0: only its last 32 positions
    assert row[352:384].all() and not row[256:352].any()  # block 2 likewise
    assert not row[384:].any()  # the partial last block has no position with j mod 128 >= 96
    assert int(row.sum()) == 128 + 32 + 32


def test_sparse_matches_dense_pattern():
    m = make("sparse", block_size=32, summary=8)
    x, mask = inputs(2, 150, [0, 41])
    torch.testing.assert_close(m(x, mask), dense_ref(m, x, mask, m.pattern(150)), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------- longformer


def band_count(n: int, a: int, b: int) -> int:
    """Pairs (i, j) in [0, n)^2 with -a <= j - i <= b, for n > max(a, b)."""
    return n * (a + b + 1) - a * (a + 1) // 2 - b * (b + 1) // 2


@pytest.mark.parametrize("length,window,g", [(120, 12, 2), (120, 11, 0), (600, 512, 1), (90, 20, 5)])
def test_longformer_pattern_count(length, window, g):
    m = make("longformer", window=window, n_global=g)
    a, b = window - window // 2 - 1, window // 2
    expected = g * length + (length - g) * g + band_count(length - g, a, b)
    assert int(m.pattern(length).sum()) == expected


def test_longformer_lra_window():
    p = make("longformer", window=512, n_global=0).pattern(1000)
    assert p[500, 500 - 255] and not p[500, 500 - 256] and p[500, 500 + 256] and not p[500, 500 + 257]
    assert int(p[500].sum()) == 512


def test_longformer_covering_window_is_full_softmax():
    m, ref = full_copy("longformer", window=101, n_global=2)
    w = m.qkv.weight.detach()
    bias = m.qkv.bias.detach()
    with torch.no_grad():  # global projections = the ordinary ones
        m.q_global.weight.copy_(w[:DIM])
        m.q_global.bias.copy_(bias[:DIM])
        m.kv_global.weight.copy_(w[DIM:])
        m.kv_global.bias.copy_(bias[DIM:])
    x, mask = inputs(2, 50, [0, 9])
    torch.testing.assert_close(m(x, mask), ref(x, mask), rtol=1e-12, atol=1e-12)


def test_longformer_matches_dense_pattern():
    length = 97
    m = make("longformer", window=12, n_global=3, global_projections=False)
    x, mask = inputs(2, length, [0, 20])
    torch.testing.assert_close(m(x, mask), dense_ref(m, x, mask, m.pattern(length)), rtol=1e-12, atol=1e-12)


def test_longformer_global_rows_use_global_projections():
    length, g = 97, 3
    m = make("longformer", window=12, n_global=g)
    x, mask = inputs(2, length, [0, 20])
    q, k, v = qkv(m, x)
    o = softmax_ref(q, k, v, mask[:, None, None, :] & m.pattern(length))
    qg = heads(x[:, :g] @ m.q_global.weight.T + m.q_global.bias)
    kg, vg = (heads(t) for t in (x @ m.kv_global.weight.T + m.kv_global.bias).split(DIM, dim=-1))
    o[:, :, :g] = softmax_ref(qg, kg, vg, mask[:, None, None, :])
    torch.testing.assert_close(m(x, mask), out_proj(m, o), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- bigbird


def bigbird_count(n: int, bs: int, r: int) -> int:
    """Allowed pairs per head for L = n * bs, n >= 5: 2 global block rows of n blocks; the
    middle rows i = 1 and n-2 see 4 window/global blocks and min(r, n-4) random ones, the
    others 5 and min(r, n-5)."""
    blocks = 2 * n + 2 * (4 + min(r, n - 4)) + (n - 4) * (5 + min(r, n - 5))
    return blocks * bs * bs


@pytest.mark.parametrize("n,bs,r", [(10, 8, 3), (5, 8, 3), (6, 4, 3), (12, 4, 0), (16, 64, 3)])
def test_bigbird_pattern_count(n, bs, r):
    m = make("bigbird", max_len=n * bs, block_size=bs, n_random=r, seed=11)
    p = m.pattern(n * bs)
    assert p.shape == (HEADS, n * bs, n * bs)
    for hh in range(HEADS):
        assert int(p[hh].sum()) == bigbird_count(n, bs, r)


def test_bigbird_block_structure():
    n, bs, r = 12, 4, 3
    m = make("bigbird", block_size=bs, n_random=r, seed=7)
    p = m.pattern(n * bs)[:, ::bs, ::bs]  # (H, n, n) block pattern
    assert p[:, [0, n - 1]].all() and p[:, :, [0, n - 1]].all()
    for hh in range(HEADS):
        for i in range(1, n - 1):
            window = {i - 1, i, i + 1}
            rand = set(torch.nonzero(p[hh, i]).flatten().tolist()) - window - {0, n - 1}
            assert len(rand) == r and all(1 <= j <= n - 2 for j in rand)
    assert not torch.equal(p[0], p[1])  # random blocks differ per head
    same = make("bigbird", block_size=bs, n_random=r, seed=7)
    assert torch.equal(same.pattern(n * bs), m.pattern(n * bs))  # fixed by the seed
    other = make("bigbird", block_size=bs, n_random=r, seed=8)
    assert not torch.equal(other.pattern(n * bs), m.pattern(n * bs))
    restored = make("bigbird", block_size=bs, n_random=r)  # seed drawn at build, restored by state dict
    restored.load_state_dict(m.state_dict())
    assert torch.equal(restored.pattern(n * bs), m.pattern(n * bs))


def test_bigbird_covering_blocks_is_full_softmax():
    m, ref = full_copy("bigbird", block_size=20)  # 3 blocks: global, window, global
    x, mask = inputs(2, 60, [0, 11])
    torch.testing.assert_close(m(x, mask), ref(x, mask), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length", [150, 160])
def test_bigbird_matches_dense_pattern(length):
    m = make("bigbird", block_size=16, n_random=2, seed=5)
    x, mask = inputs(2, length, [0, 37])
    torch.testing.assert_close(m(x, mask), dense_ref(m, x, mask, m.pattern(length)), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- sinkhorn


@torch.no_grad()
def sinkhorn_ref(m, x, mask, bs: int, n_iters: int, temperature: float) -> torch.Tensor:
    """Block-by-block reference; Sinkhorn in probability space (row then column scaling)."""
    q, k, v = qkv(m, x)
    b, h, length, d = q.shape
    n = math.ceil(length / bs)
    blocks = [range(i * bs, min((i + 1) * bs, length)) for i in range(n)]
    out = torch.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            summ = []
            for blk in blocks:
                real = [j for j in blk if mask[bi, j]]
                summ.append(k[bi, hi, real].mean(0) if real else torch.zeros(d, dtype=q.dtype))
            logits = torch.stack(summ) @ m.sort_net.weight.T
            a = torch.exp(logits[:, :n] / temperature)
            for _ in range(n_iters):
                a = a / a.sum(1, keepdim=True)
                a = a / a.sum(0, keepdim=True)
            for i, blk in enumerate(blocks):
                keys, vals, ok = [k[bi, hi, j] for j in blk], [v[bi, hi, j] for j in blk], [bool(mask[bi, j]) for j in blk]
                for t in range(bs):  # slot t of the block sorted into slot i
                    wsum, kk, vv = 0.0, 0.0, 0.0
                    for j, src in enumerate(blocks):
                        if t < len(src) and mask[bi, src[t]]:
                            wsum = wsum + a[i, j]
                            kk = kk + a[i, j] * k[bi, hi, src[t]]
                            vv = vv + a[i, j] * v[bi, hi, src[t]]
                    if float(wsum) > 0:
                        keys.append(kk / wsum)
                        vals.append(vv / wsum)
                        ok.append(True)
                kt, vt = torch.stack(keys), torch.stack(vals)
                allowed = torch.tensor(ok)[None, :].expand(len(blk), -1)
                out[bi, hi, list(blk)] = softmax_ref(q[bi, hi, list(blk)], kt, vt, allowed)
    return out_proj(m, out)


def test_sinkhorn_matches_reference():
    m = make("sinkhorn", block_size=20, n_iters=3, temperature=0.5)
    with torch.no_grad():
        m.sort_net.weight.mul_(30)  # a sharp, far from uniform sorting
    x, mask = inputs(2, 130, [0, 47])  # 7 blocks, the last one partial; row 1 has a padded block
    ref = sinkhorn_ref(m, x, mask, 20, 3, 0.5)
    torch.testing.assert_close(m(x, mask), ref, rtol=1e-10, atol=1e-10)


def test_sinkhorn_softmax_sort_mode():
    m = make("sinkhorn", block_size=20, n_iters=0, temperature=1.0)  # n_iters = 0: a row softmax
    x, mask = inputs(1, 80, [9])
    _, k, _ = qkv(m, x)
    p = m.sort_matrix(k.view(1, HEADS, 4, 20, D), mask.view(1, 4, 20))
    torch.testing.assert_close(p.sum(-1), torch.ones(1, HEADS, 4, dtype=torch.float64))


def test_sinkhorn_sort_matrix_is_doubly_stochastic():
    m = make("sinkhorn", block_size=10, n_iters=60, temperature=0.75)
    x, mask = inputs(2, 100, [0, 35])
    _, k, _ = qkv(m, x)
    p = m.sort_matrix(k.view(2, HEADS, 10, 10, D), mask.view(2, 10, 10))
    one = torch.ones(2, HEADS, 10, dtype=torch.float64)
    torch.testing.assert_close(p.sum(-2), one, rtol=0, atol=1e-12)
    torch.testing.assert_close(p.sum(-1), one, rtol=0, atol=1e-6)


def test_sinkhorn_covering_block_is_full_softmax():
    m, ref = full_copy("sinkhorn", block_size=50)
    x, mask = inputs(2, 50, [0, 17])
    torch.testing.assert_close(m(x, mask), ref(x, mask), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- reformer


def shared_qk_ref(m, x, mask, allowed_pairs) -> torch.Tensor:
    """Shared-QK attention: logits q_i . q_j / |q_j|; self only when no other key is allowed."""
    q = heads(x @ m.qk.weight.T + m.qk.bias)
    v = heads(x @ m.v.weight.T + m.v.bias)
    length = q.shape[2]
    kn = q / q.norm(dim=-1, keepdim=True)
    s = q @ kn.transpose(-1, -2)
    eye = torch.eye(length, dtype=torch.bool)
    allowed = mask[:, None, None, :] & allowed_pairs
    other = allowed & ~eye
    use = torch.where(other.any(-1, keepdim=True), other, allowed & eye)
    p = torch.softmax(s.masked_fill(~use, float("-inf")), dim=-1)
    p = torch.where(use.any(-1, keepdim=True), p, torch.zeros_like(p))
    o = p @ v
    return o.transpose(1, 2).reshape(x.shape) @ m.proj.weight.T + m.proj.bias


def test_reformer_one_chunk_is_shared_qk_softmax_with_self_mask():
    m = make("reformer", chunk_len=64, n_buckets=1)
    x, mask = inputs(3, 50, [0, 49, 12])  # row 1: one real token, it must attend to itself
    ref = shared_qk_ref(m, x, mask, torch.ones(50, 50, dtype=torch.bool))
    torch.testing.assert_close(m(x, mask), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_hashes", [1, 2])
def test_reformer_one_bucket_chunks_attend_to_previous_chunk(n_hashes):
    c, length = 16, 50  # padded to 64: 4 chunks, chunk 0 looks back at chunk 3
    m = make("reformer", chunk_len=c, n_buckets=1, n_hashes=n_hashes)
    x, mask = inputs(2, length, [0, 9])
    ch = torch.arange(length) // c
    pairs = (ch[None, :] == ch[:, None]) | (ch[None, :] == (ch[:, None] - 1) % 4)
    torch.testing.assert_close(m(x, mask), shared_qk_ref(m, x, mask, pairs), rtol=1e-12, atol=1e-12)


def test_reformer_bucket_rule():
    m = make("reformer")
    assert [m.n_buckets(n) for n in (2, 16, 32, 63)] == [4, 32, 64, 64]  # 2 ** floor(log2(2 n))


def test_reformer_lsh_is_a_convex_mix_of_values():
    m = make("reformer", chunk_len=8, n_buckets=8, n_hashes=3)
    x, mask = inputs(2, 70, [0, 21])
    q = heads(x @ m.qk.weight.T + m.qk.bias)
    v = heads(x @ m.v.weight.T + m.v.bias)
    torch.manual_seed(0)
    o = m.attend(q, v, mask)
    # every real output lies inside the box spanned by the real values of its head
    for bi in range(2):
        real = v[bi][:, mask[bi]]
        lo, hi = real.amin(1, keepdim=True), real.amax(1, keepdim=True)
        ob = o[bi][:, mask[bi]]
        assert (ob >= lo - 1e-12).all() and (ob <= hi + 1e-12).all()


# --------------------------------------------------------------------------- informer


def test_informer_all_queries_active_is_softmax():
    m, ref = full_copy("informer", factor=100)
    x, mask = inputs(2, 60, [0, 14])
    torch.testing.assert_close(m(x, mask), ref(x, mask), rtol=1e-12, atol=1e-12)


def test_informer_rows_are_softmax_or_mean_value():
    length = 80
    m = make("informer", factor=3)
    u = 3 * math.ceil(math.log(length))
    x, mask = inputs(2, length, [0, 30])
    q, k, v = qkv(m, x)
    o = m.attend(q, k, v, mask)
    full = softmax_ref(q, k, v, mask[:, None, None, :])
    mean = (v * mask[:, None, :, None]).sum(2, keepdim=True) / mask.sum(-1)[:, None, None, None]
    is_full = (o - full).abs().amax(-1) < 1e-12  # (B, H, L)
    is_mean = (o - mean).abs().amax(-1) < 1e-12
    assert (is_full | is_mean).all()
    assert (is_full.sum(-1) == u).all()
    assert not (is_full & ~mask[:, None, :]).any()  # only real queries are chosen


# -------------------------------------------------------------------------- linformer


def test_linformer_identity_projection_is_softmax():
    length = 40
    m, ref = full_copy("linformer", max_len=length, k=length)
    with torch.no_grad():
        m.E.copy_(torch.eye(length))
        m.F.copy_(torch.eye(length))
    x, mask = inputs(2, length, [0, 0])
    torch.testing.assert_close(m(x, mask), ref(x, mask), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("trainable", [True, False])
def test_linformer_matches_projection_formula(per_head, trainable):
    length, kk = 70, 24
    m = make("linformer", max_len=100, k=kk, per_head=per_head, trainable=trainable)
    assert m.E.shape == m.F.shape == (HEADS if per_head else 1, kk, 100)
    x, mask = inputs(2, length, [0, 25])
    q, k, v = qkv(m, x)
    keep = mask[:, None, :, None].double()
    e, f = (p[:, :, :length].expand(HEADS, -1, -1) for p in (m.E, m.F))  # (H, k, L)
    kp = torch.einsum("hkl,bhld->bhkd", e, k * keep)
    vp = torch.einsum("hkl,bhld->bhkd", f, v * keep)
    o = softmax_ref(q, kp, vp, torch.ones(1, 1, length, kk, dtype=torch.bool))
    torch.testing.assert_close(m(x, mask), out_proj(m, o), rtol=1e-12, atol=1e-12)


def test_linformer_per_head_projections_differ_per_head():
    m = make("linformer", per_head=True)
    assert not torch.equal(m.E[0], m.E[1])
    x, mask = inputs(1, 50)
    with torch.no_grad():
        m.E[1] = m.E[0]
        m.F[1] = m.F[0]
        same = m(x, mask)
        m.E[1].mul_(2.0)
    assert not torch.allclose(m(x, mask), same)  # head 1 reads its own projection


def test_linformer_share_kv_has_one_projection():
    m = make("linformer", share_kv=True)
    assert m.F is None and "F" not in dict(m.named_parameters())


@pytest.mark.parametrize("share_kv", [False, True])
def test_linformer_fixed_projection_is_a_buffer_that_training_leaves_alone(share_kv):
    m = make("linformer", max_len=60, k=12, share_kv=share_kv, trainable=False, per_head=True).train()
    names = ["E"] if share_kv else ["E", "F"]
    assert not {"E", "F"} & set(dict(m.named_parameters()))
    assert set(names) <= set(m.state_dict())  # saved with checkpoints, so a resumed run keeps it
    before = {n: getattr(m, n).clone() for n in names}
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    x, mask = inputs(2, 45, [0, 7])
    m(x, mask).square().sum().backward()
    opt.step()
    assert all(p.grad is not None for p in m.parameters())
    for n in names:
        assert getattr(m, n).grad is None and torch.equal(getattr(m, n), before[n])
    learned = make("linformer", max_len=60, k=12, share_kv=share_kv, per_head=True)
    assert set(names) <= set(dict(learned.named_parameters()))


# ------------------------------------------------------------------------ synthesizer


@pytest.mark.parametrize("mode", ["dense", "random", "factorized_random"])
@pytest.mark.parametrize("dot_product", [False, True])
def test_synthesizer_direct(mode, dot_product):
    length, max_len = 45, 64
    m = make("synthesizer", max_len=max_len, mode=mode, dot_product=dot_product, k=8)
    x, mask = inputs(2, length, [0, 11])
    b = x.shape[0]
    v = heads(x @ m.v.weight.T + m.v.bias)
    if mode == "random":
        logits = m.random[:, :length, :length].expand(b, -1, -1, -1)
    elif mode == "factorized_random":
        logits = torch.einsum("hik,hkj->hij", m.r1[:, :length], m.r2[:, :, :length]).expand(b, -1, -1, -1)
    else:
        hid = torch.relu(x @ m.w1.weight.T + m.w1.bias)  # (B, L, C)
        rows = heads(hid) @ m.w2.weight.T + m.w2.bias  # (B, H, L, max_len)
        logits = rows[..., :length]
    if dot_product:
        q, k = (heads(t) for t in (x @ m.qk.weight.T + m.qk.bias).split(DIM, dim=-1))
        logits = logits + q @ k.transpose(-1, -2) / math.sqrt(D)
    p = torch.softmax(logits.masked_fill(~mask[:, None, None, :], float("-inf")), dim=-1)
    ref = out_proj(m, p @ v)
    torch.testing.assert_close(m(x, mask), ref, rtol=1e-12, atol=1e-12)
    params = {n for n, _ in m.named_parameters()}
    assert ("qk.weight" in params) == dot_product
    assert {"random", "r1", "w1.weight"} & params == {"random": {"random"}, "factorized_random": {"r1"}, "dense": {"w1.weight"}}[mode]
