"""LRA tables from run records: variants as rows, tasks as columns, plus the average."""

from __future__ import annotations

from typing import Any

import pandas as pd

LRA_ORDER = ["listops", "text", "retrieval", "image", "pathfinder"]


def records_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per finished run: task, variant, protocol, seed, accuracies (in %)."""
    rows = [
        {
            "task": r["task"], "variant": r["variant"], "protocol": r["protocol"], "seed": r["seed"],
            "test_acc": 100 * r["test_acc"], "best_val_acc": 100 * (r["best_val_acc"] or 0.0),
            "wall_seconds": r.get("wall_seconds"), "dir": r.get("dir"),
        }
        for r in runs
        if r.get("status") == "finished" and r.get("test_acc") is not None
    ]
    return pd.DataFrame(rows, columns=["task", "variant", "protocol", "seed", "test_acc", "best_val_acc",
                                       "wall_seconds", "dir"])


def accuracy_table(frame: pd.DataFrame, order: list[str] = LRA_ORDER) -> pd.DataFrame:
    """Mean test accuracy over seeds; columns in ``order`` (tasks never run are left out),
    then ``avg`` over the five tasks (NaN when one is missing)."""
    if frame.empty:
        return pd.DataFrame(columns=["variant", *order, "avg"]).set_index("variant")
    table = frame.pivot_table(index="variant", columns="task", values="test_acc", aggfunc="mean")
    cols = [t for t in order if t in table.columns]
    table = table[cols]
    table["avg"] = table.reindex(columns=order).mean(axis=1, skipna=False)
    return table


def to_markdown(table: pd.DataFrame, digits: int = 2) -> str:
    header = ["variant", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, row in table.iterrows():
        cells = ["—" if pd.isna(v) else f"{v:.{digits}f}" for v in row]
        lines.append("| " + " | ".join([str(variant), *cells]) + " |")
    return "\n".join(lines)


def _fmt(v, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and pd.isna(v)) else format(v, spec)


def speed_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: steps/s and peak memory per variant and length, relative to softmax in brackets."""
    lengths = sorted({r["length"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    by = {(r["variant"], r["length"]): r for r in rows}
    head = ["variant", *[f"{l} steps/s (x)" for l in lengths], *[f"{l} GiB (x)" for l in lengths]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        cells = [v]
        for l in lengths:
            r = by.get((v, l), {})
            cells.append("OOM" if r.get("status") == "oom" else
                         f"{_fmt(r.get('steps_per_s'), '.2f')} ({_fmt(r.get('speed_rel'), '.2f')})")
        for l in lengths:
            r = by.get((v, l), {})
            mem = r.get("peak_memory_bytes")
            cells.append("OOM" if r.get("status") == "oom" else
                         f"{_fmt(mem / 2**30 if mem else None, '.2f')} ({_fmt(r.get('memory_rel'), '.2f')})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def layers_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: forward+backward ms and peak GiB per variant and length."""
    lengths = sorted({r["length"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    by = {(r["variant"], r["length"]): r for r in rows}
    head = ["variant", *[f"L={l} ms" for l in lengths], *[f"L={l} GiB" for l in lengths]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        cells = [v]
        for l in lengths:
            r = by.get((v, l), {})
            cells.append("OOM" if r.get("status") == "oom" else _fmt(r.get("fwd_bwd_ms"), ".3f"))
        for l in lengths:
            r = by.get((v, l), {})
            mem = r.get("peak_memory_bytes")
            cells.append("OOM" if r.get("status") == "oom" else _fmt(mem / 2**30 if mem else None, ".3f"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
