"""One training loop for every task: train, evaluate on val every N steps, keep the best
weights, test them once. Reads top to bottom."""

from __future__ import annotations

import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lra import records
from lra.config import RunConfig, TrainConfig, check
from lra.data import SplitArrays, TrainSampler, eval_batches
from lra.model import Classifier, count_parameters
from tasks import get_task
from tasks.base import Progress
from tasks.cache import Prepared, load


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(model: nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.adam_eps,
                             weight_decay=t.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, t: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if t.schedule == "onecycle":
        # As the Skyformer code: OneCycleLR with its defaults (div 25, final div 1e4, beta1 cycled
        # 0.95 -> 0.85 -> 0.95) and linear annealing; warm-up fraction = warmup / steps.
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.lr, total_steps=t.steps,
                                                   pct_start=t.warmup / t.steps, anneal_strategy="linear")
    warm = max(t.warmup, 1)

    def factor(step: int) -> float:
        s = step + 1
        if t.schedule == "rsqrt":  # LRA: constant * linear_warmup * rsqrt_decay
            return min(1.0, s / warm) / math.sqrt(max(s, warm))
        if t.schedule == "cosine":  # LRA: constant * linear_warmup * cosine_decay
            return min(1.0, s / warm) * 0.5 * (1 + math.cos(math.pi * min(s, t.steps) / t.steps))
        return min(1.0, s / warm) if t.warmup else 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.no_grad()
def evaluate(model: nn.Module, split: SplitArrays, batch_size: int, max_batches: int,
             autocast: Any) -> dict[str, float]:
    model.eval()
    loss_sum = torch.zeros((), device=split.device)
    correct = torch.zeros((), device=split.device, dtype=torch.long)
    count = 0
    for idx in eval_batches(split.n, batch_size, max_batches, split.device):
        x, y = split.gather(idx)
        with autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(-1) == y).sum()
        count += len(idx)
    model.train()
    return {"loss": loss_sum.item() / max(count, 1), "acc": correct.item() / max(count, 1), "n": count}


def peak_memory_bytes(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "peak_memory_kind": "cuda_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"peak_memory_bytes": rss, "peak_memory_kind": "process_max_rss"}


def build_model(cfg: RunConfig, data: Prepared) -> Classifier:
    task = get_task(cfg.task)
    mask_zero = task.mask_zero_default if cfg.mask_zero is None else cfg.mask_zero
    return Classifier(cfg.model, data.vocab_size, data.seq_len, task.num_classes, task.num_docs, mask_zero)


def train(cfg: RunConfig, out_root: Path, device: torch.device | None = None, progress: bool = True,
          log=print) -> dict[str, Any]:
    """Run ``cfg`` and write its record under ``out_root``; returns the result dict."""
    check(cfg)
    device = device or pick_device()
    t = cfg.train
    bar_factory = tqdm_factory() if progress else None
    data = load(cfg.task, cfg.data, cfg.source, progress=Progress(bar_factory))
    run_dir = Path(out_root) / records.run_dir_name(cfg.task, cfg.variant_label(), cfg.protocol, cfg.seed, cfg.hash())
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = {**cfg.to_dict(), "data_resolved": data.meta["params"], "data_dir": str(data.path),
                "config_hash": cfg.hash()}
    records.write_json_atomic(run_dir / records.CONFIG, resolved)
    (run_dir / records.METRICS).unlink(missing_ok=True)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    splits = {name: SplitArrays(*data.split(name), device) for name in ("train", "val", "test")}
    model = build_model(cfg, data).to(device)
    opt = make_optimizer(model, t)
    sched = make_schedule(opt, t)
    sampler = TrainSampler(splits["train"].n, t.batch_size, cfg.seed, device)
    use_amp = t.amp and device.type == "cuda"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n_params = count_parameters(model)
    log(f"{cfg.task} | {cfg.variant_label()} | {cfg.protocol} | seed {cfg.seed} | {n_params:,} parameters | "
        f"{device} | train {splits['train'].n:,} val {splits['val'].n:,} test {splits['test'].n:,}")

    best = {"acc": -1.0, "step": 0, "state": None}
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, status = 0, "finished"
    t_start = t_last = time.perf_counter()
    bar = bar_factory(total=t.steps, desc="train", unit="step") if bar_factory else None
    model.train()
    for step in range(1, t.steps + 1):
        x, y = splits["train"].gather(sampler.next())
        with autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if t.clip_value > 0:
            nn.utils.clip_grad_value_(model.parameters(), t.clip_value)
        if t.clip_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), t.clip_norm)
        opt.step()
        sched.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(-1) == y).sum()
        seen += len(y)
        if bar is not None:
            bar.update(1)

        if step % t.eval_every == 0 or step == t.steps:
            train_loss = loss_sum.item() / seen
            if not math.isfinite(train_loss):
                status = f"diverged: non-finite training loss at step {step}"
                log(status)
                break
            val = evaluate(model, splits["val"], t.batch_size, t.eval_batches, autocast)
            now = time.perf_counter()
            row = {"step": step, "train_loss": train_loss, "train_acc": correct.item() / seen,
                   "val_loss": val["loss"], "val_acc": val["acc"], "lr": sched.get_last_lr()[0],
                   "examples_per_s": seen / (now - t_last), "elapsed_s": now - t_start}
            records.append_jsonl(run_dir / records.METRICS, row)
            if step >= t.best_after * t.steps and val["acc"] > best["acc"]:
                best = {"acc": val["acc"], "step": step,
                        "state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val['acc']:.3f}")
            else:
                log(f"step {step}: train loss {train_loss:.4f} val acc {val['acc']:.4f}")
            loss_sum.zero_(), correct.zero_()
            seen, t_last = 0, time.perf_counter()
    if bar is not None:
        bar.close()
    train_seconds = time.perf_counter() - t_start

    if best["state"] is not None:
        model.load_state_dict(best["state"])
    test = evaluate(model, splits["test"], t.batch_size, 0, autocast) if status == "finished" else None
    test_y = data.split("test")[1]
    result = {
        "task": cfg.task, "variant": cfg.variant_label(), "attention": cfg.model.attention,
        "attention_hp": cfg.model.attention_hp, "protocol": cfg.protocol, "seed": cfg.seed,
        "config_hash": cfg.hash(), "status": status,
        "best_val_acc": best["acc"] if best["state"] is not None else None, "best_step": best["step"],
        "test_acc": test["acc"] if test else None, "test_loss": test["loss"] if test else None,
        "test_majority_rate": float(np.bincount(test_y).max() / len(test_y)),
        "steps": t.steps, "train_seconds": round(train_seconds, 3),
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "parameters": n_params, **peak_memory_bytes(device), "env": records.environment(),
    }
    records.write_json_atomic(run_dir / records.RESULT, result)
    result["dir"] = str(run_dir)
    return result


def tqdm_factory():
    from tqdm.auto import tqdm

    def factory(**kw):
        return tqdm(dynamic_ncols=True, mininterval=0.5, **kw)

    return factory


__all__ = ["build_model", "evaluate", "pick_device", "train"]
