"""LRA tables from run records: variants as rows, tasks as columns, plus the average.

``render_table`` is the entry point of ``lra table``: it aggregates finished runs over
seeds (mean, sample std, number of seeds), orders the tasks as the LRA paper or the
PolaFormer README do, marks averages that miss a task, sets the best value of every
column in bold, optionally adds a published table (``compare``) with ours-minus-published
deltas, and writes markdown, booktabs LaTeX or CSV. The speed and layer benchmark
tables (``speed_table``, ``layers_table``) live here too.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd

from lra.records import LOSS_RISE_UNSTABLE
from results import published

LRA_ORDER = ["listops", "text", "retrieval", "image", "pathfinder"]
POLAFORMER_ORDER = ["text", "listops", "retrieval", "pathfinder", "image"]
ORDERS = {"lra": LRA_ORDER, "polaformer": POLAFORMER_ORDER}
FORMATS = ("markdown", "latex", "csv")
TASK_TITLES = {"listops": "ListOps", "text": "Text", "retrieval": "Retrieval", "image": "Image",
               "pathfinder": "Pathfinder", "avg": "Avg"}
# The reference implementations first, then alphabetical.
_FIRST = ("softmax", "softmax_naive")


def _spelling(value: Any) -> Any:
    """One spelling of an attention hyperparameter's value: "0.1" as given on the command line
    and 0.1 as a protocol default are one setting ("3" and 3, "true" and True likewise)."""
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    try:
        number = float(text)
    except ValueError:
        return str(value)
    return number if math.isfinite(number) else str(value)


def _setting(config: dict[str, Any] | None) -> str:
    """Fingerprint of a run's configuration without its seed: runs sharing it differ only
    by seed, so averaging them is averaging over seeds."""
    if not config:
        return ""
    cfg = {k: v for k, v in config.items() if k not in ("seed", "config_hash", "data_dir", "data")}
    # data_resolved holds the data parameters typed; "data" may hold the --set strings
    cfg["data"] = config.get("data_resolved", config.get("data"))
    model = cfg.get("model")
    if isinstance(model, dict) and isinstance(model.get("attention_hp"), dict):
        cfg["model"] = {**model, "attention_hp": {k: _spelling(v) for k, v in model["attention_hp"].items()}}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


def records_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per finished run: task, variant, protocol, seed, accuracies (in %), times.

    ``setting`` identifies the configuration apart from the seed; ``world_size`` is 1
    unless a record says otherwise (for the compute time of multi-GPU runs);
    ``device_seconds`` is the run's share of its device's time (its wall time divided by
    ``runs_per_device``, the runs packed on the device at once; older records: the wall time);
    ``train_loss_rise`` is ``lra.records.train_loss_rise`` (None when unknown).
    """
    columns = ["task", "variant", "protocol", "seed", "test_acc", "best_val_acc", "wall_seconds",
               "train_seconds", "device_seconds", "world_size", "config_hash", "setting", "dir", "train_loss_rise",
               "final_model"]
    rows = [
        {
            "task": r["task"], "variant": r["variant"], "protocol": r["protocol"], "seed": r["seed"],
            "test_acc": 100 * r["test_acc"], "best_val_acc": 100 * (r["best_val_acc"] or 0.0),
            "wall_seconds": r.get("wall_seconds"), "train_seconds": r.get("train_seconds"),
            "device_seconds": r.get("device_seconds", r.get("wall_seconds")),
            "world_size": int(r.get("world_size") or 1), "config_hash": r.get("config_hash"),
            "setting": _setting(r.get("config")), "dir": r.get("dir"),
            "train_loss_rise": r.get("train_loss_rise"),
            # no checkpoint kept (train.best_rule=overall, no later evaluation beat an early peak)
            "final_model": r.get("best_step") is None,
        }
        for r in runs
        if r.get("status") == "finished" and r.get("test_acc") is not None
    ]
    return pd.DataFrame(rows, columns=columns)


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


def run_times(frame: pd.DataFrame, by_task: bool = False) -> pd.DataFrame:
    """Per table row (variant, protocol) or per (variant, protocol, task): the number of
    runs, the mean wall-clock seconds per run, the compute seconds (sum over the runs of
    their device seconds times world size: GPU time for GPU runs, where a run packed with
    k-1 others on a GPU counts a k-th of its wall time) and the number of such shared runs."""
    keys = ["variant", "protocol", *(["task"] if by_task else [])]
    if frame.empty:
        return pd.DataFrame(columns=[*keys, "runs", "wall_seconds_mean", "compute_seconds", "shared_runs"]
                            ).set_index(keys)
    device = frame.device_seconds.fillna(frame.wall_seconds)
    # shared for any part of it (a run resumed unpacked keeps its packed share)
    f = frame.assign(compute=device * frame.world_size, shared=device < 0.999 * frame.wall_seconds)
    return f.groupby(keys, sort=False).agg(runs=("wall_seconds", "size"), wall_seconds_mean=("wall_seconds", "mean"),
                                           compute_seconds=("compute", "sum"), shared_runs=("shared", "sum"))


@dataclass
class Cell:
    """One task of one row: a published value (``n`` None) or the mean over seeds."""

    mean: float
    std: float | None = None  # sample std (ddof=1); None for one seed or a published value
    n: int | None = None  # seeds
    mixed: bool = False  # the runs differ in configuration beyond the seed
    unstable: bool = False  # a run's training loss ended well above its lowest (LOSS_RISE_UNSTABLE)
    final: bool = False  # a run tested its final model: no checkpoint was kept (train.best_rule=overall)


@dataclass
class Row:
    variant: str
    protocol: str
    source: str  # "ours" or a published source name
    model: str = ""  # the source's model name
    cells: dict[str, Cell] = field(default_factory=dict)
    avg: float | None = None
    avg_tasks: int = 0  # number of tasks behind avg
    avg_complete: bool = False  # avg is over all five LRA tasks
    delta: dict[str, float | None] = field(default_factory=dict)  # ours minus published, per task and "avg"
    matched: str | None = None  # the published variant the deltas are taken against
    wall_seconds_mean: float | None = None
    compute_seconds: float | None = None
    runs: int = 0
    shared_runs: int = 0  # runs packed with others on one GPU (compute counts their share)


@dataclass
class Table:
    tasks: list[str]
    rows: list[Row]
    compare: str | None = None
    times: bool = False
    show_protocol: bool = False
    notes: list[str] = field(default_factory=list)  # plain text; each renderer escapes its own
    best: dict[str, float] = field(default_factory=dict)  # column -> best value (rounded as shown)


def _matches(label: str, selectors: Iterable[str]) -> bool:
    """``polarity`` selects every ``polarity:...`` label; a full label selects itself."""
    return any(label == s or label.startswith(s + ":") for s in selectors)


def _variant_key(label: str) -> tuple:
    name = label.partition(":")[0]
    return (_FIRST.index(name) if name in _FIRST else len(_FIRST), name, label)


def build_table(runs: list[dict[str, Any]], *, order: str = "lra", compare: str | None = None,
                tasks: Iterable[str] | None = None, variants: Iterable[str] | None = None,
                protocol: str | None = None, times: bool = False, digits: int = 2) -> Table:
    """The table as data (what ``render_table`` writes): see ``render_table``."""
    if order not in ORDERS:
        raise ValueError(f"unknown task order {order!r}; valid: {', '.join(ORDERS)}")
    if compare is not None and compare not in published.COMPARE:
        raise ValueError(f"unknown published table {compare!r}; valid: {', '.join(published.COMPARE)}")
    selected = list(ORDERS[order])
    if tasks:
        tasks = list(tasks)
        unknown = [t for t in tasks if t not in LRA_ORDER]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; valid: {', '.join(LRA_ORDER)}")
        selected = [t for t in selected if t in tasks]
    variants = list(variants) if variants else None

    frame = records_frame(runs)
    # the same config and seed found twice (record folders merged from several machines) is one run
    hashed = frame.config_hash.notna()
    frame = pd.concat([frame[hashed].drop_duplicates("config_hash", keep="last"), frame[~hashed]])
    if protocol:
        frame = frame[frame.protocol == protocol]
    if variants:
        frame = frame[frame.variant.map(lambda v: _matches(v, variants))]
    frame = frame[frame.task.isin(selected)]
    skipped = [r for r in runs if r.get("status") != "finished"
               and (not protocol or r.get("protocol") == protocol)
               and (not variants or _matches(str(r.get("variant")), variants)) and r.get("task") in selected]

    pub = published.load(compare) if compare else None
    if pub is not None and variants:
        pub = pub[pub.variant.map(lambda v: _matches(v, variants))]
    shown = set(frame.task)
    if pub is not None:
        shown |= {t for t in selected if t in pub.columns}
    columns = [t for t in selected if t in shown] if not tasks else selected

    rows: list[Row] = []
    grouped = frame.groupby(["variant", "protocol"], sort=False)
    times_by_row = run_times(frame) if times else None
    for (variant, proto) in sorted(grouped.groups, key=lambda k: (_variant_key(k[0]), k[1])):
        g = grouped.get_group((variant, proto))
        row = Row(variant=variant, protocol=proto, source="ours")
        for task, runs_t in g.groupby("task", sort=False):
            kept = runs_t.drop_duplicates("seed", keep="last")  # one run per seed
            accs, rise = kept.test_acc, pd.to_numeric(kept.train_loss_rise, errors="coerce")
            row.cells[task] = Cell(mean=float(accs.mean()), std=float(accs.std()) if len(accs) > 1 else None,
                                   n=len(accs), mixed=runs_t.setting.nunique() > 1,
                                   unstable=bool((rise > LOSS_RISE_UNSTABLE).any()),
                                   final=bool(kept.final_model.astype(bool).any()))
        means = [row.cells[t].mean for t in columns if t in row.cells]
        if means:
            row.avg, row.avg_tasks = sum(means) / len(means), len(means)
            row.avg_complete = len(means) == len(LRA_ORDER)
        if times_by_row is not None:
            t = times_by_row.loc[(variant, proto)]
            row.runs, row.shared_runs = int(t.runs), int(t.shared_runs)
            row.wall_seconds_mean, row.compute_seconds = float(t.wall_seconds_mean), float(t.compute_seconds)
        rows.append(row)

    if pub is not None:
        pub_rows = []
        for _, p in pub.iterrows():
            row = Row(variant=p["variant"], protocol=p["protocol"], source=compare, model=p["model"])
            row.cells = {t: Cell(mean=float(p[t])) for t in columns if t in pub.columns and pd.notna(p[t])}
            if "avg" in pub.columns and pd.notna(p["avg"]):
                row.avg, row.avg_tasks, row.avg_complete = float(p["avg"]), len(LRA_ORDER), True
            pub_rows.append(row)
        by_variant = {r.variant: r for r in pub_rows}
        for row in rows:
            row.matched = published.match_variant(row.variant, by_variant)
            ref = by_variant.get(row.matched) if row.matched else None
            for t in columns:
                ours, theirs = row.cells.get(t), ref.cells.get(t) if ref else None
                row.delta[t] = ours.mean - theirs.mean if ours and theirs else None
            row.delta["avg"] = None
            if ref is not None and row.avg is not None:
                if row.avg_complete and ref.avg is not None:
                    row.delta["avg"] = row.avg - ref.avg
                else:  # compare like with like: the published mean over the tasks we have
                    both = [t for t in columns if t in row.cells]
                    if all(t in ref.cells for t in both):
                        row.delta["avg"] = row.avg - sum(ref.cells[t].mean for t in both) / len(both)
        rows += pub_rows

    table = Table(tasks=columns, rows=rows, compare=compare, times=times,
                  show_protocol=compare is not None or len({r.protocol for r in rows}) > 1)
    for t in columns:
        values = [round(r.cells[t].mean, digits) for r in rows if t in r.cells]
        if values:
            table.best[t] = max(values)
    complete = [round(r.avg, digits) for r in rows if r.avg is not None and r.avg_complete]
    partial = [round(r.avg, digits) for r in rows if r.avg is not None]
    if complete or partial:
        table.best["avg"] = max(complete or partial)
    table.notes = _notes(table, skipped, pub)
    return table


def or_list(items: list[Any]) -> str:
    """[1] -> "1", [1, 4] -> "1 or 4", [1, 2, 4] -> "1, 2 or 4"."""
    words = [str(i) for i in items]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _notes(table: Table, skipped: list[dict[str, Any]], pub: pd.DataFrame | None) -> list[str]:
    ours = [r for r in table.rows if r.source == "ours"]
    notes = ["Test accuracy (%) of the best-validation checkpoint: mean ± sample std over seeds "
             "(number of seeds). Bold: best in the column."]
    if any(r.avg is not None and not r.avg_complete for r in ours):
        counts = sorted({r.avg_tasks for r in ours if r.avg is not None and not r.avg_complete})
        notes.append(f"avg*: average over the available tasks only ({or_list(counts)} of 5).")
    if any(c.mixed for r in ours for c in r.cells.values()):
        notes.append("(n)†: these runs differ in configuration beyond the seed.")
    if any(c.unstable for r in ours for c in r.cells.values()):
        notes.append(f"‡: a run whose training loss ended more than {LOSS_RISE_UNSTABLE} above its lowest "
                     "(moving averages): it got worse late in training; the cell is still its "
                     "best-validation checkpoint (its final model where § marks it).")
    if any(c.final for r in ours for c in r.cells.values()):
        notes.append("§: no validation after train.best_after (20% of training under skyformer) beat an earlier "
                     "one, so no checkpoint was kept and the final model was tested (the Skyformer code's rule, "
                     "train.best_rule=overall).")
    if table.compare:
        src = published.SOURCES[table.compare]
        theirs = sorted(set(pub.protocol)) if pub is not None and len(pub) else [src.protocol]
        mine = sorted({r.protocol for r in ours})
        notes.append(f"Δ: ours minus {table.compare} for the same variant (averages: over the same tasks). "
                     f"Published protocol: {', '.join(theirs)}; ours: {', '.join(mine) or 'none'}. "
                     f"Source: {src.citation}")
    if table.times:
        notes.append("wall/run: mean wall-clock time of one run; compute: sum over the row's runs "
                     "(times the number of GPUs for multi-GPU runs).")
        if any(r.shared_runs for r in ours):
            notes.append("(k shared): k of the row's runs shared their GPU with other runs packed on it "
                         "(the sweep's --jobs-per-gpu); compute counts each such run's wall time divided by "
                         "the number of runs on its GPU.")
    if skipped:
        notes.append(f"Not counted: {len(skipped)} run(s) that did not finish "
                     f"({'; '.join(sorted({str(r.get('status')) for r in skipped}))[:200]}).")
    return notes


def _duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.2f}h"


def _header(table: Table) -> list[tuple[str, str]]:
    """(key, kind) per column; kind: text, task, delta, avg, time."""
    cols = [("variant", "text")]
    if table.show_protocol:
        cols.append(("protocol", "text"))
    if table.compare:
        cols.append(("source", "text"))
    for t in table.tasks:
        cols.append((t, "task"))
        if table.compare:
            cols.append((f"delta_{t}", "delta"))
    cols.append(("avg", "avg"))
    if table.compare:
        cols.append(("delta_avg", "delta"))
    if table.times:
        cols += [("wall_per_run", "time"), ("compute", "time")]
    return cols


class _Style:
    """How one output format writes text, bold, missing values and markers."""

    missing = "—"
    pm = "±"
    star = "*"
    dagger = "†"
    ddagger = "‡"
    section = "§"

    def text(self, s: str) -> str:
        return s

    def bold(self, s: str) -> str:
        return f"**{s}**"

    def signed(self, v: float, digits: int, marked: bool = False) -> str:
        return f"{v:+.{digits}f}" + (self.star if marked else "")


class _Latex(_Style):
    missing = "--"
    pm = "$\\pm$"
    star = "$^{*}$"
    dagger = "$^{\\dagger}$"
    ddagger = "$^{\\ddagger}$"
    section = "$^{\\S}$"
    _ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "±": "$\\pm$", "Δ": "$\\Delta$", "†": "$^{\\dagger}$", "‡": "$^{\\ddagger}$", "§": "$^{\\S}$", "ö": r"\"o"}

    def text(self, s: str) -> str:
        return "".join(self._ESCAPES.get(c, c) for c in s)

    def bold(self, s: str) -> str:
        return f"\\textbf{{{s}}}"

    def signed(self, v: float, digits: int, marked: bool = False) -> str:
        return f"${v:+.{digits}f}" + ("^{*}$" if marked else "$")  # one math group: "$$" would open display math


def _cells(table: Table, row: Row, style: _Style, digits: int) -> list[str]:
    out = []
    for key, kind in _header(table):
        if key == "variant":
            out.append(style.text(row.variant))
        elif key == "protocol":
            out.append(style.text(row.protocol))
        elif key == "source":
            out.append(style.text("ours" if row.source == "ours" else f"{row.source}: {row.model}"))
        elif kind == "task":
            c = row.cells.get(key)
            if c is None:
                out.append(style.missing)
                continue
            mean = f"{c.mean:.{digits}f}"
            if round(c.mean, digits) == table.best.get(key):
                mean = style.bold(mean)
            if c.n is not None:
                mean += f" {style.pm} {c.std:.{digits}f}" if c.std is not None else ""
                mean += f" ({c.n})" + (style.dagger if c.mixed else "") + (style.ddagger if c.unstable else "")
                mean += style.section if c.final else ""
            out.append(mean)
        elif key == "avg":
            if row.avg is None:
                out.append(style.missing)
                continue
            s = f"{row.avg:.{digits}f}"
            if round(row.avg, digits) == table.best.get("avg") and (row.avg_complete or not any(
                    r.avg_complete for r in table.rows)):
                s = style.bold(s)
            out.append(s + ("" if row.avg_complete else style.star))
        elif kind == "delta":
            task = key.removeprefix("delta_")
            v = row.delta.get(task)
            if v is None:
                out.append("" if row.source != "ours" else style.missing)
            else:
                out.append(style.signed(v, digits, marked=task == "avg" and not row.avg_complete))
        elif key == "wall_per_run":
            out.append(_duration(row.wall_seconds_mean) if row.source == "ours" else "")
        elif key == "compute":
            shared = f" ({row.shared_runs} shared)" if row.shared_runs else ""
            out.append(_duration(row.compute_seconds) + shared if row.source == "ours" else "")
    return out


_MD_TITLES = {"wall_per_run": "wall/run", "compute": "compute"}


def to_markdown_table(table: Table, digits: int = 2) -> str:
    cols = _header(table)
    titles = [_MD_TITLES.get(k, f"Δ {k.removeprefix('delta_')}" if kind == "delta" else k) for k, kind in cols]
    lines = ["| " + " | ".join(titles) + " |",
             "|" + "|".join("---" if kind == "text" else "---:" for _, kind in cols) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join(_cells(table, row, _Style(), digits)) + " |")
    return "\n".join(lines + [""] + table.notes)


def to_latex(table: Table, digits: int = 2) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``): header, our rows, the
    published rows after a rule; the notes follow the tabular as small paragraphs, so they
    wrap at the width of the surrounding float instead of widening the table."""
    style = _Latex()
    cols = _header(table)
    titles = {"variant": "Variant", "protocol": "Protocol", "source": "Source", "wall_per_run": "Wall/run",
              "compute": "Compute"}
    head = [titles.get(k) or ("$\\Delta$" if kind == "delta" else TASK_TITLES[k]) for k, kind in cols]
    spec = "".join("l" if kind == "text" else "r" for _, kind in cols)
    lines = [f"\\begin{{tabular}}{{@{{}}{spec}@{{}}}}", "\\toprule", " & ".join(head) + " \\\\", "\\midrule"]
    previous = None
    for row in table.rows:
        if previous is not None and row.source != previous:
            lines.append("\\midrule")
        previous = row.source
        lines.append(" & ".join(_cells(table, row, style, digits)) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += [f"\\par{{\\footnotesize {style.text(note)}}}" for note in table.notes]
    return "\n".join(lines)


def to_csv(table: Table, digits: int = 4) -> str:
    """Numbers only, one row per table row: per task the mean, std and seeds (and the
    delta), the average with the number of tasks behind it, the times in seconds."""
    records = []
    for row in table.rows:
        rec: dict[str, Any] = {"variant": row.variant, "protocol": row.protocol, "source": row.source,
                               "model": row.model}
        for t in table.tasks:
            c = row.cells.get(t)
            rec[t] = c.mean if c else None
            rec[f"{t}_std"] = c.std if c else None
            rec[f"{t}_n"] = c.n if c else None
            rec[f"{t}_unstable"] = c.unstable if c is not None and c.n is not None else None
            rec[f"{t}_final"] = c.final if c is not None and c.n is not None else None
            if table.compare:
                rec[f"{t}_delta"] = row.delta.get(t)
        rec["avg"], rec["avg_tasks"] = row.avg, row.avg_tasks or None
        if table.compare:
            rec["avg_delta"] = row.delta.get("avg")
        if table.times:
            rec["runs"] = row.runs or None
            rec["shared_runs"] = row.shared_runs if row.source == "ours" else None
            rec["wall_seconds_mean"], rec["compute_seconds"] = row.wall_seconds_mean, row.compute_seconds
        records.append(rec)
    frame = pd.DataFrame(records)
    for c in frame.columns:
        if c.endswith("_n") or c in ("avg_tasks", "runs", "shared_runs"):
            frame[c] = frame[c].astype("Int64")
        elif c.endswith(("_unstable", "_final")):
            frame[c] = frame[c].astype("boolean")
        elif c not in ("variant", "protocol", "source", "model"):
            frame[c] = pd.to_numeric(frame[c]).round(digits)
    return frame.to_csv(index=False, lineterminator="\n")


def render_table(runs: list[dict[str, Any]], *, order: str = "lra", compare: str | None = None,
                 fmt: str = "markdown", tasks: Iterable[str] | None = None, variants: Iterable[str] | None = None,
                 protocol: str | None = None, times: bool = False, digits: int = 2) -> str:
    """The accuracy table of ``runs`` (``lra.records.load_runs`` dicts) as text.

    Finished runs are averaged over seeds per (variant, protocol) and task; columns in
    ``order`` ("lra": listops, text, retrieval, image, pathfinder; "polaformer": text,
    listops, retrieval, pathfinder, image), then the average of the shown task means,
    marked ``*`` when fewer than the five tasks are behind it. ``compare`` (one of
    ``results.published.COMPARE``) appends that source's rows and a delta column per
    task (ours minus published, for the published row computing the same variant).
    ``tasks`` / ``variants`` / ``protocol`` filter (a bare variant name such as
    ``polarity`` selects all its hyperparameter settings); ``times`` adds the mean wall
    time per run and the summed compute time per row. ``fmt``: markdown, latex or csv.
    Raises ``ValueError`` on an unknown order, source, format or task, and when no
    finished run is left after filtering.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    table = build_table(runs, order=order, compare=compare, tasks=tasks, variants=variants, protocol=protocol,
                        times=times, digits=digits)
    if not any(r.source == "ours" for r in table.rows):
        raise ValueError("no finished runs match")
    if fmt == "markdown":
        return to_markdown_table(table, digits)
    if fmt == "latex":
        return to_latex(table, digits)
    return to_csv(table)


def _fmt(v, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and pd.isna(v)) else format(v, spec)


def _failed_cell(row: dict[str, Any]) -> str | None:
    """'OOM' or 'error' for a benchmark row that did not run; None for a good one."""
    status = str(row.get("status", ""))
    return "OOM" if status == "oom" else "error" if status.startswith("error") else None


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
            cells.append(_failed_cell(r) or
                         f"{_fmt(r.get('steps_per_s'), '.2f')} ({_fmt(r.get('speed_rel'), '.2f')})")
        for l in lengths:
            r = by.get((v, l), {})
            mem = r.get("peak_memory_bytes")
            cells.append(_failed_cell(r) or
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
            cells.append(_failed_cell(r) or _fmt(r.get("fwd_bwd_ms"), ".3f"))
        for l in lengths:
            r = by.get((v, l), {})
            mem = r.get("peak_memory_bytes")
            cells.append(_failed_cell(r) or _fmt(mem / 2**30 if mem else None, ".3f"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
