"""Checkpoints that make a killed run resumable to the exact result, and per-run locks.

A checkpoint is written at every evaluation: temporary file in the run folder, fsync,
then ``os.replace``, so a run killed at any moment (SIGKILL included) leaves either the
previous checkpoint or the new one, never a torn file. It holds everything the rest of
the run depends on: model, optimiser, schedule, sampler, the RNG states (torch CPU and
CUDA, numpy, python), the best-so-far weights and the step. Everything in it is a tensor
or a plain value, so it loads with ``torch.load(weights_only=True)``.

A run folder is locked while a process trains it (``fcntl.flock`` on ``.lock``), so two
processes (two sweeps, two shards that overlap, a sweep and an ``lra run``) never train
the same run at once. The kernel drops the lock when its holder dies, so a killed run
leaves no stale lock; the pid and host written into the file are only for people.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lra import records

CHECKPOINT, LOCK = "checkpoint.pt", ".lock"


class RunLocked(RuntimeError):
    """Another process is training this run right now."""


def rng_state() -> dict[str, Any]:
    """Every RNG a training step can touch (dropout draws from torch's global generator)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": py_version, "state": list(py_state),
                   "gauss": py_gauss},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save(path: Path, obj: dict[str, Any]) -> None:
    """Atomic: a reader (or a resume after SIGKILL) sees the old file or the new one."""
    records.write_atomic(path, lambda f: torch.save(obj, f), mode="wb")


def load(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def remove(run_dir: Path) -> None:
    (Path(run_dir) / CHECKPOINT).unlink(missing_ok=True)
    for tmp in Path(run_dir).glob(f".{CHECKPOINT}.*.tmp"):  # left by a process killed mid-save
        tmp.unlink(missing_ok=True)


class RunLock:
    """Exclusive, non-blocking lock on one run folder; ``acquire`` raises ``RunLocked``."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise RunLocked(f"{self.path.parent} is being trained by another process ({holder or 'unknown'})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} host {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            # The file stays: unlinking it would let a waiter lock an orphaned inode while a
            # third process creates and locks a fresh file of the same name.
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(run_dir: Path) -> bool:
    """Whether some process holds the run's lock now (a snapshot, for the plan table)."""
    path = Path(run_dir) / LOCK
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


__all__ = ["CHECKPOINT", "LOCK", "RunLock", "RunLocked", "is_locked", "load", "remove", "rng_state", "save",
           "set_rng_state"]
