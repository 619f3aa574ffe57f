"""One run on several devices: DistributedDataParallel under torchrun.

The training loop asks ``info()`` for its rank and world size; with one process every
helper here is a no-op, so the single-process path is the same code. The global batch
is ``train.batch_size`` whatever the world size: every rank draws the same global
permutation and trains on its slice, and DDP averages the gradients, so a step is the
single-process step up to float summation order (docs/distributed.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist

# NVLink multicast (NVLS) can take a shared host's GPUs out of service; it stays off in
# every process we start, whatever the caller's environment says.
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def info() -> DistInfo:
    if tdist.is_available() and tdist.is_initialized():
        return DistInfo(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def safe_env(env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if env is None else env)
    env.update(SAFE_ENV)
    return env


def init_from_env(device: str = "auto") -> tuple[DistInfo, torch.device | None]:
    """Join the process group torchrun describes (WORLD_SIZE > 1); returns the rank's device
    (``cuda:LOCAL_RANK`` on GPUs, CPU otherwise), or None when not distributed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), None
    os.environ.update(SAFE_ENV)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        tdist.init_process_group("nccl", device_id=dev)
    else:
        dev = torch.device("cpu")
        tdist.init_process_group("gloo")
    return info(), dev


def shutdown() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In place across ranks (identity with one process)."""
    if info().world > 1:
        tdist.all_reduce(t, op={"sum": tdist.ReduceOp.SUM, "max": tdist.ReduceOp.MAX,
                                "min": tdist.ReduceOp.MIN}[op])
    return t


def agree(flag: bool, device: torch.device) -> bool:
    """True only if every rank says True."""
    t = torch.tensor([int(flag)], device=device)
    return bool(all_reduce_(t, "min").item())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if info().world == 1:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    world = info().world
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    tdist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if info().world > 1:
        tdist.barrier()


def launch(cfg_dict: dict[str, Any], out: Path, devices: int, device: str = "auto", resume: bool = True,
           keep_checkpoint: bool = False, progress: bool = True, threads: int | None = None) -> int:
    """Run one config on ``devices`` processes through torchrun (one per GPU, or gloo
    processes on CPU); blocks and returns torchrun's exit status. Rank 0 writes the record."""
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda and devices > torch.cuda.device_count():
        from lra.config import ConfigError

        raise ConfigError(f"--devices {devices} but only {torch.cuda.device_count()} GPU(s) are visible")
    if threads is None:
        threads = max(1, len(os.sched_getaffinity(0)) // devices)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
           "-m", "lra.worker", "--out", str(out), "--device", "cuda" if use_cuda else "cpu",
           "--threads", str(threads), "--resume" if resume else "--no-resume",
           *(["--keep-checkpoint"] if keep_checkpoint else []), *(["--progress"] if progress else []),
           json.dumps(cfg_dict)]
    env = safe_env()
    env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.call(cmd, env=env)


__all__ = ["DistInfo", "SAFE_ENV", "agree", "all_reduce_", "barrier", "broadcast_object", "gather_objects",
           "info", "init_from_env", "launch", "safe_env", "shutdown"]
