"""Polarity-aware linear attention (PolaFormer) as fused Triton kernels.

Same op and semantics as ``reference.py`` beside it (the spec). Per (batch, head)
with p the per-channel power, phi(x) = relu(x) ** p, m_j the key mask and n the
number of real keys (clamped >= 1):

    A = sum_j m_j phi(k_j)^T v_j      B = sum_j m_j phi(-k_j)^T v_j      (D x D)
    zp = sum_j m_j phi(k_j)           zn = sum_j m_j phi(-k_j)            (D)

The reference's ``/ n`` on both numerator and normaliser cancels except on eps, so
with Qp = phi(q_i), Qn = phi(-q_i) and h = D/2:

    o_i[:h] = (Qp A[:, :h] + Qn B[:, :h]) / d1_i,   d1_i = Qp.zp + Qn.zn + n eps   (x_sim)
    o_i[h:] = (Qn A[:, h:] + Qp B[:, h:]) / d2_i,   d2_i = Qn.zp + Qp.zn + n eps   (x_opp)

Gathering columns into Mp = [A[:, :h] | B[:, h:]] and Mn = [B[:, :h] | A[:, h:]] gives
one full-width product per polarity, N = Qp Mp + Qn Mn. The two normalisers of a row are
one narrow product too: [d1, d2] = Qp [zp, zn] + Qn [zn, zp] (a 16-column dot whose first
two columns matter). Kernels (grids: (chunk of L, batch*head[, column block or part])):

- ``_fwd_state_kernel``: streams k, v once; phi(+-k) in registers; A, B and (as products
  with a ones column) zp, zn in float32, written straight into the (Mp, Mn, zp, zn)
  layout (atomics when L is split over programs).
- ``_fwd_out_kernel``: phi(+-q) in registers, o = (Qp Mp + Qn Mn) * (1 / d); also writes
  the two reciprocal normalisers per row (8 bytes a row) for the backward.
- ``_bwd_q_kernel``: recomputes phi(+-q), reads the saved normalisers; its "dq" programs
  write dq and the q-side dpower, its "dstate" programs accumulate the state gradients
  dA, dB, dzp, dzn (atomics when L is split). Both kinds run in one launch (a grid axis
  picks the kind) or as two launches. ``_bwd_q_blocked_kernel`` does both for D = 128
  in two column blocks, keeping its float32 accumulators within registers.
- ``_bwd_k_kernel``: recomputes phi(+-k); dk, dv and the k-side dpower.

Feature maps never reach memory. Saved for the backward: q, k, v, p, o and one float32
work buffer: the state (2 D^2 + 2 D per head), the reciprocal normalisers (2 per row) and
the backward's zeroed accumulators (state gradients, dpower (H, D)), summed by the
kernels with float32 atomics. Dots take phi in the input dtype
for bfloat16 inputs, and float32 operands otherwise (IEEE for float32 inputs, TF32 for
float16 inputs, whose range could not hold relu(x)^p).

Host side (the op is host-bound at LRA sizes): launch plans are cached per op signature
(``_PLANS``); after the first call of a kernel, later calls launch the compiled kernel
directly (``_Launch``), skipping most of Triton's per-call Python work, and pass plain
addresses into the work buffer instead of views. A forward allocates two buffers (o,
work), a backward three (dq, dk, dv); without gradients the op bypasses autograd.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from attention_zoo.kernels.polarity.reference import _as_power
from attention_zoo.kernels.polarity.reference import polarity_attention as _reference_attention

try:  # the CUDA backend's fast math; never used under the interpreter
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - very old Triton
    libdevice = None

__all__ = ["polarity_attention"]

_LN2 = math.log(2.0)
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _phi(x, p, FAST_LOG: tl.constexpr):
    """|x| ** p (0 where x == 0) and log2|x| (0 where x == 0), float32, for a (rows, D) tile.

    One log2 and one exp2 serve both polarities: phi(x) = where(x > 0, e, 0) and
    phi(-x) = where(x < 0, e, 0). FAST_LOG takes the hardware approximation (lg2.approx)
    instead of libdevice's correctly rounded log2.
    """
    ax = tl.abs(x)
    nz = ax > 0.0
    safe = tl.where(nz, ax, 1.0)
    if FAST_LOG:
        lg = libdevice.fast_log2f(safe)
    else:
        lg = tl.log2(safe)
    e = tl.where(nz, tl.exp2(lg * p[None, :]), 0.0)
    return e, lg


@triton.jit
def _store_state(base, offs_d, offs_n, dmask, nmask, x, y, zx, zy, zmask,
                 D: tl.constexpr, HALF: tl.constexpr, ATOMIC: tl.constexpr):
    """Write (or atomically add) one (DP, BN) column block of the per-head layout
    (X', Y', zx, zy), X' = [x[:, :h] | y[:, h:]], Y' = [y[:, :h] | x[:, h:]] (h = D/2).

    The forward stores (A, B, zp, zn) this way as (Mp, Mn, zp, zn); the q-side backward
    stores (dMp, dMn, dzp, dzn) as (dA, dB, dzp, dzn). zx, zy are (DP,) vectors written
    where zmask holds (one column block writes them)."""
    cell = offs_d[:, None] * D + offs_n[None, :]
    smask = dmask[:, None] & nmask[None, :]
    first = offs_n[None, :] < HALF
    x_ptr = base + cell + tl.where(first, 0, D * D)
    y_ptr = base + cell + tl.where(first, D * D, 0)
    if ATOMIC:
        tl.atomic_add(x_ptr, x, mask=smask, sem="relaxed")
        tl.atomic_add(y_ptr, y, mask=smask, sem="relaxed")
        tl.atomic_add(base + 2 * D * D + offs_d, zx, mask=zmask, sem="relaxed")
        tl.atomic_add(base + 2 * D * D + D + offs_d, zy, mask=zmask, sem="relaxed")
    else:
        tl.store(x_ptr, x, mask=smask)
        tl.store(y_ptr, y, mask=smask)
        tl.store(base + 2 * D * D + offs_d, zx, mask=zmask)
        tl.store(base + 2 * D * D + D + offs_d, zy, mask=zmask)


@triton.jit
def _fwd_state_kernel(
    K, V, P, MASK, ST,
    stride_kb, stride_kh, stride_kl,
    stride_vb, stride_vh, stride_vl,
    H, L, tiles_per_chunk,
    D: tl.constexpr, DP: tl.constexpr, HALF: tl.constexpr, BN: tl.constexpr, BL: tl.constexpr,
    HAS_MASK: tl.constexpr, ATOMIC: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr,
    FAST_LOG: tl.constexpr,
):
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_n = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = tl.arange(0, DP)
    offs_n = pid_n * BN + tl.arange(0, BN)
    dmask = offs_d < D
    nmask = offs_n < D
    p = tl.load(P + h * D + offs_d, mask=dmask, other=1.0)
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh

    acc_a = tl.zeros((DP, BN), tl.float32)  # sum_j phi(k_j)^T v_j[cols]
    acc_b = tl.zeros((DP, BN), tl.float32)  # sum_j phi(-k_j)^T v_j[cols]
    # Key sums ride on the tensor cores as phi^T @ e_0 (a ones column), which keeps the
    # loop free of cross-thread reductions; column 0 of these accumulators is z.
    e0 = tl.where(tl.arange(0, 16)[None, :] == 0, 1.0, 0.0) + tl.zeros((BL, 16), tl.float32)
    e0 = e0.to(OP)  # (BL, 16)
    acc_zp = tl.zeros((DP, 16), tl.float32)
    acc_zn = tl.zeros((DP, 16), tl.float32)
    t0 = pid_c * tiles_per_chunk
    t1 = tl.minimum(t0 + tiles_per_chunk, tl.cdiv(L, BL))
    for t in range(t0, t1):
        offs_l = t * BL + tl.arange(0, BL)
        lmask = offs_l < L
        k = tl.load(k_base + offs_l[:, None] * stride_kl + offs_d[None, :],
                    mask=lmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)  # (BL, DP)
        v = tl.load(v_base + offs_l[:, None] * stride_vl + offs_n[None, :],
                    mask=lmask[:, None] & nmask[None, :], other=0.0)  # (BL, BN)
        e, _ = _phi(k, p, FAST_LOG)
        if HAS_MASK:
            m = tl.load(MASK + b * L + offs_l, mask=lmask, other=0).to(tl.float32)
            e = e * m[:, None]
        kpt = tl.trans(tl.where(k > 0.0, e, 0.0).to(OP))  # (DP, BL)
        knt = tl.trans(tl.where(k < 0.0, e, 0.0).to(OP))
        acc_a = tl.dot(kpt, v.to(OP), acc_a, input_precision=PREC)
        acc_b = tl.dot(knt, v.to(OP), acc_b, input_precision=PREC)
        acc_zp = tl.dot(kpt, e0, acc_zp, input_precision=PREC)
        acc_zn = tl.dot(knt, e0, acc_zn, input_precision=PREC)
    z_p = tl.sum(acc_zp, axis=1)
    z_n = tl.sum(acc_zn, axis=1)

    st = ST + pid_bh.to(tl.int64) * (2 * D * D + 2 * D)
    # A's first-half columns belong to Mp, its second half to Mn; B the other way.
    zmask = dmask & ((offs_d * 0 + pid_n) == 0)
    _store_state(st, offs_d, offs_n, dmask, nmask, acc_a, acc_b, z_p, z_n, zmask, D, HALF, ATOMIC)


@triton.jit
def _zsel(zp, zn, DP: tl.constexpr, SWAP: tl.constexpr):
    """(DP, 16) float32: column 0 = zp, column 1 = zn (SWAP: the other way), others 0.

    Qp @ _zsel(zp, zn) + Qn @ _zsel(zp, zn, swap) has the two normalisers d1, d2 - eps
    in its first two columns."""
    c = tl.arange(0, 16)[None, :]
    a = zn if SWAP else zp
    b = zp if SWAP else zn
    return tl.where(c == 0, a[:, None], tl.where(c == 1, b[:, None], 0.0)) + tl.zeros((DP, 16), tl.float32)


@triton.jit
def _col(x, j):
    """Column j of a (rows, 16) tile as a (rows,) vector."""
    return tl.sum(tl.where(tl.arange(0, 16)[None, :] == j, x, 0.0), axis=1)


@triton.jit
def _fwd_out_kernel(
    Q, P, ST, NEPS, O, RDEN,
    stride_qb, stride_qh, stride_ql,
    stride_ob, stride_oh, stride_ol,
    H, L, tiles_per_chunk, neps_scalar,
    D: tl.constexpr, DP: tl.constexpr, HALF: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr,
    HAS_MASK: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr, FAST_LOG: tl.constexpr,
):
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_n = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = tl.arange(0, DP)
    offs_n = pid_n * BN + tl.arange(0, BN)
    dmask = offs_d < D
    nmask = offs_n < D
    p = tl.load(P + h * D + offs_d, mask=dmask, other=1.0)
    st = ST + pid_bh.to(tl.int64) * (2 * D * D + 2 * D)
    cell = offs_d[:, None] * D + offs_n[None, :]
    smask = dmask[:, None] & nmask[None, :]
    mp = tl.load(st + cell, mask=smask, other=0.0).to(OP)  # (DP, BN)
    mn = tl.load(st + D * D + cell, mask=smask, other=0.0).to(OP)
    zp = tl.load(st + 2 * D * D + offs_d, mask=dmask, other=0.0)
    zn = tl.load(st + 2 * D * D + D + offs_d, mask=dmask, other=0.0)
    if HAS_MASK:
        neps = tl.load(NEPS + b)
    else:
        neps = neps_scalar
    first = offs_n[None, :] < HALF
    za = _zsel(zp, zn, DP, False).to(OP)  # (DP, 16)
    zb = _zsel(zp, zn, DP, True).to(OP)
    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    o_base = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    r_base = RDEN + pid_bh.to(tl.int64) * L * 2

    t0 = pid_c * tiles_per_chunk
    t1 = tl.minimum(t0 + tiles_per_chunk, tl.cdiv(L, BM))
    for t in range(t0, t1):
        offs_l = t * BM + tl.arange(0, BM)
        lmask = offs_l < L
        q = tl.load(q_base + offs_l[:, None] * stride_ql + offs_d[None, :],
                    mask=lmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)  # (BM, DP)
        e, _ = _phi(q, p, FAST_LOG)
        qp = tl.where(q > 0.0, e, 0.0).to(OP)
        qn = tl.where(q < 0.0, e, 0.0).to(OP)
        num = tl.dot(qp, mp, input_precision=PREC)
        num = tl.dot(qn, mn, num, input_precision=PREC)  # (BM, BN)
        dd = tl.dot(qp, za, input_precision=PREC)
        dd = tl.dot(qn, zb, dd, input_precision=PREC)  # (BM, 16): d1 - n eps, d2 - n eps
        r1 = 1.0 / (_col(dd, 0) + neps)
        r2 = 1.0 / (_col(dd, 1) + neps)
        o = num * tl.where(first, r1[:, None], r2[:, None])
        tl.store(o_base + offs_l[:, None] * stride_ol + offs_n[None, :], o.to(O.dtype.element_ty),
                 mask=lmask[:, None] & nmask[None, :])
        # The first column block writes both reciprocal normalisers of every row.
        rmask = lmask & ((offs_l * 0 + pid_n) == 0)
        tl.store(r_base + offs_l * 2, r1, mask=rmask)
        tl.store(r_base + offs_l * 2 + 1, r2, mask=rmask)


@triton.jit
def _q_tile(q_base, do_base, o_base, r_base, stride_ql, stride_dol, stride_ol, t, L,
            offs_d, dmask, p, first, hsel,
            BM: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr, FAST_LOG: tl.constexpr):
    """One row tile of the q-side backward: q, phi(+-q) parts, g = dL/dN and the per-row
    normaliser gradients dd (column 0: x_sim's, column 1: x_opp's)."""
    offs_l = t * BM + tl.arange(0, BM)
    lmask = offs_l < L
    fmask = lmask[:, None] & dmask[None, :]
    q = tl.load(q_base + offs_l[:, None] * stride_ql + offs_d[None, :], mask=fmask, other=0.0).to(tl.float32)
    e, lg = _phi(q, p, FAST_LOG)
    r1 = tl.load(r_base + offs_l * 2, mask=lmask, other=0.0)  # rows past L: g = 0
    r2 = tl.load(r_base + offs_l * 2 + 1, mask=lmask, other=0.0)
    do = tl.load(do_base + offs_l[:, None] * stride_dol + offs_d[None, :], mask=fmask, other=0.0).to(tl.float32)
    o = tl.load(o_base + offs_l[:, None] * stride_ol + offs_d[None, :], mask=fmask, other=0.0).to(tl.float32)
    g = do * tl.where(first, r1[:, None], r2[:, None])  # dL/dN
    # dL/d(normaliser) per row and half, -sum_c g_c o_c, as a product with the half selector.
    dd = tl.dot((-g * o).to(OP), hsel, input_precision=PREC)  # (BM, 16)
    return offs_l, fmask, q, e, lg, g.to(OP), dd.to(OP)


@triton.jit
def _bwd_q_kernel(
    Q, DO, O, P, ST, RDEN, DQ, DST, DPOW,
    stride_qb, stride_qh, stride_ql,
    stride_dob, stride_doh, stride_dol,
    stride_ob, stride_oh, stride_ol,
    stride_dqb, stride_dqh, stride_dql,
    H, L, tiles_per_chunk,
    D: tl.constexpr, DP: tl.constexpr, HALF: tl.constexpr, BM: tl.constexpr,
    ATOMIC: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr, FAST_LOG: tl.constexpr,
    PART: tl.constexpr,
):
    """q side of the backward (D <= 64, one column block), all through tensor-core products.

    With r = 1 / normaliser (saved by the forward), g = do * r and dd the per-row
    normaliser gradients (-sum of g * o over each half):
        dQp = g Mp^T + dd [zp; zn],   dQn = g Mn^T + dd [zn; zp]
        dMp = Qp^T g,   dMn = Qn^T g,   dzp = Qp^T dd0 + Qn^T dd1,   dzn = Qn^T dd0 + Qp^T dd1
    PART 0 programs write dq and the q-side dpower; PART 1 programs accumulate (dA, dB,
    dzp, dzn); PART 2 takes the part from the grid's third axis (one launch for both).
    """
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    if PART == 2:
        part = tl.program_id(2)
    else:
        part = PART
    b = pid_bh // H
    h = pid_bh % H
    offs_d = tl.arange(0, DP)
    offs_16 = tl.arange(0, 16)
    dmask = offs_d < D
    p = tl.load(P + h * D + offs_d, mask=dmask, other=1.0)
    st = ST + pid_bh.to(tl.int64) * (2 * D * D + 2 * D)
    cell = offs_d[:, None] * D + offs_d[None, :]
    smask = dmask[:, None] & dmask[None, :]
    first = offs_d[None, :] < HALF
    hsel = tl.where(offs_d[:, None] < HALF, offs_16[None, :] == 0, offs_16[None, :] == 1).to(OP)  # (DP, 16)
    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    do_base = DO + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh
    o_base = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    r_base = RDEN + pid_bh.to(tl.int64) * L * 2
    t0 = pid_c * tiles_per_chunk
    t1 = tl.minimum(t0 + tiles_per_chunk, tl.cdiv(L, BM))
    if part == 0:
        zp = tl.load(st + 2 * D * D + offs_d, mask=dmask, other=0.0)
        zn = tl.load(st + 2 * D * D + D + offs_d, mask=dmask, other=0.0)
        mp_t = tl.trans(tl.load(st + cell, mask=smask, other=0.0).to(OP))  # (DP, DP) Mp^T
        mn_t = tl.trans(tl.load(st + D * D + cell, mask=smask, other=0.0).to(OP))
        za_t = tl.trans(_zsel(zp, zn, DP, False).to(OP))  # (16, DP): rows zp, zn
        zb_t = tl.trans(_zsel(zp, zn, DP, True).to(OP))  # rows zn, zp
        dq_base = DQ + b.to(tl.int64) * stride_dqb + h.to(tl.int64) * stride_dqh
        acc_p = tl.zeros((DP,), tl.float32)  # sum_i G_i log2|q_i|
        for t in range(t0, t1):
            offs_l, fmask, q, e, lg, g, dd = _q_tile(
                q_base, do_base, o_base, r_base, stride_ql, stride_dol, stride_ol, t, L,
                offs_d, dmask, p, first, hsel, BM, OP, PREC, FAST_LOG)
            dqp = tl.dot(g, mp_t, input_precision=PREC)
            dqp = tl.dot(dd, za_t, dqp, input_precision=PREC)  # dL/dQp (BM, DP)
            dqn = tl.dot(g, mn_t, input_precision=PREC)
            dqn = tl.dot(dd, zb_t, dqn, input_precision=PREC)
            # G = dL/dphi * phi on the active polarity; dq = sign(q) G p / |q|, dp = G ln|q|
            # (1 / |q| as exp2(-log2|q|); G = 0 where q = 0).
            gg = tl.where(q > 0.0, dqp, tl.where(q < 0.0, dqn, 0.0)) * e
            dq = tl.where(q > 0.0, gg, -gg) * p[None, :] * tl.exp2(-lg)
            tl.store(dq_base + offs_l[:, None] * stride_dql + offs_d[None, :], dq.to(DQ.dtype.element_ty),
                     mask=fmask)
            acc_p += tl.sum(gg * lg, axis=0)
        tl.atomic_add(DPOW + h * D + offs_d, acc_p * 0.6931471805599453, mask=dmask, sem="relaxed")
    else:
        acc_mp = tl.zeros((DP, DP), tl.float32)  # dMp = sum_i Qp_i^T g_i
        acc_mn = tl.zeros((DP, DP), tl.float32)
        acc_zp = tl.zeros((DP, 16), tl.float32)  # Qp^T dd
        acc_zn = tl.zeros((DP, 16), tl.float32)  # Qn^T dd
        for t in range(t0, t1):
            offs_l, fmask, q, e, lg, g, dd = _q_tile(
                q_base, do_base, o_base, r_base, stride_ql, stride_dol, stride_ol, t, L,
                offs_d, dmask, p, first, hsel, BM, OP, PREC, FAST_LOG)
            qp_t = tl.trans(tl.where(q > 0.0, e, 0.0).to(OP))
            qn_t = tl.trans(tl.where(q < 0.0, e, 0.0).to(OP))
            acc_mp = tl.dot(qp_t, g, acc_mp, input_precision=PREC)
            acc_mn = tl.dot(qn_t, g, acc_mn, input_precision=PREC)
            acc_zp = tl.dot(qp_t, dd, acc_zp, input_precision=PREC)
            acc_zn = tl.dot(qn_t, dd, acc_zn, input_precision=PREC)
        dzp = _col(acc_zp, 0) + _col(acc_zn, 1)
        dzn = _col(acc_zn, 0) + _col(acc_zp, 1)
        dst = DST + pid_bh.to(tl.int64) * (2 * D * D + 2 * D)
        # dA = [dMp[:, :h] | dMn[:, h:]], dB = [dMn[:, :h] | dMp[:, h:]]; stored as (dA, dB, dzp, dzn).
        _store_state(dst, offs_d, offs_d, dmask, dmask, acc_mp, acc_mn, dzp, dzn, dmask, D, HALF, ATOMIC)


@triton.jit
def _bwd_q_blocked_kernel(
    Q, DO, O, P, ST, RDEN, DQ, DST, DPOW,
    stride_qb, stride_qh, stride_ql,
    stride_dob, stride_doh, stride_dol,
    stride_ob, stride_oh, stride_ol,
    stride_dqb, stride_dqh, stride_dql,
    H, L, tiles_per_chunk,
    D: tl.constexpr, DP: tl.constexpr, HALF: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr,
    ATOMIC: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr, FAST_LOG: tl.constexpr,
):
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_n = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = tl.arange(0, DP)
    offs_n = pid_n * BN + tl.arange(0, BN)
    dmask = offs_d < D
    nmask = offs_n < D
    p = tl.load(P + h * D + offs_d, mask=dmask, other=1.0)
    p_n = tl.load(P + h * D + offs_n, mask=nmask, other=1.0)
    st = ST + pid_bh.to(tl.int64) * (2 * D * D + 2 * D)
    # Rows offs_n of Mp / Mn: dQp[:, offs_n] = g @ Mp[offs_n, :]^T.
    rows = offs_n[:, None] * D + offs_d[None, :]
    rmask = nmask[:, None] & dmask[None, :]
    mp_r = tl.load(st + rows, mask=rmask, other=0.0).to(OP)  # (BN, DP)
    mn_r = tl.load(st + D * D + rows, mask=rmask, other=0.0).to(OP)
    zp_n = tl.load(st + 2 * D * D + offs_n, mask=nmask, other=0.0)
    zn_n = tl.load(st + 2 * D * D + D + offs_n, mask=nmask, other=0.0)
    r_base = RDEN + pid_bh.to(tl.int64) * L * 2
    first_d = offs_d[None, :] < HALF
    first_n = offs_n[None, :] < HALF
    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    do_base = DO + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh
    o_base = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    dq_base = DQ + b.to(tl.int64) * stride_dqb + h.to(tl.int64) * stride_dqh

    acc_mp = tl.zeros((DP, BN), tl.float32)  # dMp[:, offs_n] = sum_i Qp_i^T g_i
    acc_mn = tl.zeros((DP, BN), tl.float32)
    acc_zp = tl.zeros((DP,), tl.float32)
    acc_zn = tl.zeros((DP,), tl.float32)
    acc_p = tl.zeros((BN,), tl.float32)  # sum_i G_i log2|q_i| on columns offs_n
    t0 = pid_c * tiles_per_chunk
    t1 = tl.minimum(t0 + tiles_per_chunk, tl.cdiv(L, BM))
    for t in range(t0, t1):
        offs_l = t * BM + tl.arange(0, BM)
        lmask = offs_l < L
        fmask = lmask[:, None] & dmask[None, :]
        q = tl.load(q_base + offs_l[:, None] * stride_ql + offs_d[None, :], mask=fmask, other=0.0).to(tl.float32)
        do = tl.load(do_base + offs_l[:, None] * stride_dol + offs_d[None, :], mask=fmask, other=0.0).to(tl.float32)
        o = tl.load(o_base + offs_l[:, None] * stride_ol + offs_d[None, :], mask=fmask, other=0.0).to(tl.float32)
        e, lg = _phi(q, p, FAST_LOG)
        qp = tl.where(q > 0.0, e, 0.0)
        qn = tl.where(q < 0.0, e, 0.0)
        r1 = tl.load(r_base + offs_l * 2, mask=lmask, other=0.0)  # 1 / normaliser, saved by the forward
        r2 = tl.load(r_base + offs_l * 2 + 1, mask=lmask, other=0.0)
        dot_o = do * o
        dd1 = -tl.sum(tl.where(first_d, dot_o, 0.0), axis=1) * r1  # dL/d(den of x_sim)
        dd2 = -tl.sum(tl.where(first_d, 0.0, dot_o), axis=1) * r2
        g = do * tl.where(first_d, r1[:, None], r2[:, None])  # (BM, DP) dL/dN

        dqp = tl.dot(g.to(OP), tl.trans(mp_r), input_precision=PREC)
        dqp += dd1[:, None] * zp_n[None, :] + dd2[:, None] * zn_n[None, :]  # dL/dQp (BM, BN)
        dqn = tl.dot(g.to(OP), tl.trans(mn_r), input_precision=PREC)
        dqn += dd1[:, None] * zn_n[None, :] + dd2[:, None] * zp_n[None, :]  # dL/dQn
        if BN == DP:
            q_n = q
            e_n = e
            lg_n = lg
            g_n = g
        else:
            nfmask = lmask[:, None] & nmask[None, :]
            q_n = tl.load(q_base + offs_l[:, None] * stride_ql + offs_n[None, :], mask=nfmask,
                          other=0.0).to(tl.float32)
            e_n, lg_n = _phi(q_n, p_n, FAST_LOG)
            do_n = tl.load(do_base + offs_l[:, None] * stride_dol + offs_n[None, :], mask=nfmask,
                           other=0.0).to(tl.float32)
            g_n = do_n * tl.where(first_n, r1[:, None], r2[:, None])
        # G = dL/dphi * phi on the active polarity; dq = sign(q) G p / |q|, dp = G ln|q|
        # (1 / |q| as exp2(-log2|q|); G = 0 where q = 0).
        gg = tl.where(q_n > 0.0, dqp, tl.where(q_n < 0.0, dqn, 0.0)) * e_n
        dq = tl.where(q_n > 0.0, gg, -gg) * p_n[None, :] * tl.exp2(-lg_n)
        tl.store(dq_base + offs_l[:, None] * stride_dql + offs_n[None, :], dq.to(DQ.dtype.element_ty),
                 mask=lmask[:, None] & nmask[None, :])
        acc_p += tl.sum(gg * lg_n, axis=0)

        acc_mp = tl.dot(tl.trans(qp.to(OP)), g_n.to(OP), acc_mp, input_precision=PREC)
        acc_mn = tl.dot(tl.trans(qn.to(OP)), g_n.to(OP), acc_mn, input_precision=PREC)
        acc_zp += tl.sum(dd1[:, None] * qp + dd2[:, None] * qn, axis=0)
        acc_zn += tl.sum(dd1[:, None] * qn + dd2[:, None] * qp, axis=0)

    dst = DST + pid_bh.to(tl.int64) * (2 * D * D + 2 * D)
    # dA = [dMp[:, :h] | dMn[:, h:]], dB = [dMn[:, :h] | dMp[:, h:]]; stored as (dA, dB, dzp, dzn).
    zmask = dmask & ((offs_d * 0 + pid_n) == 0)
    _store_state(dst, offs_d, offs_n, dmask, nmask, acc_mp, acc_mn, acc_zp, acc_zn, zmask, D, HALF, ATOMIC)
    tl.atomic_add(DPOW + h * D + offs_n, acc_p * 0.6931471805599453, mask=nmask, sem="relaxed")


@triton.jit
def _bwd_k_kernel(
    K, V, P, MASK, DST, DK, DV, DPOW,
    stride_kb, stride_kh, stride_kl,
    stride_vb, stride_vh, stride_vl,
    stride_dkb, stride_dkh, stride_dkl,
    stride_dvb, stride_dvh, stride_dvl,
    H, L, tiles_per_chunk,
    D: tl.constexpr, DP: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr,
    HAS_MASK: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr, FAST_LOG: tl.constexpr,
):
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_n = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = tl.arange(0, DP)
    offs_n = pid_n * BN + tl.arange(0, BN)
    dmask = offs_d < D
    nmask = offs_n < D
    p = tl.load(P + h * D + offs_d, mask=dmask, other=1.0)
    p_n = tl.load(P + h * D + offs_n, mask=nmask, other=1.0)
    dst = DST + pid_bh.to(tl.int64) * (2 * D * D + 2 * D)
    cols = offs_d[:, None] * D + offs_n[None, :]  # dA[:, offs_n] for dv
    cmask = dmask[:, None] & nmask[None, :]
    rows = offs_n[:, None] * D + offs_d[None, :]  # dA[offs_n, :] for dk
    rmask = nmask[:, None] & dmask[None, :]
    da_c = tl.load(dst + cols, mask=cmask, other=0.0).to(OP)  # (DP, BN)
    db_c = tl.load(dst + D * D + cols, mask=cmask, other=0.0).to(OP)
    if BN == DP:
        da_r = da_c  # one column block: rows offs_n and columns offs_n are the same tile
        db_r = db_c
    else:
        da_r = tl.load(dst + rows, mask=rmask, other=0.0).to(OP)  # (BN, DP)
        db_r = tl.load(dst + D * D + rows, mask=rmask, other=0.0).to(OP)
    dzp_n = tl.load(dst + 2 * D * D + offs_n, mask=nmask, other=0.0)
    dzn_n = tl.load(dst + 2 * D * D + D + offs_n, mask=nmask, other=0.0)
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    dk_base = DK + b.to(tl.int64) * stride_dkb + h.to(tl.int64) * stride_dkh
    dv_base = DV + b.to(tl.int64) * stride_dvb + h.to(tl.int64) * stride_dvh

    acc_p = tl.zeros((BN,), tl.float32)
    t0 = pid_c * tiles_per_chunk
    t1 = tl.minimum(t0 + tiles_per_chunk, tl.cdiv(L, BM))
    for t in range(t0, t1):
        offs_l = t * BM + tl.arange(0, BM)
        lmask = offs_l < L
        fmask = lmask[:, None] & dmask[None, :]
        nfmask = lmask[:, None] & nmask[None, :]
        k = tl.load(k_base + offs_l[:, None] * stride_kl + offs_d[None, :], mask=fmask, other=0.0).to(tl.float32)
        v = tl.load(v_base + offs_l[:, None] * stride_vl + offs_d[None, :], mask=fmask, other=0.0)
        e, lg = _phi(k, p, FAST_LOG)
        if HAS_MASK:
            m = tl.load(MASK + b * L + offs_l, mask=lmask, other=0).to(tl.float32)
        else:
            m = tl.where(lmask, 1.0, 0.0)
        em = e * m[:, None]
        kp = tl.where(k > 0.0, em, 0.0)
        kn = tl.where(k < 0.0, em, 0.0)
        dv = tl.dot(kp.to(OP), da_c, input_precision=PREC)
        dv = tl.dot(kn.to(OP), db_c, dv, input_precision=PREC)  # (BM, BN)
        tl.store(dv_base + offs_l[:, None] * stride_dvl + offs_n[None, :], dv.to(DV.dtype.element_ty), mask=nfmask)

        dkp = tl.dot(v.to(OP), tl.trans(da_r), input_precision=PREC) + dzp_n[None, :]  # dL/dKp (BM, BN)
        dkn = tl.dot(v.to(OP), tl.trans(db_r), input_precision=PREC) + dzn_n[None, :]
        if BN == DP:
            k_n = k
            em_n = em
            lg_n = lg
        else:
            k_n = tl.load(k_base + offs_l[:, None] * stride_kl + offs_n[None, :], mask=nfmask,
                          other=0.0).to(tl.float32)
            e_n, lg_n = _phi(k_n, p_n, FAST_LOG)
            em_n = e_n * m[:, None]
        gg = tl.where(k_n > 0.0, dkp, tl.where(k_n < 0.0, dkn, 0.0)) * em_n
        dk = tl.where(k_n > 0.0, gg, -gg) * p_n[None, :] * tl.exp2(-lg_n)
        tl.store(dk_base + offs_l[:, None] * stride_dkl + offs_n[None, :], dk.to(DK.dtype.element_ty), mask=nfmask)
        acc_p += tl.sum(gg * lg_n, axis=0)
    tl.atomic_add(DPOW + h * D + offs_n, acc_p * 0.6931471805599453, mask=nmask, sem="relaxed")



# Launch parameters per kernel: rows per tile, warps, pipeline stages, optionally a
# register cap (maxnreg); per head dim overrides in _CONFIGS_BY_D. Tuned on one H100
# (`python -m lra.bench_kernels --sweep`, docs/polarity_kernel_notes.md); the interpreter
# ignores all but the tile rows. Launch plans are cached: after changing any of these
# module settings, call ``_PLANS.clear()``.
_CONFIGS: dict[str, dict[str, int | None]] = {
    "state": {"BL": 64, "num_warps": 4, "num_stages": 1},
    "out": {"BM": 64, "num_warps": 4, "num_stages": 1},
    "bwd_q1": {"BM": 32, "num_warps": 4, "num_stages": 2},  # q side, D <= 64: dq and state-gradient programs, one launch
    "bwd_dq": {"BM": 32, "num_warps": 4, "num_stages": 2},  # q side, D <= 64, split launches: dq
    "bwd_dstate": {"BM": 64, "num_warps": 4, "num_stages": 3},  # split launches: state gradients
    "bwd_q": {"BM": 64, "num_warps": 8, "num_stages": 2},  # q side, D = 128 (blocked kernel)
    "bwd_k": {"BM": 64, "num_warps": 8, "num_stages": 3},
}
_CONFIGS_BY_D: dict[tuple[str, int], dict[str, int | None]] = {}
# Code paths: one q-side launch for dq and the state gradients (else two); the hardware
# log2 (lg2.approx, ~2^-22 relative error; else libdevice's correctly rounded software
# log2, which left the kernels ALU-bound); direct launches of compiled kernels (else
# Triton's launch path on every call). The flags are part of the plan key.
_FLAGS: dict[str, bool] = {
    "q_one_launch": True,
    "fast_log": True,
    "fast_launch": os.environ.get("LRA_POLARITY_FAST_LAUNCH", "1") != "0",
}
# Target number of programs per launch as a multiple of the SM count (L is split into
# chunks until the grid reaches it).
_WAVES = 8


def _config(name: str, d: int, dtype: torch.dtype, device: torch.device) -> dict[str, int | None]:
    cfg = dict(_CONFIGS[name])
    cfg.update(_CONFIGS_BY_D.get((name, d), {}))
    if device.type != "cuda":
        # The interpreter pays per program and per op, not per element: big tiles.
        for key in ("BL", "BM"):
            if key in cfg:
                cfg[key] = 128
        return cfg
    if d > 64:
        # D = 128: (128 x 64) float32 accumulators need 8 warps' registers; with float32
        # operands also halve the row tile so the dot operands fit shared memory.
        cfg["num_warps"] = max(cfg["num_warps"], 8)
        if dtype == torch.float32:
            for key in ("BL", "BM"):
                if key in cfg:
                    cfg[key] = min(cfg[key], 32)
            cfg["num_stages"] = min(cfg["num_stages"], 2)
    return cfg


def _launch_options(cfg: dict[str, int | None]) -> dict[str, int]:
    """num_warps / num_stages, and a register cap (``maxnreg``) where a config sets one."""
    return {k: v for k, v in cfg.items() if k in ("num_warps", "num_stages", "maxnreg") and v is not None}


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _chunks(n_tiles: int, programs_per_chunk: int, device: torch.device) -> tuple[int, int]:
    """Split n_tiles row tiles into chunks so the grid fills the machine: (n_chunks, tiles_per_chunk)."""
    if device.type == "cuda":
        target = _WAVES * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
        n_chunks = max(1, min(n_tiles, _cdiv(target, max(programs_per_chunk, 1))))
    else:
        n_chunks = min(n_tiles, 2)  # interpreter: few programs, yet the split-L (atomic) path runs
    per = _cdiv(n_tiles, n_chunks)
    return _cdiv(n_tiles, per), per


def _dot_types(dtype: torch.dtype) -> tuple[tl.dtype, str]:
    if dtype == torch.bfloat16:
        return tl.bfloat16, "tf32"
    if dtype == torch.float16:
        return tl.float32, "tf32"  # phi can exceed the float16 range; TF32 keeps float32's
    return tl.float32, "ieee"


def _rows(x: Tensor) -> Tensor:
    """Kernels take any (B, H, L) strides but need a unit stride over D."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _layout(d: int) -> tuple[int, int, int]:
    """(padded width DP, column block BN, number of blocks NB).

    D = 128 splits into its two halves so float32 state accumulators stay in registers;
    D <= 64 uses one block covering all columns (padded to a power of two >= 16, the
    extra columns masked).
    """
    dp = max(16, triton.next_power_of_2(d))
    bn = 64 if d == 128 else dp
    return dp, bn, dp // bn


class _Launch:
    """One kernel launch of a plan. Grid, integer arguments (strides, sizes), constexprs
    and options are fixed by the plan's key; a call passes the pointers and floats.

    The first call goes through Triton's JIT (compiling the kernel); later calls run the
    compiled kernel's launcher directly, skipping Triton's per-call argument binding and
    specialisation. The plan key holds everything Triton specialises on (dtypes, 16-byte
    alignment, the integer arguments), so the compiled kernel is the one Triton would pick.
    """

    __slots__ = ("kernel", "grid", "ints", "meta", "meta_values", "opts", "runner")

    def __init__(self, kernel, grid: tuple[int, int, int], ints: tuple, meta: dict, cfg: dict) -> None:
        self.kernel, self.grid, self.ints, self.meta = kernel, grid, ints, meta
        self.meta_values = tuple(meta.values())
        self.opts = _launch_options(cfg)
        self.runner = None

    def __call__(self, ptrs: tuple, floats: tuple = ()) -> None:
        if self.runner is not None:
            self.runner(*ptrs, *self.ints, *floats, *self.meta_values)
            return
        args = (*ptrs, *self.ints, *floats)
        compiled = self.kernel[self.grid](*args, **self.meta, **self.opts)
        if (_FLAGS["fast_launch"] and not _INTERPRET and compiled is not None
                and list(self.kernel.arg_names[len(args):]) == list(self.meta)):
            self.runner = compiled[self.grid]  # takes the constexprs positionally, as Triton's own launch does


# Forward plans by op signature (shapes, strides, dtypes, alignment, device, mask, flags);
# each holds its backward plans.
_PLANS: dict[tuple, "_FwdPlan"] = {}


def _direct_launches() -> int:
    """How many cached launches run their compiled kernel directly (for tests)."""
    launches = []
    for plan in _PLANS.values():
        launches += [plan.state, plan.out]
        for q_launches, k_launch in plan.bwd.values():
            launches += [*q_launches, k_launch]
    return sum(launch.runner is not None for launch in launches)


def _fast_log() -> bool:
    return _FLAGS["fast_log"] and not _INTERPRET and libdevice is not None


def _align(*ts: Tensor) -> int:
    """Bit i set when tensor i is 16-byte aligned (Triton specialises pointers on it)."""
    bits = 0
    for i, t in enumerate(ts):
        bits |= (t.data_ptr() % 16 == 0) << i
    return bits


def _pad16(n: int, itemsize: int) -> int:
    """n elements rounded up so that a following segment starts 16-byte aligned."""
    per = max(1, 16 // itemsize)
    return -(-n // per) * per


class _FwdPlan:
    """Launches and work-buffer layout of the forward for one op signature.

    One float32 buffer per call holds, each segment 16-byte aligned (offsets in floats):
    the state (Mp, Mn, zp, zn) per head at 0; the two reciprocal normalisers per row,
    (B*H, L, 2), at ``rden``; and, when a backward follows, the state gradients (dA, dB,
    dzp, dzn) at ``dstate`` and dpower (H, D) at ``dpower``, both accumulated by the
    backward with atomics. The buffer is zero-filled when the state is accumulated with
    atomics or gradients follow (one allocation and one fill instead of four buffers).
    """

    __slots__ = ("state", "out", "atomic", "rden", "dstate", "dpower", "n_fwd", "n_grad", "bwd")

    def __init__(self, state: _Launch, out: _Launch, atomic: bool, n_state: int, n_rden: int, n_dpower: int):
        self.state, self.out, self.atomic = state, out, atomic
        self.rden = n_state
        self.dstate = self.n_fwd = n_state + n_rden
        self.dpower = self.dstate + n_state
        self.n_grad = self.dpower + n_dpower
        self.bwd: dict[tuple, tuple] = {}  # backward plans by (do strides, do alignment)


def _fwd_plan(q: Tensor, k: Tensor, v: Tensor, has_mask: bool, key: tuple) -> _FwdPlan:
    b, h, l, d = q.shape
    dp, bn, nb = _layout(d)
    op, prec = _dot_types(q.dtype)
    fast_log = _fast_log()
    cs = _config("state", d, q.dtype, q.device)
    n_c, per = _chunks(_cdiv(l, cs["BL"]), b * h * nb, q.device)
    atomic = n_c > 1
    state = _Launch(_fwd_state_kernel, (n_c, b * h, nb),
                    (*k.stride()[:3], *v.stride()[:3], h, l, per),
                    dict(D=d, DP=dp, HALF=d // 2, BN=bn, BL=cs["BL"], HAS_MASK=has_mask, ATOMIC=atomic, OP=op,
                         PREC=prec, FAST_LOG=fast_log), cs)
    co = _config("out", d, q.dtype, q.device)
    n_c, per = _chunks(_cdiv(l, co["BM"]), b * h * nb, q.device)
    out = _Launch(_fwd_out_kernel, (n_c, b * h, nb),
                  (*q.stride()[:3], h * l * d, l * d, d, h, l, per),  # o is contiguous
                  dict(D=d, DP=dp, HALF=d // 2, BN=bn, BM=co["BM"], HAS_MASK=has_mask, OP=op, PREC=prec,
                       FAST_LOG=fast_log), co)
    plan = _FwdPlan(state, out, atomic, _pad16(b * h * (2 * d * d + 2 * d), 4), _pad16(b * h * l * 2, 4),
                    _pad16(h * d, 4))
    _PLANS[key] = plan
    return plan


def _segment(work: Tensor, offset: int, direct: bool) -> Tensor | int:
    """A pointer into the work buffer at ``offset`` floats: a plain address for direct
    launches (Triton's launcher takes integers as pointers; no view to build), a view for
    Triton's JIT, which specialises on the tensor. Offsets are 16-byte aligned, as the
    first call's views were."""
    return work.data_ptr() + 4 * offset if direct else work[offset:]


def _forward(q: Tensor, k: Tensor, v: Tensor, p: Tensor, mask_u8: Tensor | None, neps: Tensor | None,
             eps: float, need_grad: bool = True) -> tuple[Tensor, Tensor, _FwdPlan]:
    """(o, work, plan): the output, the float32 work buffer (layout in ``_FwdPlan``; with
    ``need_grad`` it also holds the backward's zeroed accumulators) and the plan, which
    the backward takes."""
    b, h, l, d = q.shape
    has_mask = mask_u8 is not None
    aligned = _align(q, k, v, mask_u8) if has_mask else _align(q, k, v)
    key = (q.shape, q.stride(), k.stride(), v.stride(), q.dtype, q.device, has_mask, aligned,
           *_FLAGS.values(), _WAVES)
    plan = _PLANS.get(key) or _fwd_plan(q, k, v, has_mask, key)
    alloc = torch.zeros if (need_grad or plan.atomic) else torch.empty
    work = alloc(plan.n_grad if need_grad else plan.n_fwd, device=q.device, dtype=torch.float32)
    o = torch.empty((b, h, l, d), device=q.device, dtype=q.dtype)
    rden = _segment(work, plan.rden, plan.out.runner is not None)
    plan.state((k, v, p, mask_u8 if has_mask else p, work))  # the state is the buffer's head
    plan.out((q, p, work, neps if has_mask else p, o, rden), (float(l) * eps,))
    return o, work, plan


def _bwd_plan(plan: _FwdPlan, q: Tensor, k: Tensor, v: Tensor, do: Tensor, has_mask: bool, key: tuple) -> tuple:
    b, h, l, d = q.shape
    dp, bn, nb = _layout(d)
    op, prec = _dot_types(q.dtype)
    fast_log = _fast_log()
    # o, dq, dk, dv are contiguous (B, H, L, D).
    q_ints = (*q.stride()[:3], *do.stride()[:3], h * l * d, l * d, d, h * l * d, l * d, d)
    launches = []
    if nb == 1:
        names = [("bwd_q1", 2)] if _FLAGS["q_one_launch"] else [("bwd_dq", 0), ("bwd_dstate", 1)]
        for name, part in names:
            cq = _config(name, d, q.dtype, q.device)
            n_parts = 2 if part == 2 else 1
            n_c, per = _chunks(_cdiv(l, cq["BM"]), b * h * n_parts, q.device)
            launches.append(_Launch(_bwd_q_kernel, (n_c, b * h, n_parts), (*q_ints, h, l, per),
                                    dict(D=d, DP=dp, HALF=d // 2, BM=cq["BM"], ATOMIC=n_c > 1, OP=op, PREC=prec,
                                         FAST_LOG=fast_log, PART=part), cq))
    else:
        cq = _config("bwd_q", d, q.dtype, q.device)
        n_c, per = _chunks(_cdiv(l, cq["BM"]), b * h * nb, q.device)
        launches.append(_Launch(_bwd_q_blocked_kernel, (n_c, b * h, nb), (*q_ints, h, l, per),
                                dict(D=d, DP=dp, HALF=d // 2, BN=bn, BM=cq["BM"], ATOMIC=n_c > 1, OP=op, PREC=prec,
                                     FAST_LOG=fast_log), cq))
    ck = _config("bwd_k", d, q.dtype, q.device)
    n_c, per = _chunks(_cdiv(l, ck["BM"]), b * h * nb, q.device)
    k_launch = _Launch(_bwd_k_kernel, (n_c, b * h, nb),
                       (*k.stride()[:3], *v.stride()[:3], h * l * d, l * d, d, h * l * d, l * d, d, h, l, per),
                       dict(D=d, DP=dp, BN=bn, BM=ck["BM"], HAS_MASK=has_mask, OP=op, PREC=prec, FAST_LOG=fast_log),
                       ck)
    bwd = (tuple(launches), k_launch)
    plan.bwd[key] = bwd
    return bwd


def _backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, p: Tensor, o: Tensor, work: Tensor, plan: _FwdPlan,
              mask_u8: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """dq, dk, dv and dpower (H, D), a view of the work buffer."""
    key = (do.stride(), do.data_ptr() % 16 == 0)
    bwd = plan.bwd.get(key) or _bwd_plan(plan, q, k, v, do, mask_u8 is not None, key)
    q_launches, k_launch = bwd
    shape, h, d = q.shape, q.shape[1], q.shape[3]
    # Three allocations cost less host time than one split into views.
    dq = torch.empty(shape, device=q.device, dtype=q.dtype)
    dk = torch.empty(shape, device=q.device, dtype=q.dtype)
    dv = torch.empty(shape, device=q.device, dtype=q.dtype)
    dpower = work.as_strided((h, d), (d, 1), plan.dpower)
    direct = k_launch.runner is not None
    rden = _segment(work, plan.rden, direct)
    dstate = _segment(work, plan.dstate, direct)
    for launch in q_launches:
        launch((q, do, o, p, work, rden, dq, dstate, dpower))
    k_launch((k, v, p, mask_u8 if mask_u8 is not None else p, dstate, dk, dv, dpower))
    return dq, dk, dv, dpower


class _PolarityAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, p: Tensor, key_mask: Tensor | None, eps: float) -> Tensor:
        mask_u8, neps = _mask_args(key_mask, eps)
        o, work, plan = _forward(q, k, v, p, mask_u8, neps, eps, need_grad=True)
        ctx.plan = plan
        ctx.save_for_backward(q, k, v, p, o, work, mask_u8)
        return o

    @staticmethod
    def backward(ctx, do: Tensor):
        q, k, v, p, o, work, mask_u8 = ctx.saved_tensors
        dq, dk, dv, dp = _backward(_rows(do), q, k, v, p, o, work, ctx.plan, mask_u8)
        return dq, dk, dv, dp, None, None


def _mask_args(key_mask: Tensor | None, eps: float) -> tuple[Tensor | None, Tensor | None]:
    """The key mask as (B, L) uint8 (1 = real key) and n * eps per sequence (B,) float32."""
    if key_mask is None:
        return None, None
    mask_u8 = key_mask.contiguous().view(torch.uint8)
    neps = key_mask.sum(dim=1, dtype=torch.float32).clamp_min_(1.0).mul_(eps)
    return mask_u8, neps


def polarity_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    power: Tensor,
    key_mask: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Non-causal polarity-aware linear attention, fused Triton kernels.

    Same semantics as ``reference.polarity_attention``: with phi(x) = relu(x) ** p,
    ``o[..., :D/2]`` is the same-sign part x_sim (values ``v[..., :D/2]``) and
    ``o[..., D/2:]`` the opposite-sign part x_opp (values ``v[..., D/2:]``), each
    normalised by the mean-key normaliser plus ``eps``.

    Args:
        q, k, v: (B, H, L, D) CUDA tensors (CPU under ``TRITON_INTERPRET=1``), float32,
            float16 or bfloat16; D even and <= 64, or 128. Any strides with a unit stride over D.
            k and v are cast to q's dtype if they differ. float64 runs the reference.
        power: per head and channel exponent, (H, D) or broadcastable to (1, H, 1, D);
            its gradient has power's own shape.
        key_mask: optional (B, L) bool, True for real keys. Masked keys contribute
            nothing and n counts only real keys (clamped to >= 1).
        eps: added to the mean-key normaliser.

    Returns:
        o: (B, H, L, D) in q's dtype. Differentiable in q, k, v and power; the backward
        recomputes the feature maps from q and k.
    """
    if q.dim() != 4:
        raise ValueError(f"q must be (B, H, L, D), got shape {tuple(q.shape)}")
    b, h, l, d = q.shape
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share the shape (B, H, L, D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if d % 2:
        raise ValueError(f"head dim D must be even to split v in two halves, got {d}")
    if key_mask is not None:
        if key_mask.shape != (b, l):
            raise ValueError(f"key_mask must be (B, L) = {(b, l)}, got {tuple(key_mask.shape)}")
        if key_mask.dtype != torch.bool:
            raise ValueError(f"key_mask must be bool (True = real key), got {key_mask.dtype}")
        if key_mask.device != q.device:
            key_mask = key_mask.to(q.device)
    if q.dtype == torch.float64:
        return _reference_attention(q, k, v, power, key_mask=key_mask, eps=eps)
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"q must be float32, float16 or bfloat16, got {q.dtype}")
    if d > 64 and d != 128:
        raise ValueError(f"head dim D must be <= 64 or 128 for the Triton kernels, got {d}; use the reference")
    if not q.is_cuda and not _INTERPRET:
        raise RuntimeError("the Triton polarity kernels need CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if l == 0 or b * h == 0:
        raise ValueError(f"empty input shape {tuple(q.shape)}")
    if k.dtype != q.dtype:
        k = k.to(q.dtype)
    if v.dtype != q.dtype:
        v = v.to(q.dtype)
    if power.shape == (h, d) and power.dtype == torch.float32 and power.device == q.device and power.is_contiguous():
        p = power  # the model's layout: no reshaping ops on the hot path
    else:
        p = _as_power(power.to(device=q.device, dtype=torch.float32), h, d).reshape(h, d).contiguous()  # (H, D)
    q, k, v = _rows(q), _rows(k), _rows(v)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad or p.requires_grad):
        return _PolarityAttention.apply(q, k, v, p, key_mask, float(eps))
    # Nothing to differentiate: the launches alone, no autograd node, no gradient buffers.
    mask_u8, neps = _mask_args(key_mask, float(eps))
    return _forward(q, k, v, p, mask_u8, neps, float(eps), need_grad=False)[0]
