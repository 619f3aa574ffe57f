"""Fused Triton polarity attention against the float64 reference: outputs and every gradient.

CPU runs the kernels under the Triton interpreter (float32 / float16; the interpreter
has no bfloat16). The variable must be set before the kernel module is imported, since
``@triton.jit`` picks interpreter or compiler when it decorates; on a machine without
CUDA this module sets it. GPU tests (``-m gpu``) run at the benchmark shapes in float32
and bfloat16 and are skipped without CUDA or under the interpreter.
"""

from __future__ import annotations

import importlib
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

triton = pytest.importorskip("triton")

from attention_zoo.kernels.polarity import reference  # noqa: E402
from attention_zoo.kernels.polarity import triton as kernels  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if INTERPRET and type(kernels._fwd_state_kernel).__name__ != "InterpretedFunction":
    # Imported before the variable was set (by another test module): decorate again.
    kernels = importlib.reload(kernels)

cpu_only = pytest.mark.skipif(not INTERPRET, reason="CPU tests need TRITON_INTERPRET=1")

# Relative L2 error bounds vs the float64 reference on the same (rounded) inputs.
# float32: sums run in float32 (IEEE dots), observed ~3e-7. float16: the result and the
# gradients are rounded to float16 (unit roundoff 2^-11 = 4.9e-4, observed <= 5e-4 in norm)
# while everything inside runs in float32, so 4 unit roundoffs. bfloat16 (GPU): phi and
# the states enter the tensor-core dots in bfloat16 (unit roundoff 2^-8 = 3.9e-3; observed
# <= 4.1e-3 on an H100).
TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}


class _PoisonedTorch:
    """Stands in for ``torch`` inside the kernel module: fresh buffers come back NaN-filled,
    so any element a kernel fails to write shows up as NaN."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def _poison(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan")) if t.is_floating_point() else t.fill_(117)

    def empty(self, *args, **kwargs):
        return self._poison(torch.empty(*args, **kwargs))

    def empty_like(self, *args, **kwargs):
        return self._poison(torch.empty_like(*args, **kwargs))


@pytest.fixture
def poisoned(monkeypatch):
    monkeypatch.setattr(kernels, "torch", _PoisonedTorch())
    return kernels


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref).norm() / ref.norm()).item()


def _inputs(b, h, l, d, dtype, device, *, padded, scale=1.0, power_shape=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v, do = (torch.randn(b, h, l, d, generator=g) for _ in range(4))
    q, k = q * scale, k * scale
    shape = power_shape if power_shape is not None else (h, d)
    power = 1.0 + 3.0 * torch.rand(shape, generator=g)  # p in (1, 4), as PolaFormer with alpha = 3
    mask = None
    if padded:
        lengths = torch.randint(1, l + 1, (b,), generator=g)
        lengths[0] = l  # one full row, one padded
        lengths[-1] = min(lengths[-1].item(), l - 1)
        mask = torch.arange(l)[None, :] < lengths[:, None]  # (B, L)
    cast = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    return cast(q), cast(k), cast(v), power.to(device), None if mask is None else mask.to(device), cast(do)


def _check(fn, q, k, v, power, mask, do, tol, eps=1e-6):
    """Run fn and the float64 reference; compare o, dq, dk, dv, dpower; no NaN anywhere."""
    ins = [t.detach().clone().requires_grad_() for t in (q, k, v, power)]
    o = fn(*ins, key_mask=mask, eps=eps)
    o.backward(do)
    ref_ins = [t.detach().double().requires_grad_() for t in (q, k, v, power)]
    ref = reference.polarity_attention(*ref_ins, key_mask=mask, eps=eps)
    ref.backward(do.double())

    assert o.dtype == q.dtype and o.shape == q.shape
    assert ins[3].grad.shape == power.shape
    names = ["o", "dq", "dk", "dv", "dpower"]
    got = [o] + [t.grad for t in ins]
    want = [ref] + [t.grad for t in ref_ins]
    errors = {}
    for name, x, y in zip(names, got, want):
        assert not torch.isnan(x).any(), f"{name} has NaN (unwritten or invalid elements)"
        assert torch.isfinite(y).all(), f"reference {name} not finite: bad test inputs"
        errors[name] = _rel(x, y)
    assert all(e <= tol for e in errors.values()), f"relative errors {errors} > {tol}"
    return errors


@cpu_only
@pytest.mark.parametrize("padded", [False, True], ids=["dense", "padded"])
@pytest.mark.parametrize("d", [16, 32, 64])
@pytest.mark.parametrize("l", [63, 200])
def test_float32_matches_reference(poisoned, l, d, padded):
    args = _inputs(2, 2, l, d, torch.float32, "cpu", padded=padded)
    _check(poisoned.polarity_attention, *args, tol=TOL[torch.float32])


@cpu_only
@pytest.mark.parametrize(
    ("l", "d", "padded"),
    [(63, 16, True), (63, 32, False), (63, 64, True), (200, 16, False), (200, 32, True), (200, 64, False)],
)
def test_float16_matches_reference(poisoned, l, d, padded):
    args = _inputs(2, 2, l, d, torch.float16, "cpu", padded=padded, seed=1)
    _check(poisoned.polarity_attention, *args, tol=TOL[torch.float16])


@cpu_only
def test_float16_features_beyond_float16_range(poisoned):
    # |q|, |k| up to ~40 with p up to 4: relu(x)^p ~ 1e6 overflows float16 (max 65504);
    # the kernels keep phi, the states and the normaliser in float32.
    q, k, v, power, mask, do = _inputs(2, 2, 63, 16, torch.float16, "cpu", padded=True, scale=12.0, seed=2)
    assert (q.float().abs().max() ** power.max()) > 65504
    _check(poisoned.polarity_attention, q, k, v, power, mask, do, tol=TOL[torch.float16])


@cpu_only
def test_head_dim_not_a_power_of_two(poisoned):
    # D = 24 pads to 32 columns; the halves are columns 0-11 and 12-23.
    args = _inputs(2, 2, 63, 24, torch.float32, "cpu", padded=True, seed=9)
    _check(poisoned.polarity_attention, *args, tol=TOL[torch.float32])


@cpu_only
def test_head_dim_128_two_column_blocks(poisoned):
    # D = 128 splits the state into two column blocks (one per half of v).
    args = _inputs(2, 2, 63, 128, torch.float32, "cpu", padded=True, seed=3)
    _check(poisoned.polarity_attention, *args, tol=TOL[torch.float32])


@cpu_only
@pytest.mark.parametrize("power_shape", [(1, 2, 1, 32), (32,), (2, 1), ()], ids=["1H1D", "D", "H1", "scalar"])
def test_power_shapes_reduce_gradient(poisoned, power_shape):
    args = _inputs(2, 2, 63, 32, torch.float32, "cpu", padded=False, power_shape=power_shape, seed=4)
    _check(poisoned.polarity_attention, *args, tol=TOL[torch.float32])


@cpu_only
def test_strided_inputs_fully_masked_row_and_eps(poisoned):
    # q, k, v as views of (B, L, H, D) projections, one sequence with no real key (n
    # clamps to 1, o = 0) and a non-default eps.
    g = torch.Generator().manual_seed(5)
    b, h, l, d = 2, 2, 63, 32
    q, k, v = (torch.randn(b, l, h, d, generator=g).transpose(1, 2) for _ in range(3))  # (B, H, L, D) views
    assert not q.is_contiguous()
    power = 1.0 + 3.0 * torch.rand(h, d, generator=g)
    mask = torch.ones(b, l, dtype=torch.bool)
    mask[1] = False
    do = torch.randn(b, h, l, d, generator=g)
    _check(poisoned.polarity_attention, q, k, v, power, mask, do, tol=TOL[torch.float32], eps=1e-2)


@cpu_only
@pytest.mark.parametrize("d", [32, 64])
def test_q_side_as_two_launches(poisoned, monkeypatch, d):
    # The q-side backward runs its dq and state-gradient programs in one launch by default;
    # the two-launch path must give the same results.
    monkeypatch.setitem(poisoned._FLAGS, "q_one_launch", False)
    poisoned._PLANS.clear()
    args = _inputs(2, 2, 200, d, torch.float32, "cpu", padded=True, seed=7)
    _check(poisoned.polarity_attention, *args, tol=TOL[torch.float32])
    (fwd,) = poisoned._PLANS.values()
    (bwd,) = fwd.bwd.values()
    assert [launch.meta["PART"] for launch in bwd[0]] == [0, 1]  # the two-launch path ran


@cpu_only
def test_no_grad_forward_matches_and_records_nothing(poisoned):
    # Without gradients the op skips autograd and the gradient accumulators: same output.
    q, k, v, power, mask, _ = _inputs(2, 2, 200, 32, torch.float32, "cpu", padded=True, seed=11)
    with torch.no_grad():
        o_ng = poisoned.polarity_attention(q, k, v, power, key_mask=mask)
    o_plain = poisoned.polarity_attention(q, k, v, power, key_mask=mask)  # grad mode, no input needs grad
    ins = [t.clone().requires_grad_() for t in (q, k, v, power)]
    o = poisoned.polarity_attention(*ins, key_mask=mask)
    assert o_ng.grad_fn is None and o_plain.grad_fn is None and o.grad_fn is not None
    assert not torch.isnan(o_ng).any()
    torch.testing.assert_close(o_ng, o.detach(), rtol=0, atol=0)
    torch.testing.assert_close(o_plain, o.detach(), rtol=0, atol=0)


@pytest.mark.parametrize(("b", "h", "l", "d"), [(1, 1, 1, 2), (3, 5, 63, 6), (2, 3, 7, 24), (1, 2, 5, 128)])
def test_work_buffer_segments_are_16_byte_aligned(b, h, l, d):
    # Direct launches pass addresses inside one float32 buffer where the first (JIT) call
    # passed views; Triton specialised on 16-byte alignment, so every segment must keep it.
    q = torch.zeros(b, h, l, d)
    plan = kernels._fwd_plan(q, q, q, False, ("test-only",))
    kernels._PLANS.pop(("test-only",))
    offsets = [plan.rden, plan.dstate, plan.dpower, plan.n_fwd, plan.n_grad]
    assert all(off % 4 == 0 for off in offsets), offsets
    assert plan.rden >= b * h * (2 * d * d + 2 * d)
    assert plan.dstate - plan.rden >= b * h * l * 2
    assert plan.dpower - plan.dstate >= b * h * (2 * d * d + 2 * d)
    assert plan.n_grad - plan.dpower >= h * d


def test_shape_errors():
    q = torch.zeros(1, 2, 8, 16)
    with pytest.raises(ValueError, match="share the shape"):
        kernels.polarity_attention(q, torch.zeros(1, 2, 9, 16), q, torch.ones(2, 16))
    with pytest.raises(ValueError, match="even"):
        kernels.polarity_attention(*(torch.zeros(1, 2, 8, 15),) * 3, torch.ones(2, 15))
    with pytest.raises(ValueError, match="<= 64 or 128"):
        kernels.polarity_attention(*(torch.zeros(1, 2, 8, 96),) * 3, torch.ones(2, 96))
    with pytest.raises(ValueError, match="key_mask"):
        kernels.polarity_attention(q, q, q, torch.ones(2, 16), key_mask=torch.ones(1, 7, dtype=torch.bool))


# Benchmark shapes (B, H, L, D) and a few small ones for the other head dims.
GPU_CASES = [
    pytest.param((8, 16, 4096, 64), False, id="8x16x4096x64"),
    pytest.param((32, 2, 4096, 32), False, id="32x2x4096x32"),
    pytest.param((2, 16, 16384, 64), False, id="2x16x16384x64"),
    pytest.param((4, 4, 1000, 64), True, id="4x4x1000x64-padded"),
    pytest.param((2, 4, 1000, 16), True, id="2x4x1000x16-padded"),
    pytest.param((2, 4, 1000, 128), True, id="2x4x1000x128-padded"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("shape", "padded"), GPU_CASES)
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRET, reason="needs CUDA, compiled Triton")
def test_gpu_matches_reference(poisoned, shape, padded, dtype):
    args = _inputs(*shape, dtype, "cuda", padded=padded, seed=6)
    _check(poisoned.polarity_attention, *args, tol=TOL[dtype])


# Code paths off the default: two q-side launches, libdevice's log2, Triton's own launch
# path (the default launches compiled kernels directly after the first call).
GPU_FLAGS = [
    pytest.param({"q_one_launch": False}, id="two-q-launches"),
    pytest.param({"fast_log": False}, id="libdevice-log2"),
    pytest.param({"fast_launch": False}, id="jit-launch"),
]


@pytest.mark.parametrize("flags", GPU_FLAGS)
@pytest.mark.parametrize(("shape", "padded"), [GPU_CASES[1], GPU_CASES[3]])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRET, reason="needs CUDA, compiled Triton")
def test_gpu_code_paths(poisoned, monkeypatch, shape, padded, flags):
    for name, value in flags.items():
        monkeypatch.setitem(poisoned._FLAGS, name, value)
    args = _inputs(*shape, torch.bfloat16, "cuda", padded=padded, seed=8)
    _check(poisoned.polarity_attention, *args, tol=TOL[torch.bfloat16])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRET, reason="needs CUDA, compiled Triton")
def test_gpu_direct_launch_matches_first_call(poisoned):
    # The first call compiles through Triton's JIT; the second launches the cached compiled
    # kernels directly. Both must match the reference (a wrong argument order would not).
    poisoned._PLANS.clear()
    args = _inputs(3, 2, 777, 32, torch.bfloat16, "cuda", padded=True, seed=10)
    first = _check(poisoned.polarity_attention, *args, tol=TOL[torch.bfloat16])
    assert poisoned._direct_launches() >= 3, "no compiled kernel was cached for direct launches"
    second = _check(poisoned.polarity_attention, *args, tol=TOL[torch.bfloat16])
    assert all(abs(first[n] - second[n]) <= 1e-3 for n in first), (first, second)
