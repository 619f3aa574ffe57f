"""Kernel benchmark: fused Triton polarity attention vs its PyTorch reference vs SDPA flash.

Each shape (B, H, L, D) is timed forward and forward+backward (median, cold L2, through
``triton.testing.do_bench``: host and GPU work as a user's eager call runs) and again as a
CUDA-graph replay (the GPU time alone), with the extra peak memory each call allocates
beyond its inputs. A device-to-device copy is timed in the same run; the Triton forward's achieved
bandwidth (q, k, v read and o written once) is reported against it, with the byte floor
that bandwidth implies.

Library use (``lra bench kernels``)::

    rows = run(shapes=[(8, 16, 4096, 64)], lengths=[], dtype="bf16", out_json="k.json")
    print(format_table(rows))

One-shot GPU check (correctness tests, then the benchmark)::

    python -m lra.bench_kernels --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

DEFAULT_SHAPES: list[tuple[int, int, int, int]] = [(8, 16, 4096, 64), (32, 2, 4096, 32), (2, 16, 16384, 64)]
# Length sweep at B=2, H=16, D=64 (PolaFormer-like width): tokens grow with L, so the
# linear kernels' cost should too while softmax attention grows as L^2.
DEFAULT_LENGTHS: list[int] = [1024, 2048, 4096, 8192, 16384, 32768, 65536]
SWEEP_BHD: tuple[int, int, int] = (2, 16, 64)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

_REPO = Path(__file__).resolve().parents[1]
_TEST_FILE = "tests/attention_zoo/test_polarity_triton.py"


class CudaRequired(RuntimeError):
    """The kernel benchmark was asked for on a machine without CUDA (a user error: the CLI
    prints it as one line)."""


def _require_cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise CudaRequired(
            "lra bench kernels needs a CUDA GPU: the Triton kernels, SDPA's flash backend and the "
            "timings are GPU-only (torch.cuda.is_available() is False on this machine)"
        )
    return torch.device("cuda")


def _median_ms(fn: Callable[[], object]) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _median_graph_ms(fn: Callable[[], object], reps: int = 100) -> float:
    """Median ms of one replay of ``fn`` captured as a CUDA graph, cold L2 as in ``_median_ms``.

    Graph replay launches the captured kernels with no Python, allocator or autograd work
    in between: the GPU time of the call, without the host time of launching it.
    """
    import triton

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (allocator, autograd threads)
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    cache = triton.runtime.driver.active.get_empty_cache_for_benchmark()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for _ in range(5):
        graph.replay()
    for i in range(reps):
        cache.zero_()  # evict L2, as do_bench does between calls
        starts[i].record()
        graph.replay()
        ends[i].record()
    torch.cuda.synchronize()
    times = sorted(start.elapsed_time(end) for start, end in zip(starts, ends))
    del graph
    return float(times[len(times) // 2])


def _extra_peak_mb(fn: Callable[[], object]) -> float:
    """Peak memory allocated by one call beyond what was live before it, MiB."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return (peak - base) / 2**20


def copy_bandwidth_gbps(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), GB/s."""
    _require_cuda()
    src = torch.empty(nbytes // 4, device="cuda", dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    ms = _median_ms(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e9


def _impls(dtype: torch.dtype) -> dict[str, Callable]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from attention_zoo.kernels.polarity import reference
    from attention_zoo.kernels.polarity import triton as fused

    def sdpa(q, k, v, power):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    return {
        "triton": lambda q, k, v, power: fused.polarity_attention(q, k, v, power),
        "reference": lambda q, k, v, power: reference.polarity_attention(q, k, v, power),
        "sdpa_flash": sdpa,
    }


def _inputs(shape: tuple[int, int, int, int], dtype: torch.dtype):
    b, h, l, d = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(b, h, l, d, device="cuda", dtype=dtype, generator=g) for _ in range(4))
    power = 1.0 + 3.0 * torch.rand(h, d, device="cuda", generator=g)  # p in (1, 4)
    return q, k, v, power, do


def _measure(fn: Callable, shape: tuple[int, int, int, int], dtype: torch.dtype, graphs: bool = True) -> dict:
    """Eager medians (host and GPU together, as a user's call runs) and, with ``graphs``,
    CUDA-graph replay medians (GPU time alone) of the forward and forward+backward."""
    q, k, v, power, do = _inputs(shape, dtype)
    with torch.no_grad():
        fwd = lambda: fn(q, k, v, power)  # noqa: E731
        fwd()  # compile / warm up before measuring memory
        fwd_mem = _extra_peak_mb(fwd)
        fwd_ms = _median_ms(fwd)
    leaves = [t.requires_grad_() for t in (q, k, v, power)]

    def fwd_bwd():
        o = fn(*leaves)
        return torch.autograd.grad(o, leaves, do, allow_unused=True)

    fwd_bwd()
    fwd_bwd_mem = _extra_peak_mb(fwd_bwd)
    fwd_bwd_ms = _median_ms(fwd_bwd)
    out = {"fwd_ms": fwd_ms, "fwd_bwd_ms": fwd_bwd_ms, "fwd_mem_mb": fwd_mem, "fwd_bwd_mem_mb": fwd_bwd_mem}
    if graphs:
        reps = lambda ms: max(10, min(100, int(300 / max(ms, 1e-3))))  # noqa: E731 - about 0.3 s a case
        try:
            with torch.no_grad():
                out["fwd_graph_ms"] = _median_graph_ms(fwd, reps(fwd_ms))
            out["fwd_bwd_graph_ms"] = _median_graph_ms(fwd_bwd, reps(fwd_bwd_ms))
        except Exception as e:  # e.g. out of memory in the graph's pool: keep the eager numbers
            out["graph_status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            torch.cuda.synchronize()
    return out


def host_us_per_call(fn: Callable[[], object], n: int = 200, warmup: int = 10) -> float:
    """Host (Python + launch) microseconds per call of ``fn``: the loop's wall time without
    waiting for the GPU (which must keep up; time it with CUDA events to check)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    dt = (time.perf_counter() - t0) / n * 1e6
    torch.cuda.synchronize()
    return dt


def host_overhead_us(n: int = 200) -> dict[str, float | str]:
    """Host (Python + launch) time per Triton call on a tiny shape, microseconds.

    Also times the launchers without autograd, the same calls on the device (``gpu_*``),
    the autograd path with the engine's device threads off, and returns the top of a
    cProfile of that path (``profile``).
    """
    _require_cuda()
    import cProfile
    import io
    import pstats

    from attention_zoo.kernels.polarity import triton as fused

    q, k, v, power, do = _inputs((1, 1, 64, 64), torch.bfloat16)
    p = power.contiguous()
    leaves = [t.requires_grad_() for t in (q, k, v, power)]
    saved = fused._forward(q, k, v, p, None, None, 1e-6)  # (o, work, plan)
    fwd_bwd = lambda: torch.autograd.grad(fused.polarity_attention(*leaves), leaves, do)  # noqa: E731
    class _Floor(torch.autograd.Function):
        """An op with the same inputs and a Python backward that launches nothing: the
        fixed host cost any autograd.Function pays on this machine."""

        @staticmethod
        def forward(ctx, q, k, v, p):
            return torch.empty_like(q)

        @staticmethod
        def backward(ctx, g):
            return g, g, g, None

    cases = {
        "floor_builtin_op_fwd_bwd": lambda: torch.autograd.grad(leaves[0] * 1.0, leaves[0], do),
        "floor_python_fn_fwd_bwd": lambda: torch.autograd.grad(_Floor.apply(*leaves), leaves[:3], do),
        "fwd": lambda: fused.polarity_attention(q, k, v, power),
        "fwd_bwd": fwd_bwd,
        "launch_forward": lambda: fused._forward(q, k, v, p, None, None, 1e-6),
        "launch_backward": lambda: fused._backward(do, q, k, v, p, *saved, None),
    }

    def per_call(fn) -> float:
        return host_us_per_call(fn, n, warmup=10)

    out: dict[str, float | str] = {name: per_call(fn) for name, fn in cases.items()}
    # Device time of the same calls (CUDA events): if it matches the host time, the
    # tiny kernels, not Python, set the pace.
    out |= {f"gpu_{name}": _median_ms(fn) * 1e3 for name, fn in cases.items()}
    torch.autograd.set_multithreading_enabled(False)
    try:
        out["fwd_bwd_one_thread"] = per_call(fwd_bwd)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(50):
            fwd_bwd()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
        out["profile"] = text.getvalue()[-4000:]
    finally:
        torch.autograd.set_multithreading_enabled(True)
    torch.cuda.synchronize()
    return out


def kernel_breakdown(shape: tuple[int, int, int, int] = DEFAULT_SHAPES[0], dtype: str = "bf16",
                     iters: int = 5) -> list[dict]:
    """GPU time per kernel of one Triton fwd+bwd (torch.profiler), mean over ``iters`` runs."""
    _require_cuda()
    from torch.profiler import ProfilerActivity, profile

    from attention_zoo.kernels.polarity import triton as fused

    q, k, v, power, do = _inputs(shape, DTYPES[dtype])
    leaves = [t.requires_grad_() for t in (q, k, v, power)]
    step = lambda: torch.autograd.grad(fused.polarity_attention(*leaves), leaves, do)  # noqa: E731
    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            step()
        torch.cuda.synchronize()
    rows = []
    for evt in prof.key_averages():
        total = getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)
        if total:
            rows.append({"kernel": evt.key[:80], "calls": evt.count // iters, "us_per_step": total / iters})
    return sorted(rows, key=lambda r: -r["us_per_step"])


def _environment() -> dict:
    import triton

    props = torch.cuda.get_device_properties(0)
    return {
        "device": torch.cuda.get_device_name(0),
        "sm_count": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "host": platform.node(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _write_json_atomic(path: str | os.PathLike, payload: object) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(
    shapes: list[tuple[int, int, int, int]] | None = None,
    lengths: list[int] | None = None,
    dtype: str = "bf16",
    out_json: str | None = None,
    progress: Callable[[str], object] = print,
    graphs: bool = True,
) -> list[dict]:
    """Benchmark Triton / reference / SDPA flash on every shape; one row per (shape, impl).

    Args:
        shapes: (B, H, L, D) shapes; None runs ``DEFAULT_SHAPES``, [] none.
        lengths: sequence lengths swept at (B, H, D) = ``SWEEP_BHD``; None runs
            ``DEFAULT_LENGTHS``, [] none.
        dtype: "bf16", "fp16" or "fp32" (SDPA flash has no fp32 and records an error).
        out_json: if given, ``{"environment": ..., "rows": [...]}`` is written there
            atomically (temp file, then ``os.replace``).
        progress: called with one line per measured row.
        graphs: also time each call replayed as a CUDA graph (``fwd_graph_ms``,
            ``fwd_bwd_graph_ms``): the GPU time without the host's launch work.

    Returns:
        Rows with shape, impl, fwd_ms, fwd_bwd_ms (medians), fwd_mem_mb, fwd_bwd_mem_mb
        (peak MiB beyond the inputs) and status ("ok", "oom" or "error: ..."); Triton rows
        add the forward's bytes, achieved GB/s, the copy GB/s and the byte floor in ms.
    """
    device = _require_cuda()
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    torch_dtype = DTYPES[dtype]
    shapes = list(DEFAULT_SHAPES if shapes is None else shapes)
    b, h, d = SWEEP_BHD
    shapes += [(b, h, l, d) for l in (DEFAULT_LENGTHS if lengths is None else lengths) if (b, h, l, d) not in shapes]

    env = _environment()
    copy_gbps = copy_bandwidth_gbps()
    progress(f"{env['device']}: device-to-device copy {copy_gbps:.0f} GB/s")
    impls = _impls(torch_dtype)
    rows: list[dict] = []
    for shape in shapes:
        b, h, l, d = shape
        for name, fn in impls.items():
            row = {"shape": f"{b}x{h}x{l}x{d}", "B": b, "H": h, "L": l, "D": d, "dtype": dtype, "impl": name,
                   "device": env["device"], "fwd_ms": None, "fwd_bwd_ms": None, "fwd_mem_mb": None,
                   "fwd_bwd_mem_mb": None, "fwd_graph_ms": None, "fwd_bwd_graph_ms": None, "status": "ok"}
            try:
                row.update(_measure(fn, shape, torch_dtype, graphs=graphs))
            except torch.cuda.OutOfMemoryError:
                row["status"] = "oom"
            except Exception as e:  # a failing impl is recorded, the sweep goes on
                row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            finally:
                torch.cuda.synchronize(device)
                torch.cuda.empty_cache()
            if name == "triton":
                nbytes = 4 * b * h * l * d * torch.tensor([], dtype=torch_dtype).element_size()  # q, k, v, o
                row["fwd_bytes"] = nbytes
                row["copy_gbps"] = copy_gbps
                row["byte_floor_ms"] = nbytes / (copy_gbps * 1e9) * 1e3
                if row["fwd_ms"]:
                    row["fwd_gbps"] = nbytes / (row["fwd_ms"] * 1e-3) / 1e9
                    row["fwd_bw_frac"] = row["fwd_gbps"] / copy_gbps
            rows.append(row)
            progress(_row_line(row))
    if out_json:
        from attention_zoo.kernels.polarity import triton as fused

        by_d = {f"{name}@{d}": cfg for (name, d), cfg in fused._CONFIGS_BY_D.items()}
        config = {"configs": fused._CONFIGS, "configs_by_d": by_d, "waves": fused._WAVES}
        _write_json_atomic(out_json, {"environment": env | {"copy_gbps": copy_gbps}, "triton_config": config,
                                      "rows": rows})
    return rows


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _row_line(row: dict) -> str:
    graphed = ""
    if row.get("fwd_bwd_graph_ms") is not None:
        graphed = f" (graph replay {_fmt(row['fwd_graph_ms'])} / {_fmt(row['fwd_bwd_graph_ms'])} ms)"
    return (f"{row['shape']:>16} {row['dtype']} {row['impl']:>10}: fwd {_fmt(row['fwd_ms'])} ms, "
            f"fwd+bwd {_fmt(row['fwd_bwd_ms'])} ms{graphed}, {row['status']}")


def format_table(rows: list[dict]) -> str:
    """Markdown table of ``run``'s rows (times in ms, memory in MiB beyond the inputs;
    "graph": the same call replayed as a CUDA graph, i.e. GPU time without host work)."""
    lines = [
        "| shape B x H x L x D | dtype | impl | fwd ms | fwd+bwd ms | graph fwd ms | graph fwd+bwd ms "
        "| fwd MiB | fwd+bwd MiB | fwd GB/s (of copy) | fwd byte floor ms | status |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        bw = "-"
        if r.get("fwd_gbps"):
            bw = f"{r['fwd_gbps']:.0f} ({100 * r['fwd_bw_frac']:.0f}%)"
        floor = _fmt(r.get("byte_floor_ms"))
        lines.append(
            f"| {r['B']} x {r['H']} x {r['L']} x {r['D']} | {r['dtype']} | {r['impl']} | {_fmt(r['fwd_ms'])} "
            f"| {_fmt(r['fwd_bwd_ms'])} | {_fmt(r.get('fwd_graph_ms'))} | {_fmt(r.get('fwd_bwd_graph_ms'))} "
            f"| {_fmt(r['fwd_mem_mb'], '.0f')} | {_fmt(r['fwd_bwd_mem_mb'], '.0f')} "
            f"| {bw} | {floor} | {r['status']} |"
        )
    return "\n".join(lines)


def _record(entry: dict, results: list[dict], progress: Callable[[str], object],
            jsonl: str | os.PathLike | None) -> None:
    results.append(entry)
    progress(json.dumps(entry))
    if jsonl:
        with open(jsonl, "a") as f:
            f.write(json.dumps(entry) + "\n")


SWEEP_CANDIDATES: list[tuple[int, int, int, int | None]] = [
    # (rows per tile, warps, stages, maxnreg)
    (64, 4, 2, None), (64, 8, 2, None), (64, 4, 3, None), (64, 8, 3, None), (128, 8, 2, None), (32, 4, 2, None),
    (64, 4, 1, None), (128, 4, 2, None),
]
# Kernel config name -> (the launcher that times it, code-path flags it needs).
_SWEEP_KERNELS: dict[str, tuple[str, dict[str, bool]]] = {
    "state": ("fwd", {}), "out": ("fwd", {}),
    "bwd_q1": ("bwd", {"q_one_launch": True}),
    "bwd_dq": ("bwd", {"q_one_launch": False}), "bwd_dstate": ("bwd", {"q_one_launch": False}),
    "bwd_k": ("bwd", {}),
}
# Whole fwd+bwd under each code-path flag setting (and a few _WAVES).
SWEEP_FLAGS: list[dict[str, bool]] = [
    {}, {"q_one_launch": False}, {"fast_log": True}, {"fast_launch": False},
]


def _errors(fused, q, k, v, p, do, want: list[torch.Tensor]) -> float:
    """Largest relative L2 error of (o, dq, dk, dv, dpower) against ``want``; inf on NaN."""
    o, work, plan = fused._forward(q, k, v, p, None, None, 1e-6)
    got = [o, *fused._backward(do, q, k, v, p, o, work, plan, None)]
    worst = 0.0
    for x, y in zip(got, want):
        if not torch.isfinite(x).all():
            return float("inf")
        worst = max(worst, ((x.float() - y).norm() / y.norm()).item())
    return worst


def sweep_configs(
    shapes: list[tuple[int, int, int, int]] | None = None,
    dtype: str = "bf16",
    progress: Callable[[str], object] = print,
    jsonl: str | os.PathLike | None = None,
    part: tuple[int, int] = (0, 1),
    timing: bool = True,
    candidates: list[tuple[int, int, int, int | None]] | None = None,
    kernels: list[str] | None = None,
) -> list[dict]:
    """Time (and check) the Triton kernels' launch settings and code paths, one at a time.

    For each shape and each candidate of ``SWEEP_CANDIDATES`` for one kernel, the forward
    launcher (state / out kernels) or the backward launcher (q side, k side) is timed
    with the others at their base settings; then whole fwd+bwd under each of
    ``SWEEP_FLAGS`` and a few ``_WAVES``. Every entry also records ``max_rel_err``, the
    largest relative error of o and the four gradients against the float32 PyTorch
    reference on the same inputs, and ``ok`` (<= 1e-2, no NaN): a Triton miscompile
    shows up there, not as a fast time. ``_CONFIGS``/``_FLAGS`` are restored afterwards.
    Each result is appended to ``jsonl`` as it comes, so a cut-off sweep keeps its part.
    ``part=(i, n)`` runs every n-th job from i and ``timing=False`` only compiles and runs
    once: n such processes in parallel fill Triton's on-disk cache before one timed sweep.
    """
    _require_cuda()
    import triton.testing

    from attention_zoo.kernels.polarity import reference
    from attention_zoo.kernels.polarity import triton as fused

    torch_dtype = DTYPES[dtype]
    saved = {k: dict(v) for k, v in fused._CONFIGS.items()}
    saved_flags = dict(fused._FLAGS)
    saved_waves = fused._WAVES
    saved_by_d = dict(fused._CONFIGS_BY_D)
    fused._CONFIGS_BY_D.clear()  # candidates replace the base settings for every head dim
    results: list[dict] = []
    job = -1

    def restore() -> None:
        fused._PLANS.clear()
        fused._CONFIGS.clear()
        fused._CONFIGS.update({kk: dict(vv) for kk, vv in saved.items()})
        fused._FLAGS.clear()
        fused._FLAGS.update(saved_flags)
        fused._WAVES = saved_waves

    try:
        for shape in shapes or DEFAULT_SHAPES:
            q, k, v, power, do = _inputs(shape, torch_dtype)
            p = power.contiguous()
            ref_in = [t.detach().float().requires_grad_() for t in (q, k, v, p)]
            ref_o = reference.polarity_attention(*ref_in)
            want = [ref_o.detach(), *torch.autograd.grad(ref_o, ref_in, do.float())]
            del ref_o, ref_in

            def fwd():
                return fused._forward(q, k, v, p, None, None, 1e-6)

            def both():
                return fused._backward(do, q, k, v, p, *fwd(), None)

            jobs = [(kernel, which, flags, c) for kernel, (which, flags) in _SWEEP_KERNELS.items()
                    if kernels is None or kernel in kernels for c in (candidates or SWEEP_CANDIDATES)]
            if kernels is None or "all" in kernels:
                jobs += [("all", "both", flags, None) for flags in SWEEP_FLAGS]
                jobs += [("all", "both", {}, waves) for waves in (2, 8)]
            for kernel, which, flags, cand in jobs:
                job += 1
                if job % part[1] != part[0]:
                    continue
                entry: dict = {"shape": "x".join(map(str, shape)), "kernel": kernel, "flags": flags}
                fused._FLAGS.update(flags)
                if kernel == "all" and cand is not None:
                    fused._WAVES = entry["waves"] = cand
                elif kernel != "all":
                    rows_, warps, stages, maxnreg = cand
                    key = "BL" if kernel == "state" else "BM"
                    fused._CONFIGS[kernel] = {key: rows_, "num_warps": warps, "num_stages": stages, "maxnreg": maxnreg}
                    entry.update(fused._CONFIGS[kernel])
                fused._PLANS.clear()
                try:
                    entry["max_rel_err"] = _errors(fused, q, k, v, p, do, want)
                    entry["ok"] = entry["max_rel_err"] <= 1e-2
                    if timing:
                        if which == "bwd":
                            fwd_out = fwd()
                            fn = lambda: fused._backward(do, q, k, v, p, *fwd_out, None)  # noqa: E731
                        else:
                            fn = fwd if which == "fwd" else both
                        entry["ms"] = float(triton.testing.do_bench(fn, warmup=5, rep=30, return_mode="median"))
                except Exception as e:  # e.g. out of shared memory for a large tile, an illegal address
                    entry["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                    entry["ok"] = False
                finally:
                    restore()
                if timing:
                    _record(entry, results, progress, jsonl)
            torch.cuda.empty_cache()
    finally:
        fused._CONFIGS_BY_D.update(saved_by_d)
        restore()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for bench_kernels.json / .md and the test log")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--shapes", default=None, help="comma-separated BxHxLxD list (default: the standard three)")
    parser.add_argument("--lengths", default=None, help="comma-separated lengths for the sweep ('' for none)")
    parser.add_argument("--no-tests", action="store_true", help="skip the GPU correctness tests")
    parser.add_argument("--no-graphs", action="store_true", help="skip the CUDA-graph replay timings")
    parser.add_argument("--sweep", action="store_true", help="also time the kernels' launch settings")
    parser.add_argument("--profile", action="store_true", help="host overhead and per-kernel GPU time")
    parser.add_argument("--sweep-only", action="store_true", help="only the sweep (no tests, no benchmark)")
    parser.add_argument("--sweep-kernels", default=None, help="comma-separated kernels the sweep tunes (default all)")
    parser.add_argument("--sweep-warm", default=None, metavar="I/N",
                        help="only compile part I of N of the sweep's configs (run N at once, then --sweep)")
    args = parser.parse_args(argv)
    _require_cuda()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shapes = None if args.shapes is None else [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",") if s]
    sweep_kernels = None if args.sweep_kernels is None else [k for k in args.sweep_kernels.split(",") if k]
    unknown = sorted(set(sweep_kernels or []) - {*_SWEEP_KERNELS, "all"})
    if unknown:
        parser.error(f"unknown kernel(s) {', '.join(unknown)}; valid: {', '.join([*_SWEEP_KERNELS, 'all'])}")
    if args.sweep_warm:
        i, n = (int(x) for x in args.sweep_warm.split("/"))
        sweep_configs(shapes, dtype=args.dtype, part=(i, n), timing=False, kernels=sweep_kernels)
        return 0
    if args.sweep_only:
        sweep_configs(shapes, dtype=args.dtype, jsonl=out / "sweep.jsonl", kernels=sweep_kernels)
        return 0

    tests_rc = 0
    if not args.no_tests:
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", _TEST_FILE]
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
        proc = subprocess.run(cmd, cwd=_REPO, env=env, capture_output=True, text=True)
        (out / "gpu_tests.log").write_text(proc.stdout + proc.stderr)
        tests_rc = proc.returncode
        print(proc.stdout[-3000:] + proc.stderr[-2000:])

    lengths = None if args.lengths is None else [int(x) for x in args.lengths.split(",") if x]
    rows = run(shapes, lengths, dtype=args.dtype, out_json=str(out / "bench_kernels.json"), graphs=not args.no_graphs)
    table = format_table(rows)
    (out / "bench_kernels.md").write_text(table + "\n")
    print(table)
    if args.profile:
        prof = {"host_us": host_overhead_us(),
                "kernels": {"x".join(map(str, sh)): kernel_breakdown(sh, args.dtype) for sh in DEFAULT_SHAPES}}
        _write_json_atomic(out / "profile.json", prof)
        print(prof["host_us"].pop("profile"))
        print(json.dumps(prof, indent=1))
    if args.sweep:
        sweep_configs(shapes, dtype=args.dtype, jsonl=out / "sweep.jsonl", kernels=sweep_kernels)
    return 1 if tests_rc else 0


if __name__ == "__main__":
    sys.exit(main())
