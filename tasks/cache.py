"""Prepared-data cache: one folder per task and parameter set, arrays memory-mapped.

Layout of ``$LRA_DATA/<task>-<params>-<hash>/``::

    meta.json                 source, parameters, counts, class balance, content hash
    {train,val,test}_x.npy    (N, L) or (N, docs, L) uint8/uint16 tokens, 0 = pad
    {train,val,test}_y.npy    (N,) int64 labels
    vocab.json ...            whatever the task stores beside (tokenizer, notes)

A folder is built under a temporary name and renamed into place when complete, so an
interrupted or failed preparation never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.base import SPLITS, DataError, Progress, Task, get_task

FORMAT_VERSION = 1


def data_root() -> Path:
    env = os.environ.get("LRA_DATA")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lra-bench"


def _source_key(source: str) -> str:
    if source in ("generate", "hub"):
        return source
    return "local"


def cache_name(task: Task, params: dict[str, Any], source: str) -> str:
    """Readable parameters plus a hash of everything (source path included)."""
    src = source if source in ("generate", "hub") else str(Path(source).expanduser().resolve())
    blob = json.dumps({"v": FORMAT_VERSION, "task": task.name, "params": params, "source": src}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    short = "_".join(f"{k}{v}" for k, v in sorted(params.items()) if isinstance(v, (int, float, bool, str)))
    short = "".join(c if c.isalnum() or c in "._=-" else "-" for c in short)[:120]
    return f"{task.name}-{_source_key(source)}-{short}-{digest}"


@dataclass
class Prepared:
    """A prepared cache opened for reading; arrays are memory-mapped."""

    path: Path
    meta: dict[str, Any]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.meta["counts"]:
            raise DataError(f"{self.path}: no split {name!r} (has {', '.join(self.meta['counts'])})")
        x = np.load(self.path / f"{name}_x.npy", mmap_mode="r")
        y = np.load(self.path / f"{name}_y.npy")
        return x, y

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def seq_len(self) -> int:
        return int(self.meta["seq_len"])


def subsample(x: np.ndarray, y: np.ndarray, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """At most ``size`` rows, drawn with a fixed seed, kept in file order."""
    if len(y) <= size:
        return x, y
    keep = np.sort(np.random.default_rng(seed).permutation(len(y))[:size])
    return x[keep], y[keep]


def _content_hash(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for name in sorted(splits):
        for arr in splits[name]:
            a = np.ascontiguousarray(arr)
            h.update(f"{name}{a.dtype}{a.shape}".encode())
            h.update(a.data)
    return h.hexdigest()


def _check_built(task: Task, splits: dict[str, tuple[np.ndarray, np.ndarray]], seq_len: int) -> None:
    for name, (x, y) in splits.items():
        want = (len(y), task.num_docs, seq_len) if task.num_docs > 1 else (len(y), seq_len)
        if x.shape != want:
            raise DataError(f"task {task.name}: split {name} has shape {x.shape}, expected {want}")
        if len(y) and (y.min() < 0 or y.max() >= task.num_classes):
            raise DataError(f"task {task.name}: split {name} has labels outside 0..{task.num_classes - 1}")


def prepare(
    task_name: str,
    overrides: dict[str, Any] | None = None,
    source: str | None = None,
    root: Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """Build the cache for (task, parameters, source) unless it exists; return its folder."""
    task = get_task(task_name)
    params = task.params(overrides)
    source = source or task.default_source()
    if source not in ("generate", "hub") and not Path(source).expanduser().exists():
        raise DataError(f"task {task.name}: source {source} does not exist. {task.how_to_get}")
    if source in ("generate", "hub") and source not in task.sources:
        raise DataError(f"task {task.name}: no {source!r} source. {task.how_to_get}")
    root = Path(root) if root is not None else data_root()
    final = root / cache_name(task, params, source)
    if (final / "meta.json").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{final.name}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        built = task.build(params, source, progress or Progress())
        if params.get("size"):
            built.splits = {name: subsample(x, y, params["size"]) for name, (x, y) in built.splits.items()}
        _check_built(task, built.splits, task.seq_len(params))
        counts, balance = {}, {}
        for name, (x, y) in built.splits.items():
            np.save(tmp / f"{name}_x.npy", np.ascontiguousarray(x))
            np.save(tmp / f"{name}_y.npy", np.ascontiguousarray(y, dtype=np.int64))
            counts[name] = int(len(y))
            balance[name] = np.bincount(y, minlength=task.num_classes).tolist()
        for fname, text in built.files.items():
            (tmp / fname).write_text(text)
        meta = {
            "format": FORMAT_VERSION,
            "task": task.name,
            "source": source if source in ("generate", "hub") else str(Path(source).expanduser().resolve()),
            "params": params,
            "seq_len": task.seq_len(params),
            "num_docs": task.num_docs,
            "num_classes": task.num_classes,
            "vocab_size": built.vocab_size,
            "counts": counts,
            "class_balance": balance,
            "content_sha256": _content_hash(built.splits),
            "prepare_seconds": round(time.perf_counter() - t0, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
            **({"info": built.info} if built.info else {}),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same cache first; theirs is identical.
            if not (final / "meta.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def open_prepared(path: Path) -> Prepared:
    meta_path = Path(path) / "meta.json"
    if not meta_path.exists():
        raise DataError(f"{path}: not a prepared cache (no meta.json); run `lra data prepare`")
    return Prepared(Path(path), json.loads(meta_path.read_text()))


def list_prepared(root: Path | None = None) -> list[Prepared]:
    root = Path(root) if root is not None else data_root()
    if not root.exists():
        return []
    return [open_prepared(p) for p in sorted(root.iterdir()) if (p / "meta.json").exists()]


def load(task_name: str, overrides: dict[str, Any] | None = None, source: str | None = None,
         root: Path | None = None, progress: Progress | None = None) -> Prepared:
    return open_prepared(prepare(task_name, overrides, source, root, progress))


__all__ = ["SPLITS", "Prepared", "cache_name", "data_root", "list_prepared", "load", "open_prepared", "prepare"]
