"""Run records: a directory per run with config.json, metrics.jsonl and result.json.

Records are data: tables and plots only read them. Every file is written atomically
(temporary file in the same folder, then ``os.replace``), so a run killed mid-write
never leaves a partial ``result.json``; ``metrics.jsonl`` is appended line by line and
a torn last line is skipped on reading.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import tempfile
from pathlib import Path
from typing import Any

RESULT, CONFIG, METRICS = "result.json", "config.json", "metrics.jsonl"


def write_atomic(path: Path, write, mode: str = "w") -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it into place:
    a reader (or a resume after SIGKILL) sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text))


def append_jsonl(path: Path, obj: Any) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
        f.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn final line from a killed run
    return rows


def run_dir_name(task: str, variant_label: str, protocol: str, seed: int, config_hash: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in variant_label.replace(":", "-").replace("=", ""))
    return Path(task) / safe / f"{protocol}-seed{seed}-{config_hash}"


def environment() -> dict[str, Any]:
    """Machine and library versions recorded with every result."""
    import numpy
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    return env


# A run whose smoothed training loss ends this far (nats) above its lowest got worse late in
# training (diverged or collapsed), even when its best-validation checkpoint looks fine.
LOSS_RISE_UNSTABLE = 0.1


def train_loss_rise(metrics: list[dict[str, Any]]) -> float | None:
    """How far the training loss ends above its lowest, both as moving averages over
    ``max(5, n // 20)`` consecutive logs (n logged steps; the last log of a step counts,
    so a resumed run's repeated steps count once). None with fewer logs than one window.
    A healthy run ends near 0 (it still improves or has flattened); see
    ``LOSS_RISE_UNSTABLE``."""
    by_step = {m["step"]: m["train_loss"] for m in metrics
               if isinstance(m.get("step"), int) and isinstance(m.get("train_loss"), (int, float))}
    losses = [by_step[s] for s in sorted(by_step)]
    w = max(5, len(losses) // 20)
    if len(losses) < w:
        return None
    smooth = [sum(losses[i:i + w]) / w for i in range(len(losses) - w + 1)]
    return smooth[-1] - min(smooth)


def load_runs(*roots: Path) -> list[dict[str, Any]]:
    """Every finished run under the ``roots``: result.json merged with its config, plus
    ``train_loss_rise`` from its metrics (None when they are missing or too short)."""
    runs = []
    for root in roots:
        for result_path in sorted(Path(root).rglob(RESULT)):
            run = result_path.parent
            try:
                result = json.loads(result_path.read_text())
                config = json.loads((run / CONFIG).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            rise = train_loss_rise(read_jsonl(run / METRICS))
            runs.append({**result, "config": config, "dir": str(run), "train_loss_rise": rise})
    return runs
