"""One training loop for every task: train, evaluate on val every N steps, keep the best
weights, test them once. Reads top to bottom.

Every evaluation also writes a checkpoint (lra/checkpoint.py), so a run killed at any
moment resumes to the result an uninterrupted run gives; a non-finite loss stops the run
as ``diverged``; under torchrun the same loop runs DDP (lra/distributed.py).
"""

from __future__ import annotations

import copy
import json
import math
import random
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lra import checkpoint, distributed, graphs, records
from lra.checkpoint import RunLocked
from lra.config import ConfigError, RunConfig, TrainConfig, check
from lra.data import SplitArrays, TrainSampler, eval_batches
from lra.model import Classifier, count_parameters
from tasks import get_task
from tasks.base import Progress
from tasks.cache import Prepared, load


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def keeps_best(t: TrainConfig, step: int, acc: float, best: dict[str, Any]) -> bool:
    """Whether the weights evaluated at ``step`` (validation ``acc``) become the kept best.
    ``best["acc"]`` is the kept one's accuracy, ``best["seen"]`` the best of every evaluation
    so far (``train.best_rule``)."""
    if t.best_rule == "overall":  # strictly past the threshold and above every earlier evaluation
        return step > t.best_after * t.steps and acc > best.get("seen", -1.0)
    return step >= t.best_after * t.steps and acc > best["acc"]


def make_optimizer(model: nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.adam_eps,
                             weight_decay=t.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, t: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if t.schedule == "onecycle":
        # As the Skyformer code: OneCycleLR with its defaults (div 25, final div 1e4, beta1 cycled
        # 0.95 -> 0.85 -> 0.95) and linear annealing; warm-up fraction = warmup / steps.
        # A one-step warm-up is no warm-up (as in the schedules below: full factor at the
        # first step), and OneCycleLR divides by zero on a warm-up phase ending at step 0.
        warmup = t.warmup if t.warmup > 1 else 0
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.lr, total_steps=t.steps,
                                                   pct_start=warmup / t.steps, anneal_strategy="linear")
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
             autocast: Any, rank: int = 0, world: int = 1) -> dict[str, float]:
    """Loss and accuracy over the first ``max_batches`` batches (all when 0). Under DDP each
    rank takes every ``world``-th batch and the sums are all-reduced."""
    model.eval()
    loss_sum = torch.zeros((), device=split.device)
    correct = torch.zeros((), device=split.device, dtype=torch.long)
    count = 0
    for i, idx in enumerate(eval_batches(split.n, batch_size, max_batches, split.device)):
        if i % world != rank:
            continue
        x, y = split.gather(idx)
        with autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(-1) == y).sum()
        count += len(idx)
    model.train()
    if world > 1:
        totals = distributed.all_reduce_(torch.stack([loss_sum.double(), correct.double(),
                                                      torch.tensor(float(count), device=split.device,
                                                                   dtype=torch.float64)]))
        loss, right, count = totals.tolist()
        return {"loss": loss / max(count, 1), "acc": right / max(count, 1), "n": int(count)}
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
          log=print, *, resume: bool = True, keep_checkpoint: bool = False,
          skip_finished: bool = False, runs_per_device: int = 1) -> dict[str, Any]:
    """Run ``cfg`` and write its record under ``out_root``; returns the result dict.

    Resumes from the run's checkpoint when there is one (``resume``); a resumed run ends
    with the result an uninterrupted one gives (exactly, on CPU). The checkpoint is
    deleted when the run ends unless ``keep_checkpoint``. Under torchrun (after
    ``distributed.init_from_env``) every rank calls this and rank 0 writes the record.
    Raises ``RunLocked`` when another process is training the same run; any other
    exception is recorded as ``status: "failed: ..."`` in result.json, then re-raised.
    With ``skip_finished`` (sweep workers), a run found finished once its lock is held
    (another process finished it since the sweep planned) returns its record with
    ``skipped: True`` instead of training again.

    ``runs_per_device``: how many runs share this run's device(s) at once (a sweep's
    ``--jobs-per-gpu``); the record's ``device_seconds`` counts this run's wall time
    divided by it, summed over resumed segments, so packed runs are not counted as
    holding a whole GPU each.
    """
    if runs_per_device < 1:
        raise ConfigError(f"runs_per_device must be >= 1, got {runs_per_device}")
    check(cfg)
    dist = distributed.info()
    if not dist.main:
        log = _silent
    device = device or pick_device()
    if cfg.train.batch_size % dist.world:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is not divisible by the {dist.world} processes")
    bar_factory = tqdm_factory() if progress and dist.main else None
    data = load(cfg.task, cfg.data, cfg.source, progress=Progress(bar_factory))
    run_dir = Path(out_root) / records.run_dir_name(cfg.task, cfg.variant_label(), cfg.protocol, cfg.seed, cfg.hash())
    lock = checkpoint.RunLock(run_dir)
    refused: RunLocked | None = None
    if dist.main:
        try:
            lock.acquire()
        except RunLocked as e:
            refused = e
    if not distributed.agree(refused is None, device):
        raise refused or RunLocked(f"{run_dir} is being trained by another process")
    try:
        if skip_finished:
            done = _finished_record(run_dir, cfg)
            if distributed.agree(done is not None, device):
                return {**done, "skipped": True, "dir": str(run_dir)}
        return _train(cfg, run_dir, data, device, dist, bar_factory, log, resume, keep_checkpoint, runs_per_device)
    except Exception as e:
        if dist.main:
            _record_failure(cfg, run_dir, e)
        raise
    finally:
        lock.release()


def _train(cfg: RunConfig, run_dir: Path, data: Prepared, device: torch.device, dist: distributed.DistInfo,
           bar_factory, log, resume: bool, keep_checkpoint: bool, runs_per_device: int = 1) -> dict[str, Any]:
    t = cfg.train
    ckpt_path = run_dir / checkpoint.CHECKPOINT
    try:
        ckpt = checkpoint.load(ckpt_path) if resume else None
    except Exception as e:  # written atomically, so this is another torch version or a foreign file
        log(f"ignoring unreadable {ckpt_path} ({type(e).__name__}: {e}); starting over")
        ckpt = None
    if ckpt is not None and ckpt.get("config_hash") != cfg.hash():
        log(f"ignoring {ckpt_path}: it belongs to config {ckpt.get('config_hash')}")
        ckpt = None
    distributed.barrier()  # every rank has read the checkpoint before rank 0 touches the folder
    if dist.main:
        resolved = {**cfg.to_dict(), "data_resolved": data.meta["params"], "data_dir": str(data.path),
                    "config_hash": cfg.hash()}
        records.write_json_atomic(run_dir / records.CONFIG, resolved)
        (run_dir / records.RESULT).unlink(missing_ok=True)  # result.json exists only once the run has ended
        if ckpt is None:
            checkpoint.remove(run_dir)
            (run_dir / records.METRICS).unlink(missing_ok=True)
        else:
            # Rows written after the checkpoint (killed between the two writes) are redone.
            _truncate_metrics(run_dir / records.METRICS, ckpt["step"])

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    splits = {name: SplitArrays(*data.split(name), device) for name in ("train", "val", "test")}
    model = build_model(cfg, data).to(device)
    opt = make_optimizer(model, t)
    sched = make_schedule(opt, t)
    # Every rank draws the same global batch from the same permutation and trains on its slice.
    sampler = TrainSampler(splits["train"].n, t.batch_size, cfg.seed, device)
    local_batch = t.batch_size // dist.world
    lo = dist.rank * local_batch
    net: nn.Module = model
    if dist.world > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if dist.rank:
            torch.manual_seed(cfg.seed + 7919 * dist.rank)  # each rank its own dropout masks
    use_amp = t.amp and device.type == "cuda"

    def autocast(**kw):
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp, **kw)

    best: dict[str, Any] = {"acc": -1.0, "step": 0, "state": None}
    start_step, elapsed_before, device_before, resumed_from = 0, 0.0, 0.0, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        sampler.load_state_dict(ckpt["sampler"])
        best = ckpt["best"]
        start_step, elapsed_before = ckpt["step"], ckpt["train_seconds"]
        device_before = ckpt.get("device_seconds", elapsed_before)  # older checkpoints: unshared
        resumed_from = [*ckpt["resumed_from"], start_step]
        rngs = ckpt["rng"]
        checkpoint.set_rng_state(rngs[dist.rank] if len(rngs) == dist.world else rngs[0])
        if len(rngs) != dist.world and dist.rank:  # resumed on another world size: fresh per-rank streams
            torch.manual_seed(cfg.seed + 7919 * dist.rank + start_step)
    del ckpt

    graphed: graphs.GraphedStep | None = None
    if t.cuda_graph and device.type == "cuda" and dist.world == 1 and start_step < t.steps:
        # Capture on a batch of the right shape; the warm-up steps' gradients are discarded.
        x0, y0 = splits["train"].gather(torch.arange(t.batch_size, device=device) % splits["train"].n)
        net.train()
        graphed = graphs.try_capture(net, x0, y0, autocast, log)
        del x0, y0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n_params = count_parameters(model)
    log(f"{cfg.task} | {cfg.variant_label()} | {cfg.protocol} | seed {cfg.seed} | {n_params:,} parameters | "
        f"{device}{f' x{dist.world}' if dist.world > 1 else ''} | train {splits['train'].n:,} "
        f"val {splits['val'].n:,} test {splits['test'].n:,}"
        + (" | cuda graph" if graphed is not None else "")
        + (f" | resuming at step {start_step}" if start_step else ""))

    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.zeros((), device=device, dtype=torch.long)  # first step with a non-finite loss
    check_every = min(t.eval_every, 50)  # a host sync this often stops a diverged run early
    seen, status = 0, "finished"
    t_start = time.perf_counter() - elapsed_before

    def device_seconds(now: float) -> float:  # this segment's wall time split among the runs sharing the device
        return device_before + (now - t_start - elapsed_before) / runs_per_device

    t_last = time.perf_counter()
    bar = bar_factory(total=t.steps, initial=start_step, desc="train", unit="step") if bar_factory else None
    net.train()
    for step in range(start_step + 1, t.steps + 1):
        idx = sampler.next()  # (B,) global batch
        if dist.world > 1:
            idx = idx[lo : lo + local_batch]
        x, y = splits["train"].gather(idx)
        if graphed is not None:
            loss, logits = graphed(x, y)  # overwrites every .grad: no zero_grad
        else:
            with autocast():
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        if t.clip_value > 0:
            nn.utils.clip_grad_value_(model.parameters(), t.clip_value)
        if t.clip_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), t.clip_norm)
        lr = opt.param_groups[0]["lr"]  # the rate this step used (the schedule moves on below)
        opt.step()
        sched.step()
        loss = loss.detach()
        first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss), step, first_bad)
        loss_sum += loss * len(y)
        correct += (logits.detach().argmax(-1) == y).sum()
        seen += len(y)
        if bar is not None:
            bar.update(1)

        is_eval = step % t.eval_every == 0 or step == t.steps
        if is_eval or step % check_every == 0:
            bad = int(distributed.all_reduce_(first_bad.clone(), "max").item())
            if bad:
                status = f"diverged: non-finite training loss at step {bad}"
                break
        if not is_eval:
            continue
        totals = distributed.all_reduce_(torch.stack([loss_sum.double(), correct.double(),
                                                      torch.tensor(float(seen), device=device, dtype=torch.float64)]))
        loss_total, right, count = totals.tolist()
        train_loss = loss_total / count
        val = evaluate(model, splits["val"], t.batch_size, t.eval_batches, autocast, dist.rank, dist.world)
        if not math.isfinite(train_loss) or not math.isfinite(val["loss"]):
            which = "training" if not math.isfinite(train_loss) else "validation"
            status = f"diverged: non-finite {which} loss at step {step}"
            break
        now = time.perf_counter()
        row = {"step": step, "train_loss": train_loss, "train_acc": right / count,
               "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr,
               "examples_per_s": count / (now - t_last), "elapsed_s": now - t_start}
        if dist.main:
            records.append_jsonl(run_dir / records.METRICS, row)
        if keeps_best(t, step, val["acc"], best):
            best = {"acc": val["acc"], "step": step, "state": _cpu_copy(model.state_dict())}
        best["seen"] = max(best.get("seen", -1.0), val["acc"])
        if bar is not None:
            bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val['acc']:.3f}")
        else:
            log(f"step {step}: train loss {train_loss:.4f} val acc {val['acc']:.4f}")
        loss_sum.zero_(), correct.zero_()
        seen = 0
        # After the metrics row: a kill between the two writes leaves a row the resume truncates.
        rngs = distributed.gather_objects(checkpoint.rng_state())
        if dist.main:
            checkpoint.save(ckpt_path, {
                "format": 1, "config_hash": cfg.hash(), "step": step, "world": dist.world,
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "sampler": sampler.state_dict(), "rng": rngs, "best": best,
                "train_seconds": (now := time.perf_counter()) - t_start, "device_seconds": device_seconds(now),
                "resumed_from": resumed_from,
            })
        t_last = time.perf_counter()
    if bar is not None:
        bar.close()
    if status != "finished":
        log(status)
    train_seconds = time.perf_counter() - t_start

    if best["state"] is not None:
        model.load_state_dict(best["state"])
    test = evaluate(model, splits["test"], t.batch_size, 0, autocast, dist.rank, dist.world) \
        if status == "finished" else None
    test_y = data.split("test")[1]
    end = time.perf_counter()
    result = {
        **run_identity(cfg), "status": status,
        "best_val_acc": best["acc"] if best["state"] is not None else None,
        "best_step": best["step"] if best["state"] is not None else None,  # None: the final model was tested
        "test_acc": test["acc"] if test else None, "test_loss": test["loss"] if test else None,
        "test_majority_rate": float(np.bincount(test_y).max() / len(test_y)),
        "steps": t.steps, "train_seconds": round(train_seconds, 3),
        "wall_seconds": round(end - t_start, 3), "resumed_from": resumed_from,
        "runs_per_device": runs_per_device, "device_seconds": round(device_seconds(end), 3),
        "world_size": dist.world, "cuda_graph": graphed is not None, "parameters": n_params,
        **peak_memory_bytes(device), "env": records.environment(),
    }
    if dist.main:
        records.write_json_atomic(run_dir / records.RESULT, result)
        if not keep_checkpoint:
            checkpoint.remove(run_dir)
    result["dir"] = str(run_dir)
    return result


def _finished_record(run_dir: Path, cfg: RunConfig) -> dict[str, Any] | None:
    try:
        result = json.loads((run_dir / records.RESULT).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if result.get("status") == "finished" and result.get("config_hash") == cfg.hash() else None


def _cpu_copy(state: dict[str, Any]) -> dict[str, Any]:
    # Modules may keep non-tensor extra state (BigBird's pattern seed) in their state dict.
    return {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in state.items()}


def _silent(*_: Any) -> None:
    pass


def run_identity(cfg: RunConfig) -> dict[str, Any]:
    """The fields that name a run in its result.json, whatever its outcome."""
    return {"task": cfg.task, "variant": cfg.variant_label(), "attention": cfg.model.attention,
            "attention_hp": cfg.model.attention_hp, "protocol": cfg.protocol, "seed": cfg.seed,
            "config_hash": cfg.hash()}


def _record_failure(cfg: RunConfig, run_dir: Path, exc: BaseException) -> None:
    """One line in result.json (the sweep goes on), the traceback beside it."""
    line = (f"{type(exc).__name__}: {exc}".strip().splitlines() or ["?"])[0][:300]
    (run_dir / "error.txt").write_text("".join(traceback.format_exception(exc)))
    records.write_json_atomic(run_dir / records.RESULT, {**run_identity(cfg), "status": f"failed: {line}",
                                                         "env": records.environment()})


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows up to ``step`` (atomically: a kill here leaves the old file)."""
    if not path.exists():
        return
    rows = [r for r in records.read_jsonl(path) if r.get("step", 0) <= step]
    records.write_text_atomic(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))


def tqdm_factory():
    from tqdm.auto import tqdm

    def factory(**kw):
        return tqdm(dynamic_ncols=True, mininterval=0.5, **kw)

    return factory


__all__ = ["RunLocked", "build_model", "evaluate", "pick_device", "run_identity", "train"]
