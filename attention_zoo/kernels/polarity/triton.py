"""Polarity-aware linear attention (PolaFormer) as fused Triton kernels.

Same op and semantics as ``reference.py`` beside it (the spec). Per (batch, head)
with p the per-channel power, phi(x) = relu(x) ** p, m_j the key mask and n the
number of real keys (clamped >= 1):

    A = sum_j m_j phi(k_j)^T v_j      B = sum_j m_j phi(-k_j)^T v_j      (D x D)
    zp = sum_j m_j phi(k_j)           zn = sum_j m_j phi(-k_j)            (D)

The reference's ``/ n`` on both numerator and normaliser cancels except on eps, so
with Qp = phi(q_i), Qn = phi(-q_i) and h = D/2:

    o_i[:h] = (Qp A[:, :h] + Qn B[:, :h]) / (Qp.zp + Qn.zn + n eps)      (x_sim)
    o_i[h:] = (Qn A[:, h:] + Qp B[:, h:]) / (Qn.zp + Qp.zn + n eps)      (x_opp)

Gathering columns into Mp = [A[:, :h] | B[:, h:]] and Mn = [B[:, :h] | A[:, h:]] gives
one full-width product per polarity, N = Qp Mp + Qn Mn, and likewise the normaliser of
every output column, den = Qp z1 + Qn z2 with z1[:, c] = zp (c < h) or zn (c >= h) and
z2 the other way. Numerator, normaliser and their gradients are all tensor-core
products with the same row layout, so the loops need no cross-thread reductions, and a
D/2 = 8 half is never a dot dimension. Kernels (grids: (chunk of L, batch*head[, column
block])):

- ``_fwd_state_kernel``: streams k, v once; phi(+-k) in registers; A, B and (as products
  with a ones column) zp, zn in float32, written straight into the (Mp, Mn, zp, zn)
  layout (atomics when L is split over programs).
- ``_fwd_out_kernel``: phi(+-q) in registers, o = (Qp Mp + Qn Mn) / (Qp z1 + Qn z2 + n eps).
- ``_bwd_q_kernel``: recomputes phi(+-q) and the normalisers; one launch writes dq and
  the q-side dpower, a second accumulates the state gradients dA, dB, dzp, dzn
  (atomics when L is split). ``_bwd_q_blocked_kernel`` does both for
  D = 128 in two column blocks, keeping its float32 accumulators within registers.
- ``_bwd_k_kernel``: recomputes phi(+-k); dk, dv and the k-side dpower.

Feature maps never reach memory. The float32 state (2 D^2 + 2 D per head) and o are
saved for the backward. Dots take phi in the input dtype for bfloat16 inputs, and
float32 operands otherwise (IEEE for float32 inputs, TF32 for float16 inputs, whose
range could not hold relu(x)^p).
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

__all__ = ["polarity_attention"]

_LN2 = math.log(2.0)


@triton.jit
def _abs_pow(x, p):
    """|x| ** p (0 where x == 0) and log2|x| (0 where x == 0), float32.

    One log2 and one exp2 serve both polarities: phi(x) = where(x > 0, e, 0) and
    phi(-x) = where(x < 0, e, 0).
    """
    ax = tl.abs(x)
    nz = ax > 0.0
    lg = tl.log2(tl.where(nz, ax, 1.0))
    e = tl.where(nz, tl.exp2(lg * p[None, :]), 0.0)
    return e, lg


@triton.jit
def _fwd_state_kernel(
    K, V, P, MASK, ST,
    stride_kb, stride_kh, stride_kl,
    stride_vb, stride_vh, stride_vl,
    H, L, tiles_per_chunk,
    D: tl.constexpr, DP: tl.constexpr, HALF: tl.constexpr, BN: tl.constexpr, BL: tl.constexpr,
    HAS_MASK: tl.constexpr, ATOMIC: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr,
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
        e, _ = _abs_pow(k, p)
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
    first = offs_n[None, :] < HALF
    smask = dmask[:, None] & nmask[None, :]
    cell = offs_d[:, None] * D + offs_n[None, :]
    # A's first-half columns belong to Mp, its second half to Mn; B the other way.
    a_ptr = st + cell + tl.where(first, 0, D * D)
    b_ptr = st + cell + tl.where(first, D * D, 0)
    zmask = dmask & ((offs_d * 0 + pid_n) == 0)
    if ATOMIC:
        tl.atomic_add(a_ptr, acc_a, mask=smask, sem="relaxed")
        tl.atomic_add(b_ptr, acc_b, mask=smask, sem="relaxed")
        tl.atomic_add(st + 2 * D * D + offs_d, z_p, mask=zmask, sem="relaxed")
        tl.atomic_add(st + 2 * D * D + D + offs_d, z_n, mask=zmask, sem="relaxed")
    else:
        tl.store(a_ptr, acc_a, mask=smask)
        tl.store(b_ptr, acc_b, mask=smask)
        tl.store(st + 2 * D * D + offs_d, z_p, mask=zmask)
        tl.store(st + 2 * D * D + D + offs_d, z_n, mask=zmask)


@triton.jit
def _fwd_out_kernel(
    Q, P, ST, NEPS, O,
    stride_qb, stride_qh, stride_ql,
    stride_ob, stride_oh, stride_ol,
    H, L, tiles_per_chunk, neps_scalar,
    D: tl.constexpr, DP: tl.constexpr, HALF: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr,
    HAS_MASK: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr,
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
    # Normalisers as products too: den[:, c] = Qp @ z1[:, c] + Qn @ z2[:, c] is d1 on the
    # x_sim columns and d2 on the x_opp columns, in the same layout as the numerator.
    z1 = tl.where(first, zp[:, None], zn[:, None]).to(OP)  # (DP, BN)
    z2 = tl.where(first, zn[:, None], zp[:, None]).to(OP)
    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    o_base = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh

    t0 = pid_c * tiles_per_chunk
    t1 = tl.minimum(t0 + tiles_per_chunk, tl.cdiv(L, BM))
    for t in range(t0, t1):
        offs_l = t * BM + tl.arange(0, BM)
        lmask = offs_l < L
        q = tl.load(q_base + offs_l[:, None] * stride_ql + offs_d[None, :],
                    mask=lmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)  # (BM, DP)
        e, _ = _abs_pow(q, p)
        qp = tl.where(q > 0.0, e, 0.0).to(OP)
        qn = tl.where(q < 0.0, e, 0.0).to(OP)
        num = tl.dot(qp, mp, input_precision=PREC)
        num = tl.dot(qn, mn, num, input_precision=PREC)  # (BM, BN)
        den = tl.dot(qp, z1, input_precision=PREC)
        den = tl.dot(qn, z2, den, input_precision=PREC)
        o = num / (den + neps)
        tl.store(o_base + offs_l[:, None] * stride_ol + offs_n[None, :], o.to(O.dtype.element_ty),
                 mask=lmask[:, None] & nmask[None, :])


@triton.jit
def _bwd_q_kernel(
    Q, DO, O, P, ST, NEPS, DQ, DST, DPQ,
    stride_qb, stride_qh, stride_ql,
    stride_dob, stride_doh, stride_dol,
    stride_ob, stride_oh, stride_ol,
    stride_dqb, stride_dqh, stride_dql,
    H, L, BH, tiles_per_chunk, neps_scalar,
    D: tl.constexpr, DP: tl.constexpr, HALF: tl.constexpr, BM: tl.constexpr,
    HAS_MASK: tl.constexpr, ATOMIC: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr,
    DO_DQ: tl.constexpr, DO_DSTATE: tl.constexpr,
):
    """q side of the backward (D <= 64, one column block), all through tensor-core products.

    With den[:, c] = Qp z1[:, c] + Qn z2[:, c] + n eps, g = do / den and go = g * o:
        dQp = g Mp^T - go z1^T,   dQn = g Mn^T - go z2^T        (the z terms: d den)
        dMp = Qp^T g,   dMn = Qn^T g
        dd = -go @ hsel  (per-row half sums: column 0 = x_sim, 1 = x_opp)
        dzp = Qp^T dd[:, 0] + Qn^T dd[:, 1],   dzn = Qn^T dd[:, 0] + Qp^T dd[:, 1]
    DO_DQ writes dq and the q-side dpower; DO_DSTATE accumulates (dA, dB, dzp, dzn). They
    run as two launches (each reads q, do, o) to keep each program's registers in check.
    """
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = tl.arange(0, DP)
    offs_16 = tl.arange(0, 16)
    dmask = offs_d < D
    p = tl.load(P + h * D + offs_d, mask=dmask, other=1.0)
    st = ST + pid_bh.to(tl.int64) * (2 * D * D + 2 * D)
    cell = offs_d[:, None] * D + offs_d[None, :]
    smask = dmask[:, None] & dmask[None, :]
    zp = tl.load(st + 2 * D * D + offs_d, mask=dmask, other=0.0)
    zn = tl.load(st + 2 * D * D + D + offs_d, mask=dmask, other=0.0)
    first = offs_d[None, :] < HALF
    # z1[j, c] = zp[j] on x_sim columns, zn[j] on x_opp columns; z2 the other way.
    z1 = tl.where(first, zp[:, None], zn[:, None]).to(OP)  # (DP, DP)
    z2 = tl.where(first, zn[:, None], zp[:, None]).to(OP)
    if DO_DQ:
        mp_t = tl.trans(tl.load(st + cell, mask=smask, other=0.0).to(OP))  # (DP, DP) Mp^T
        mn_t = tl.trans(tl.load(st + D * D + cell, mask=smask, other=0.0).to(OP))
        z1_t = tl.trans(z1)
        z2_t = tl.trans(z2)
    hsel = tl.where(offs_d[:, None] < HALF, offs_16[None, :] == 0, offs_16[None, :] == 1).to(OP)  # (DP, 16)
    if HAS_MASK:
        neps = tl.load(NEPS + b)
    else:
        neps = neps_scalar
    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    do_base = DO + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh
    o_base = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    dq_base = DQ + b.to(tl.int64) * stride_dqb + h.to(tl.int64) * stride_dqh

    acc_mp = tl.zeros((DP, DP), tl.float32)  # dMp = sum_i Qp_i^T g_i
    acc_mn = tl.zeros((DP, DP), tl.float32)
    acc_zp = tl.zeros((DP, 16), tl.float32)  # Qp^T dd
    acc_zn = tl.zeros((DP, 16), tl.float32)  # Qn^T dd
    acc_p = tl.zeros((DP,), tl.float32)  # sum_i G_i log2|q_i|
    t0 = pid_c * tiles_per_chunk
    t1 = tl.minimum(t0 + tiles_per_chunk, tl.cdiv(L, BM))
    for t in range(t0, t1):
        offs_l = t * BM + tl.arange(0, BM)
        lmask = offs_l < L
        fmask = lmask[:, None] & dmask[None, :]
        q = tl.load(q_base + offs_l[:, None] * stride_ql + offs_d[None, :], mask=fmask, other=0.0).to(tl.float32)
        e, lg = _abs_pow(q, p)
        qp = tl.where(q > 0.0, e, 0.0).to(OP)
        qn = tl.where(q < 0.0, e, 0.0).to(OP)
        den = tl.dot(qp, z1, input_precision=PREC)
        den = tl.dot(qn, z2, den, input_precision=PREC) + neps  # (BM, DP)
        den = tl.where(lmask[:, None], den, 1.0)  # rows past L: keep 0/0 out of the products
        do = tl.load(do_base + offs_l[:, None] * stride_dol + offs_d[None, :], mask=fmask, other=0.0).to(tl.float32)
        o = tl.load(o_base + offs_l[:, None] * stride_ol + offs_d[None, :], mask=fmask, other=0.0).to(tl.float32)
        g = do / den  # dL/dN
        g_op = g.to(OP)
        ngo = (-g * o).to(OP)  # dL/d den
        if DO_DQ:
            dqp = tl.dot(g_op, mp_t, input_precision=PREC)
            dqp = tl.dot(ngo, z1_t, dqp, input_precision=PREC)  # dL/dQp (BM, DP)
            dqn = tl.dot(g_op, mn_t, input_precision=PREC)
            dqn = tl.dot(ngo, z2_t, dqn, input_precision=PREC)
            # G = dL/dphi * phi on the active polarity; dq = sign(q) G p / |q|, dp = G ln|q|
            # (1 / |q| as exp2(-log2|q|); G = 0 where q = 0).
            gg = tl.where(q > 0.0, dqp, tl.where(q < 0.0, dqn, 0.0)) * e
            dq = tl.where(q > 0.0, gg, -gg) * p[None, :] * tl.exp2(-lg)
            tl.store(dq_base + offs_l[:, None] * stride_dql + offs_d[None, :], dq.to(DQ.dtype.element_ty),
                     mask=fmask)
            acc_p += tl.sum(gg * lg, axis=0)
        if DO_DSTATE:
            qp_t = tl.trans(qp)
            qn_t = tl.trans(qn)
            acc_mp = tl.dot(qp_t, g_op, acc_mp, input_precision=PREC)
            acc_mn = tl.dot(qn_t, g_op, acc_mn, input_precision=PREC)
            dd = tl.dot(ngo, hsel, input_precision=PREC).to(OP)  # (BM, 16)
            acc_zp = tl.dot(qp_t, dd, acc_zp, input_precision=PREC)
            acc_zn = tl.dot(qn_t, dd, acc_zn, input_precision=PREC)

    if DO_DQ:
        tl.store(DPQ + (pid_c * BH + pid_bh).to(tl.int64) * D + offs_d, acc_p, mask=dmask)
    if DO_DSTATE:
        col0 = offs_16[None, :] == 0
        col1 = offs_16[None, :] == 1
        dzp = tl.sum(tl.where(col0, acc_zp, 0.0) + tl.where(col1, acc_zn, 0.0), axis=1)
        dzn = tl.sum(tl.where(col0, acc_zn, 0.0) + tl.where(col1, acc_zp, 0.0), axis=1)
        dst = DST + pid_bh.to(tl.int64) * (2 * D * D + 2 * D)
        # dA = [dMp[:, :h] | dMn[:, h:]], dB = [dMn[:, :h] | dMp[:, h:]]; stored as (dA, dB, dzp, dzn).
        mp_ptr = dst + cell + tl.where(first, 0, D * D)
        mn_ptr = dst + cell + tl.where(first, D * D, 0)
        if ATOMIC:
            tl.atomic_add(mp_ptr, acc_mp, mask=smask, sem="relaxed")
            tl.atomic_add(mn_ptr, acc_mn, mask=smask, sem="relaxed")
            tl.atomic_add(dst + 2 * D * D + offs_d, dzp, mask=dmask, sem="relaxed")
            tl.atomic_add(dst + 2 * D * D + D + offs_d, dzn, mask=dmask, sem="relaxed")
        else:
            tl.store(mp_ptr, acc_mp, mask=smask)
            tl.store(mn_ptr, acc_mn, mask=smask)
            tl.store(dst + 2 * D * D + offs_d, dzp, mask=dmask)
            tl.store(dst + 2 * D * D + D + offs_d, dzn, mask=dmask)


@triton.jit
def _bwd_q_blocked_kernel(
    Q, DO, O, P, ST, NEPS, DQ, DST, DPQ,
    stride_qb, stride_qh, stride_ql,
    stride_dob, stride_doh, stride_dol,
    stride_ob, stride_oh, stride_ol,
    stride_dqb, stride_dqh, stride_dql,
    H, L, BH, tiles_per_chunk, neps_scalar,
    D: tl.constexpr, DP: tl.constexpr, HALF: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr,
    HAS_MASK: tl.constexpr, ATOMIC: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr,
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
    zp = tl.load(st + 2 * D * D + offs_d, mask=dmask, other=0.0)
    zn = tl.load(st + 2 * D * D + D + offs_d, mask=dmask, other=0.0)
    zp_n = tl.load(st + 2 * D * D + offs_n, mask=nmask, other=0.0)
    zn_n = tl.load(st + 2 * D * D + D + offs_n, mask=nmask, other=0.0)
    if HAS_MASK:
        neps = tl.load(NEPS + b)
    else:
        neps = neps_scalar
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
        e, lg = _abs_pow(q, p)
        qp = tl.where(q > 0.0, e, 0.0)
        qn = tl.where(q < 0.0, e, 0.0)
        d1 = tl.sum(qp * zp[None, :] + qn * zn[None, :], axis=1) + neps
        d2 = tl.sum(qn * zp[None, :] + qp * zn[None, :], axis=1) + neps
        # Rows past L load zeros; keep their normaliser finite so 0/0 never enters a dot.
        r1 = 1.0 / tl.where(lmask, d1, 1.0)
        r2 = 1.0 / tl.where(lmask, d2, 1.0)
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
            e_n, lg_n = _abs_pow(q_n, p_n)
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
    cell = offs_d[:, None] * D + offs_n[None, :]
    smask = dmask[:, None] & nmask[None, :]
    # dA = [dMp[:, :h] | dMn[:, h:]], dB = [dMn[:, :h] | dMp[:, h:]]; stored as (dA, dB, dzp, dzn).
    mp_ptr = dst + cell + tl.where(first_n, 0, D * D)
    mn_ptr = dst + cell + tl.where(first_n, D * D, 0)
    zmask = dmask & ((offs_d * 0 + pid_n) == 0)
    if ATOMIC:
        tl.atomic_add(mp_ptr, acc_mp, mask=smask, sem="relaxed")
        tl.atomic_add(mn_ptr, acc_mn, mask=smask, sem="relaxed")
        tl.atomic_add(dst + 2 * D * D + offs_d, acc_zp, mask=zmask, sem="relaxed")
        tl.atomic_add(dst + 2 * D * D + D + offs_d, acc_zn, mask=zmask, sem="relaxed")
    else:
        tl.store(mp_ptr, acc_mp, mask=smask)
        tl.store(mn_ptr, acc_mn, mask=smask)
        tl.store(dst + 2 * D * D + offs_d, acc_zp, mask=zmask)
        tl.store(dst + 2 * D * D + D + offs_d, acc_zn, mask=zmask)
    tl.store(DPQ + (pid_c * BH + pid_bh).to(tl.int64) * D + offs_n, acc_p, mask=nmask)


@triton.jit
def _bwd_k_kernel(
    K, V, P, MASK, DST, DK, DV, DPK,
    stride_kb, stride_kh, stride_kl,
    stride_vb, stride_vh, stride_vl,
    stride_dkb, stride_dkh, stride_dkl,
    stride_dvb, stride_dvh, stride_dvl,
    H, L, BH, tiles_per_chunk,
    D: tl.constexpr, DP: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr,
    HAS_MASK: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr,
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
        e, lg = _abs_pow(k, p)
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
            e_n, lg_n = _abs_pow(k_n, p_n)
            em_n = e_n * m[:, None]
        gg = tl.where(k_n > 0.0, dkp, tl.where(k_n < 0.0, dkn, 0.0)) * em_n
        dk = tl.where(k_n > 0.0, gg, -gg) * p_n[None, :] * tl.exp2(-lg_n)
        tl.store(dk_base + offs_l[:, None] * stride_dkl + offs_n[None, :], dk.to(DK.dtype.element_ty), mask=nfmask)
        acc_p += tl.sum(gg * lg_n, axis=0)
    tl.store(DPK + (pid_c * BH + pid_bh).to(tl.int64) * D + offs_n, acc_p, mask=nmask)


# Launch parameters per kernel: rows per tile, warps, pipeline stages, optionally a
# register cap (maxnreg); per head dim overrides in _CONFIGS_BY_D. Tuned on one H100
# (see docs/polarity_kernel_notes.md); the interpreter ignores all but the tile rows.
_CONFIGS: dict[str, dict[str, int | None]] = {
    "state": {"BL": 64, "num_warps": 4, "num_stages": 2},
    "out": {"BM": 64, "num_warps": 4, "num_stages": 2},
    "bwd_dq": {"BM": 64, "num_warps": 4, "num_stages": 2},  # q side, D <= 64: dq
    # 8 warps: at 4 warps Triton 3.6 miscompiled the D = 64 bfloat16 kernel on H100 (wrong
    # key-sum gradients, later an illegal address); see docs/polarity_kernel_notes.md.
    "bwd_dstate": {"BM": 64, "num_warps": 8, "num_stages": 2},  # q side, D <= 64: state gradients
    "bwd_q": {"BM": 64, "num_warps": 8, "num_stages": 2},  # q side, D = 128 (blocked kernel)
    "bwd_k": {"BM": 64, "num_warps": 8, "num_stages": 2},
}
_CONFIGS_BY_D: dict[tuple[str, int], dict[str, int | None]] = {}
# Target number of programs per launch as a multiple of the SM count (L is split into
# chunks until the grid reaches it).
_WAVES = 4


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


def _launch_options(cfg: dict[str, int]) -> dict[str, int]:
    """num_warps / num_stages, and a register cap (``maxnreg``) where a config sets one."""
    return {k: v for k, v in cfg.items() if k in ("num_warps", "num_stages", "maxnreg") and v is not None}


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _chunks(n_tiles: int, programs_per_chunk: int, device: torch.device) -> tuple[int, int]:
    """Split n_tiles row tiles into chunks so the grid fills the machine: (n_chunks, tiles_per_chunk)."""
    if device.type == "cuda":
        target = _WAVES * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
        n_chunks = max(1, min(n_tiles, -(-target // max(programs_per_chunk, 1))))
    else:
        n_chunks = min(n_tiles, 2)  # interpreter: few programs, yet the split-L (atomic) path runs
    per = -(-n_tiles // n_chunks)
    return -(-n_tiles // per), per


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


def _forward(q: Tensor, k: Tensor, v: Tensor, p: Tensor, mask_u8: Tensor | None, neps: Tensor | None,
             eps: float) -> tuple[Tensor, Tensor]:
    b, h, l, d = q.shape
    dp, bn, nb = _layout(d)
    op, prec = _dot_types(q.dtype)
    has_mask = mask_u8 is not None
    n_tiles_fn = lambda rows: triton.cdiv(l, rows)  # noqa: E731
    dummy = p  # placeholder pointer for unused arguments

    cs = _config("state", d, q.dtype, q.device)
    n_c, per = _chunks(n_tiles_fn(cs["BL"]), b * h * nb, q.device)
    atomic = n_c > 1
    state_size = 2 * d * d + 2 * d
    alloc = torch.zeros if atomic else torch.empty
    state = alloc((b * h, state_size), device=q.device, dtype=torch.float32)  # (Mp, Mn, zp, zn)
    _fwd_state_kernel[(n_c, b * h, nb)](
        k, v, p, mask_u8 if has_mask else dummy, state,
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        h, l, per,
        D=d, DP=dp, HALF=d // 2, BN=bn, BL=cs["BL"],
        HAS_MASK=has_mask, ATOMIC=atomic, OP=op, PREC=prec,
        **_launch_options(cs),
    )

    co = _config("out", d, q.dtype, q.device)
    o = torch.empty((b, h, l, d), device=q.device, dtype=q.dtype)  # (B, H, L, D)
    n_c, per = _chunks(n_tiles_fn(co["BM"]), b * h * nb, q.device)
    _fwd_out_kernel[(n_c, b * h, nb)](
        q, p, state, neps if has_mask else dummy, o,
        q.stride(0), q.stride(1), q.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        h, l, per, float(l) * eps,
        D=d, DP=dp, HALF=d // 2, BN=bn, BM=co["BM"],
        HAS_MASK=has_mask, OP=op, PREC=prec,
        **_launch_options(co),
    )
    return o, state


def _backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, p: Tensor, o: Tensor, state: Tensor,
              mask_u8: Tensor | None, neps: Tensor | None, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    b, h, l, d = q.shape
    dp_, bn, nb = _layout(d)
    op, prec = _dot_types(q.dtype)
    has_mask = mask_u8 is not None
    dummy = p

    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    plan = [("bwd_dq", True, False), ("bwd_dstate", False, True)] if nb == 1 else [("bwd_q", True, True)]
    for name, do_dq, do_dstate in plan:
        cq = _config(name, d, q.dtype, q.device)
        n_c, per = _chunks(triton.cdiv(l, cq["BM"]), b * h * nb, q.device)
        atomic = n_c > 1
        if do_dstate:
            alloc = torch.zeros if atomic else torch.empty
            dstate = alloc((b * h, 2 * d * d + 2 * d), device=q.device, dtype=torch.float32)  # (dA, dB, dzp, dzn)
        if do_dq:
            dpq = torch.empty((n_c, b * h, d), device=q.device, dtype=torch.float32)
        strides = (
            q.stride(0), q.stride(1), q.stride(2),
            do.stride(0), do.stride(1), do.stride(2),
            o.stride(0), o.stride(1), o.stride(2),
            dq.stride(0), dq.stride(1), dq.stride(2),
        )
        if nb == 1:
            _bwd_q_kernel[(n_c, b * h)](
                q, do, o, p, state, neps if has_mask else dummy, dq,
                dstate if do_dstate else dummy, dpq if do_dq else dummy,
                *strides, h, l, b * h, per, float(l) * eps,
                D=d, DP=dp_, HALF=d // 2, BM=cq["BM"], HAS_MASK=has_mask, ATOMIC=atomic, OP=op, PREC=prec,
                DO_DQ=do_dq, DO_DSTATE=do_dstate, **_launch_options(cq),
            )
        else:
            _bwd_q_blocked_kernel[(n_c, b * h, nb)](
                q, do, o, p, state, neps if has_mask else dummy, dq, dstate, dpq,
                *strides, h, l, b * h, per, float(l) * eps,
                D=d, DP=dp_, HALF=d // 2, BN=bn, BM=cq["BM"], HAS_MASK=has_mask, ATOMIC=atomic, OP=op,
                PREC=prec, **_launch_options(cq),
            )

    ck = _config("bwd_k", d, q.dtype, q.device)
    n_c, per = _chunks(triton.cdiv(l, ck["BM"]), b * h * nb, q.device)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    dpk = torch.empty((n_c, b * h, d), device=q.device, dtype=torch.float32)
    _bwd_k_kernel[(n_c, b * h, nb)](
        k, v, p, mask_u8 if has_mask else dummy, dstate, dk, dv, dpk,
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        dk.stride(0), dk.stride(1), dk.stride(2),
        dv.stride(0), dv.stride(1), dv.stride(2),
        h, l, b * h, per,
        D=d, DP=dp_, BN=bn, BM=ck["BM"],
        HAS_MASK=has_mask, OP=op, PREC=prec,
        **_launch_options(ck),
    )
    # Kernels sum G * log2|x|; d phi / d p = phi ln x.
    dpower = (dpq.view(-1, b, h, d).sum((0, 1)) + dpk.view(-1, b, h, d).sum((0, 1))) * _LN2  # (H, D)
    return dq, dk, dv, dpower


class _PolarityAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, p: Tensor, key_mask: Tensor | None, eps: float) -> Tensor:
        b, _, l, _ = q.shape
        if key_mask is None:
            mask_u8 = neps = None
        else:
            mask_u8 = key_mask.contiguous().view(torch.uint8)  # (B, L), 1 = real key
            neps = key_mask.sum(dim=1, dtype=torch.float32).clamp_min(1.0) * eps  # (B,) n * eps
        o, state = _forward(q, k, v, p, mask_u8, neps, eps)
        ctx.save_for_backward(q, k, v, p, o, state, mask_u8, neps)
        ctx.eps = eps
        return o

    @staticmethod
    def backward(ctx, do: Tensor):
        q, k, v, p, o, state, mask_u8, neps = ctx.saved_tensors
        dq, dk, dv, dp = _backward(_rows(do), q, k, v, p, o, state, mask_u8, neps, ctx.eps)
        return dq, dk, dv, dp, None, None


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
        key_mask = key_mask.to(q.device)
    if q.dtype == torch.float64:
        return _reference_attention(q, k, v, power, key_mask=key_mask, eps=eps)
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"q must be float32, float16 or bfloat16, got {q.dtype}")
    if d > 64 and d != 128:
        raise ValueError(f"head dim D must be <= 64 or 128 for the Triton kernels, got {d}; use the reference")
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("the Triton polarity kernels need CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if l == 0 or b * h == 0:
        raise ValueError(f"empty input shape {tuple(q.shape)}")
    k = k.to(q.dtype)
    v = v.to(q.dtype)
    p = _as_power(power.to(device=q.device, dtype=torch.float32), h, d).reshape(h, d).contiguous()  # (H, D)
    return _PolarityAttention.apply(_rows(q), _rows(k), _rows(v), p, key_mask, float(eps))
