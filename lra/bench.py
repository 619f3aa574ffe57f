"""Speed and memory benchmarks: whole training steps (LRA Table 2 protocol), single
attention layers, and the input pipeline's share of a step.

Timings use device events on CUDA (host clock after a synchronize on CPU), after
warm-up, as the median of repeated steps. Out-of-memory is recorded, never a crash.
Results are records (JSON) that tables and plots read.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import attention_zoo
from lra import protocols, records
from lra.model import Classifier


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, warmup: int = 3, repeat: int = 10) -> list[float]:
    """Per-call milliseconds of ``fn`` (device events on CUDA), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return times


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _failure(e: Exception) -> str:
    """'oom' for out-of-memory, else 'error: <first line>' (recorded, so one broken variant
    does not end a benchmark of many)."""
    if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower():
        return "oom"
    return f"error: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def speed(variants: list[str], lengths: list[int], batch_size: int = 32, protocol: str = "skyformer",
          device: torch.device | None = None, warmup: int = 3, repeat: int = 10,
          progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """LRA Table 2: byte-level text training steps (forward, backward, optimizer) per second
    and peak memory, for each variant spec and length, each relative to ``softmax``."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for spec in variants:
        name, hp = attention_zoo.parse_spec(spec)
        for length in lengths:
            cfg = protocols.resolve("text", protocol, name, hp, overrides={"data.seq_len": length})
            row = {"variant": cfg.variant_label(), "length": length, "batch_size": batch_size,
                   "protocol": protocol, "device": records.environment()["device"]}
            model = opt = None
            try:
                _peak_reset(device)
                model = Classifier(cfg.model, 257, length, 2).to(device)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
                g = torch.Generator(device="cpu").manual_seed(0)
                x = torch.randint(1, 257, (batch_size, length), generator=g).to(device)
                y = torch.randint(0, 2, (batch_size,), generator=g).to(device)

                def step():
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                        loss = F.cross_entropy(model(x).float(), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                ms = time_fn(step, device, warmup, repeat)
                row.update(status="ok", ms_per_step=statistics.median(ms), steps_per_s=1e3 / statistics.median(ms),
                           peak_memory_bytes=_peak(device))
            except Exception as e:  # noqa: BLE001  (recorded in the row)
                row.update(status=_failure(e), ms_per_step=None, steps_per_s=None, peak_memory_bytes=None)
            finally:
                del model, opt
                _peak_reset(device)
            rows.append(row)
            progress(f"{row['variant']:<24} L={length:<6} {row['status']:<4} "
                     + (f"{row['steps_per_s']:8.2f} steps/s  {(row['peak_memory_bytes'] or 0) / 2**30:6.2f} GiB"
                        if row["status"] == "ok" else ""))
    return relative_to(rows, "softmax")


def relative_to(rows: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """Add ``speed_rel`` and ``memory_rel`` against the baseline variant at the same length."""
    base = {r["length"]: r for r in rows if r["variant"] == baseline and r["status"] == "ok"}
    for r in rows:
        b = base.get(r["length"])
        ok = b is not None and r["status"] == "ok"
        r["speed_rel"] = r["steps_per_s"] / b["steps_per_s"] if ok else None
        r["memory_rel"] = (r["peak_memory_bytes"] / b["peak_memory_bytes"]
                           if ok and r["peak_memory_bytes"] and b["peak_memory_bytes"] else None)
    return rows


def layers(variants: list[str], lengths: list[int], batch_size: int = 8, dim: int = 64, heads: int = 2,
           device: torch.device | None = None, warmup: int = 3, repeat: int = 10,
           progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One attention layer, forward+backward under bf16 autocast: median ms and peak memory."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for spec in variants:
        name, hp = attention_zoo.parse_spec(spec)
        for length in lengths:
            row = {"variant": spec, "length": length, "batch_size": batch_size, "dim": dim, "heads": heads}
            layer = None
            try:
                _peak_reset(device)
                layer = attention_zoo.build(name, dim, heads, length, **hp).to(device)
                x = torch.randn(batch_size, length, dim, device=device, requires_grad=True)
                mask = torch.ones(batch_size, length, dtype=torch.bool, device=device)

                def fwd_bwd():
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                        out = layer(x, mask)
                    out.float().sum().backward()

                ms = time_fn(fwd_bwd, device, warmup, repeat)
                row.update(status="ok", fwd_bwd_ms=statistics.median(ms), peak_memory_bytes=_peak(device))
            except Exception as e:  # noqa: BLE001  (recorded in the row)
                row.update(status=_failure(e), fwd_bwd_ms=None, peak_memory_bytes=None)
            finally:
                del layer
                _peak_reset(device)
            rows.append(row)
            progress(f"{spec:<24} L={length:<6} {row['status']:<4} "
                     + (f"{row['fwd_bwd_ms']:9.3f} ms  {(row['peak_memory_bytes'] or 0) / 2**30:6.2f} GiB"
                        if row["status"] == "ok" else ""))
    return rows


def input_share(task: str, protocol: str = "skyformer", attention: str = "softmax", source: str | None = None,
                overrides: dict[str, Any] | None = None, device: torch.device | None = None,
                steps: int = 20) -> dict[str, Any]:
    """Median time of fetching a batch alone vs a whole training step that includes it."""
    from lra.data import SplitArrays, TrainSampler
    from lra.train import build_model, make_optimizer
    from tasks.cache import load

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name, hp = attention_zoo.parse_spec(attention)
    cfg = protocols.resolve(task, protocol, name, hp, overrides=overrides or {}, source=source)
    data = load(task, cfg.data, source)
    split = SplitArrays(*data.split("train"), device)
    sampler = TrainSampler(split.n, cfg.train.batch_size, 0, device)
    model = build_model(cfg, data).to(device)
    opt = make_optimizer(model, cfg.train)

    def fetch():
        return split.gather(sampler.next())

    def step():
        x, y = fetch()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    fetch_ms = statistics.median(time_fn(fetch, device, 3, steps))
    step_ms = statistics.median(time_fn(step, device, 3, steps))
    return {"task": task, "protocol": protocol, "attention": attention, "batch_size": cfg.train.batch_size,
            "seq_len": data.seq_len, "data_on_device": split.on_device, "fetch_ms": fetch_ms, "step_ms": step_ms,
            "input_share": fetch_ms / step_ms, "device": records.environment()["device"]}
