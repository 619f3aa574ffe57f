"""Figures from run records and benchmark rows: PNG + PDF, sized for a paper column.

Every figure is one ``plot_<name>(..., out)`` function that writes ``<name>.png`` and
``<name>.pdf`` into the folder ``out`` and returns both paths; ``plot_all`` makes every
figure it has data for and prints a note for each one it skips. Figures only read
records (``lra.records.load_runs``, ``metrics.jsonl``, ``lra bench speed`` JSON) and the
published numbers of ``results.published``; the attention-map figure is the exception,
it rebuilds a model (trained weights if a run left a checkpoint, else a seeded fresh
initialisation) and runs one real input through it.

Style: one colour per variant in every figure (``variant_color``; Okabe-Ito and Paul
Tol colour-blind-safe palettes, with a marker per variant as a second cue), TrueType
text in the PDF (``pdf.fonttype`` 42), 7-8 pt text at 3.3 in (one column) or 6.9 in
(two columns) wide. Rendering goes through explicit Agg / PDF canvases: no pyplot, no
global backend switch, no global rcParams change.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lra import records
from results.table import LRA_ORDER, records_frame

COLUMN_IN = 3.3  # one column of a two-column paper
WIDE_IN = 6.9  # both columns

STYLE: dict[str, Any] = {
    "pdf.fonttype": 42,  # TrueType: text stays text (selectable, editable) in the PDF
    "ps.fonttype": 42,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "legend.handlelength": 1.4,
    "legend.columnspacing": 1.0,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "errorbar.capsize": 1.5,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "image.cmap": "viridis",
}

# Okabe & Ito (2008) and Paul Tol's "muted" / "bright" sets: distinguishable under the
# common colour-vision deficiencies.
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
             "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7"}
TOL_MUTED = ["#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499"]

# Fixed colours so a variant looks the same in every figure, whatever else is plotted.
_BASE_COLORS = {
    "softmax": OKABE_ITO["black"],
    "softmax_naive": "#777777",  # the same function as softmax, another implementation
    "linear": OKABE_ITO["blue"],
    "performer": OKABE_ITO["green"],
    "nystromformer": OKABE_ITO["sky"],
    "cosformer": TOL_MUTED[0],
    "skyformer": TOL_MUTED[3],
    "hedgehog": TOL_MUTED[4],
    "kernelized": TOL_MUTED[8],
    "linformer": TOL_MUTED[2],
    "flatten": TOL_MUTED[5],
    "informer": TOL_MUTED[1],
    "reformer": TOL_MUTED[6],
    "bigbird": "#4477AA",
    "longformer": "#66CCEE",
    "local": "#BBBBBB",
    "sparse": "#AA3377",
    "sinkhorn": "#228833",
    "synthesizer": "#CCBB44",
}
# Polarity is drawn in the warm Okabe-Ito hues, darker with larger alpha; the published
# alphas 3 / 5 / 7 land on vermillion / reddish purple / wine.
_POLARITY_RAMP = [(1.0, OKABE_ITO["orange"]), (3.0, OKABE_ITO["vermillion"]), (5.0, OKABE_ITO["purple"]),
                  (7.0, TOL_MUTED[7]), (9.0, "#4B0F2E")]
_BASE_MARKERS = {"softmax": "o", "softmax_naive": "o", "linear": "s", "polarity": "^", "performer": "D",
                 "nystromformer": "P", "cosformer": "X", "skyformer": "h", "hedgehog": "*", "kernelized": "p",
                 "linformer": "v", "flatten": "<", "informer": ">", "reformer": "d", "bigbird": "H"}
_SPARE_MARKERS = ["D", "P", "X", "h", "p", "v", "<", ">", "d", "H", "*"]
_TASK_COLORS = {"listops": "#0077BB", "text": "#EE7733", "retrieval": "#009988", "image": "#CC3311",
                "pathfinder": "#33BBEE", "pathx": "#EE3377"}
_TASK_MARKERS = {"listops": "o", "text": "s", "retrieval": "D", "image": "^", "pathfinder": "v", "pathx": "P"}
_TASK_TITLES = {"listops": "ListOps", "text": "Text", "retrieval": "Retrieval", "image": "Image",
                "pathfinder": "Pathfinder", "pathx": "Path-X"}
# Implementation choices that do not change the function a variant computes.
_IMPLEMENTATION_HP = {"backend"}
_SAME_MATH = {"softmax_naive": "softmax"}


# ----------------------------------------------------------------------------- colours


def _resolve(label: str) -> tuple[str, dict[str, Any]]:
    """``polarity:alpha=5`` -> ("polarity", hyperparameters with defaults, implementation
    choices dropped); a label the zoo cannot parse keeps its raw name and no hp."""
    import attention_zoo

    try:
        name, hp = attention_zoo.parse_spec(label)
        values = dataclasses.asdict(attention_zoo.make_hparams(name, **hp))
    except Exception:  # a label from another version of the zoo
        return label.partition(":")[0], {}
    return name, {k: v for k, v in values.items() if k not in _IMPLEMENTATION_HP}


def _canonical(label: str) -> tuple[str, tuple]:
    name, hp = _resolve(label)
    return name, tuple(sorted(hp.items()))


def _hash_index(text: str, n: int) -> int:
    return zlib.crc32(text.encode()) % n  # stable across processes, unlike hash()


def _interp_color(x: float, ramp: list[tuple[float, str]]) -> str:
    if x <= ramp[0][0]:
        return ramp[0][1]
    for (x0, c0), (x1, c1) in zip(ramp, ramp[1:]):
        if x <= x1:
            t = (x - x0) / (x1 - x0)
            return to_hex([(1 - t) * a + t * b for a, b in zip(to_rgb(c0), to_rgb(c1))])
    return ramp[-1][1]


def _shade(color: str, key: str) -> str:
    """A deterministic lighter or darker version of ``color`` for a non-default hp set."""
    f = [-0.35, 0.35, -0.2, 0.5, 0.2][_hash_index(key, 5)]
    rgb = np.array(to_rgb(color))
    rgb = rgb * (1 + f) if f < 0 else rgb + (1 - rgb) * f
    return to_hex(np.clip(rgb, 0, 1))


def variant_color(label: str) -> str:
    """The colour of a variant label in every figure (hex string).

    Fixed per variant name, so a figure's colours never depend on what else it shows;
    ``polarity`` follows a warm ramp in alpha (3 vermillion, 5 reddish purple, 7 wine);
    other non-default hyperparameters shade the variant's colour; implementation choices
    (``backend``) and spelled-out defaults do not change it (``polarity`` is
    ``polarity:alpha=3``), except a key some protocol sets, which names another computation
    when spelled out (``performer:qk_scale=sqrt_d``). Unknown names get a stable colour from
    Tol's muted set.
    """
    name, hp = _resolve(label)
    if name == "polarity":
        alpha = float(hp.get("alpha", 3.0))
        base = _interp_color(alpha, _POLARITY_RAMP)
        rest = {k: v for k, v in hp.items() if k != "alpha"}
        defaults = _defaults("polarity")
        rest = {k: v for k, v in rest.items() if defaults.get(k) != v}
        return _shade(base, repr(sorted(rest.items()))) if rest else base
    base = _BASE_COLORS.get(name) or TOL_MUTED[_hash_index(name, len(TOL_MUTED))]
    defaults, pinned = _defaults(name), _spelled(label) & _protocol_keys(name)
    # a key a protocol sets is a change whenever spelled out: under the skyformer protocol,
    # performer:qk_scale=sqrt_d (the zoo's default) is not the protocol's performer
    changed = {k: v for k, v in hp.items() if defaults.get(k) != v or k in pinned}
    return _shade(base, repr(sorted(changed.items()))) if changed else base


def variant_marker(label: str) -> str:
    """A marker per variant name, a second cue beside the colour (greyscale print)."""
    name, hp = _resolve(label)
    if name == "polarity":
        return {3.0: "^", 5.0: "v", 7.0: "<"}.get(float(hp.get("alpha", 3.0)), ">")
    return _BASE_MARKERS.get(name) or _SPARE_MARKERS[_hash_index(name, len(_SPARE_MARKERS))]


def variant_linestyle(label: str) -> str:
    """Dashed for a second implementation of another variant's function (softmax_naive),
    whose curves would otherwise hide under the first one's."""
    return "--" if _resolve(label)[0] in _SAME_MATH else "-"


_LINESTYLES = ["-", "--", ":", "-."]


def line_looks(labels: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Each label's (line style, marker) in one figure: ``variant_linestyle`` and
    ``variant_marker``, except that
    - labels that would draw identical lines (same colour, marker and style, as hyperparameter
      variants whose shades coincide) take, after the first, the other line styles in turn;
    - labels sharing a marker (one attention's hyperparameter variants, told apart otherwise
      only by shades of its colour) take, after the first, markers no label of the figure
      uses, in turn."""
    labels = list(dict.fromkeys(labels))
    own = {v: variant_marker(v) for v in labels}
    spare = [m for m in _SPARE_MARKERS + ["o", "s", "^"] if m not in own.values()] or _SPARE_MARKERS
    looks, seen, used, extra = {}, {}, set(), 0
    for v in labels:
        look = (variant_color(v), own[v], variant_linestyle(v))
        n = seen[look] = seen.get(look, -1) + 1
        style = look[2] if n == 0 else [s for s in _LINESTYLES if s != look[2]][(n - 1) % (len(_LINESTYLES) - 1)]
        if own[v] in used:
            marker, extra = spare[extra % len(spare)], extra + 1
        else:
            marker = own[v]
            used.add(marker)
        looks[v] = (style, marker)
    return looks


def task_color(task: str) -> str:
    return _TASK_COLORS.get(task) or TOL_MUTED[_hash_index(task, len(TOL_MUTED))]


def task_title(task: str) -> str:
    return _TASK_TITLES.get(task, task)


def _spelled(label: str) -> set[str]:
    """The hyperparameter keys a label spells out (``performer:qk_scale=sqrt_d`` -> {qk_scale})."""
    import attention_zoo

    try:
        return set(attention_zoo.parse_spec(label)[1])
    except Exception:
        return set()


def _protocol_keys(name: str) -> set[str]:
    """The hyperparameters of variant ``name`` that some protocol sets (lra/protocols.py)."""
    from lra.protocols import PROTOCOLS

    return {k for proto in PROTOCOLS.values() for k in proto.get("attention", {}).get(name, {})}


def _defaults(name: str) -> dict[str, Any]:
    import attention_zoo

    try:
        return {k: v for k, v in attention_zoo.get(name).defaults().items() if k not in _IMPLEMENTATION_HP}
    except Exception:
        return {}


# ----------------------------------------------------------------------------- saving


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # Agg renders the PNG; savefig picks the PDF backend for .pdf
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.04, hspace=0.04)
    return fig


def _save(fig: Figure, out: Path, name: str) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0])
    fig.savefig(paths[1], metadata={"CreationDate": None})  # same records -> same bytes
    return paths


def _style():
    return matplotlib.rc_context(STYLE)


# ----------------------------------------------------------------------------- data


def _frame(runs: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    return runs if isinstance(runs, pd.DataFrame) else records_frame(runs)


def _task_order(tasks: Iterable[str]) -> list[str]:
    tasks = set(tasks)
    return [t for t in LRA_ORDER if t in tasks] + sorted(tasks - set(LRA_ORDER))


def _variant_order(labels: Iterable[str]) -> list[str]:
    """Softmax first, then by variant name and alpha-like hyperparameters."""
    def key(label: str):
        name, hp = _resolve(label)
        first = 0 if name == "softmax" else 1 if name == "softmax_naive" else 2
        return (first, name, tuple((k, float(v) if isinstance(v, (int, float)) else str(v))
                                   for k, v in sorted(hp.items()) if not isinstance(v, bool)), label)

    return sorted(set(labels), key=key)


def accuracy_summary(runs: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Test accuracy (%) per variant and task over seeds: ``mean``, ``std`` (ddof 1; NaN
    for one seed), ``n`` and the seeds' values."""
    frame = _frame(runs)
    if frame.empty:
        return pd.DataFrame(columns=["variant", "task", "mean", "std", "n", "values"])
    g = frame.groupby(["variant", "task"])["test_acc"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count(), "values": g.apply(list)})
    return out.reset_index()


def published_points(protocol: str | None, source: str | None = "auto") -> tuple[dict[tuple[str, str], float], str]:
    """Published test accuracy (%) keyed by (published variant label, task), and the source
    name. ``source="auto"``: the first accuracy table of ``results.published.COMPARE``
    whose protocol is ``protocol`` (so the quick protocol gets none); ``None``: none."""
    if source is None:
        return {}, ""
    try:
        from results import published
    except ImportError:
        return {}, ""
    names = list(getattr(published, "COMPARE", ()))
    if source == "auto":
        sources = getattr(published, "SOURCES", {})
        names = [n for n in names if n in sources and sources[n].protocol == protocol]
        if not names:
            return {}, ""
        source = names[0]
    frame = published.load(source)
    tasks = [t for t in frame.columns if t in (*LRA_ORDER, "pathx")]
    points = {}
    for _, row in frame.iterrows():
        for t in tasks:
            if pd.notna(row[t]):
                points[(str(row["variant"]), t)] = float(row[t])
    return points, source


def _match_published(label: str, labels: Iterable[str]) -> str | None:
    labels = list(labels)
    try:
        from results.published import match_variant
    except ImportError:
        return next((p for p in labels if _canonical(p) == _canonical(label)), None)
    return match_variant(label, labels)


def _pick_protocol(frame: pd.DataFrame, protocol: str | None, note: Callable[[str], None]) -> pd.DataFrame:
    if frame.empty:
        return frame
    if protocol is not None:
        return frame[frame.protocol == protocol]
    counts = frame.protocol.value_counts()
    if len(counts) > 1:
        note(f"runs of several protocols ({', '.join(counts.index)}); plotting {counts.index[0]} "
             "(choose with protocol=...)")
        return frame[frame.protocol == counts.index[0]]
    return frame


def load_speed_rows(paths: Iterable[Path]) -> tuple[list[dict[str, Any]], str]:
    """Rows of ``lra bench speed --out`` files (later files win on the same variant and
    length) and a device description."""
    import json

    by: dict[tuple[str, int], dict[str, Any]] = {}
    devices = []
    for p in paths:
        blob = json.loads(Path(p).read_text())
        if blob.get("kind", "speed") != "speed":
            continue
        devices.append((blob.get("env") or {}).get("device"))
        for r in blob.get("rows", []):
            by[(r["variant"], int(r["length"]))] = r
    devs = sorted({d for d in devices if d})
    return list(by.values()), ", ".join(devs)


def _ok(r: dict[str, Any]) -> bool:
    return r.get("status") == "ok" and r.get("steps_per_s") is not None


def _gib(b: float | None) -> float | None:
    return None if b is None else b / 2**30


# ----------------------------------------------------------------------------- legends


def _variant_handles(labels: Sequence[str], kind: str = "patch") -> list:
    from matplotlib.patches import Patch

    if kind == "patch":
        return [Patch(facecolor=variant_color(v), edgecolor="none", label=v) for v in labels]
    looks = line_looks(labels)
    return [Line2D([], [], color=variant_color(v), marker=looks[v][1], linestyle=looks[v][0],
                   label=v, markersize=4) for v in labels]


def _legend_top(fig: Figure, handles: list, ncol: int | None = None) -> None:
    ncol = ncol or min(len(handles), 3)
    fig.legend(handles=handles, loc="outside upper center", ncol=ncol, borderaxespad=0.1)


# ----------------------------------------------------------------------------- figures


def plot_accuracy(runs: list[dict[str, Any]] | pd.DataFrame, out: Path, *, protocol: str | None = None,
                  published: str | None = "auto", name: str = "accuracy",
                  note: Callable[[str], None] = print) -> list[Path]:
    """Test accuracy per task, variants side by side: bar = mean over seeds, error bar =
    std over seeds (ddof 1, only with two or more seeds), dots = single seeds, open
    diamonds = the published number of the same variant and task (``published``: a
    ``results.published`` source name, "auto" for the table of the runs' protocol, or
    None)."""
    frame = _pick_protocol(_frame(runs), protocol, note)
    summary = accuracy_summary(frame)
    if summary.empty:
        raise ValueError("no finished runs to plot")
    tasks = _task_order(summary.task)
    variants = _variant_order(summary.variant)
    proto = frame.protocol.iloc[0] if frame.protocol.nunique() == 1 else None
    points, source = published_points(proto, published)
    pub_labels = {v for v, _ in points}
    by = {(r.variant, r.task): r for r in summary.itertuples()}

    nv = len(variants)
    wide = len(tasks) * nv > 14
    group = 0.8
    width = group / nv
    with _style():
        fig = _figure(WIDE_IN if wide else COLUMN_IN, 2.3)
        ax = fig.add_subplot()
        any_pub = False
        for i, v in enumerate(variants):
            xs = np.arange(len(tasks)) - group / 2 + (i + 0.5) * width
            means = [by[(v, t)].mean if (v, t) in by else np.nan for t in tasks]
            stds = [by[(v, t)].std if (v, t) in by else np.nan for t in tasks]
            color = variant_color(v)
            ax.bar(xs, means, width * 0.92, color=color, edgecolor="none", label=v, zorder=2)
            err = np.array([s if np.isfinite(s) else 0.0 for s in stds])
            has = np.isfinite(np.array(stds, dtype=float))
            if has.any():
                ax.errorbar(xs[has], np.array(means)[has], yerr=err[has], fmt="none", ecolor="#333333",
                            elinewidth=0.7, capthick=0.7, zorder=3)
            for x, t in zip(xs, tasks):
                if (v, t) in by and by[(v, t)].n > 1:
                    vals = by[(v, t)].values
                    jitter = np.linspace(-0.18, 0.18, len(vals)) * width
                    ax.scatter(x + jitter, vals, s=3, color="white", edgecolors="#333333", linewidths=0.4,
                               zorder=4)
            match = _match_published(v, pub_labels) if points else None
            if match is not None:
                for x, t in zip(xs, tasks):
                    if (match, t) in points:
                        any_pub = True
                        ax.scatter([x], [points[(match, t)]], marker="D", s=14, facecolors="white",
                                   edgecolors=color, linewidths=0.9, zorder=5)
        ax.set_xticks(np.arange(len(tasks)), [task_title(t) for t in tasks])
        ax.set_ylabel("Test accuracy (%)")
        ax.set_xlim(-0.5, len(tasks) - 0.5)
        ax.set_ylim(0, min(100, max(5.0, float(np.nanmax(summary["mean"] + summary["std"].fillna(0))) * 1.15,
                                    max(points.values(), default=0) * 1.1 if any_pub else 0)))
        ax.yaxis.grid(True, linewidth=0.4, color="#DDDDDD", zorder=0)
        ax.set_axisbelow(True)
        handles = _variant_handles(variants)
        if any_pub:
            handles.append(Line2D([], [], marker="D", linestyle="none", markerfacecolor="white",
                                  markeredgecolor="#333333", markersize=3.5, label=f"published ({source})"))
        seeds = int(summary.n.max())
        _legend_top(fig, handles, ncol=min(len(handles), 4 if wide else 3))
        subtitle = f"{proto or 'mixed'} protocol; mean of up to {seeds} seed{'s' if seeds > 1 else ''}"
        subtitle += ", bars: std" if seeds > 1 else ""
        ax.set_title(subtitle, fontsize=7, color="#444444", loc="left")
        return _save(fig, out, name)


def _bubble_length(rows: list[dict[str, Any]], variants: list[str], length: int | None) -> int | None:
    lengths = sorted({int(r["length"]) for r in rows})
    if not lengths:
        return None
    if length is not None:
        return length
    ok = {(_canonical(r["variant"]), int(r["length"])) for r in rows if _ok(r)}
    common = [l for l in lengths if all((_canonical(v), l) in ok for v in variants)]
    if 4096 in common:
        return 4096
    return common[-1] if common else lengths[-1]


def plot_bubble(runs: list[dict[str, Any]] | pd.DataFrame, speed_rows: list[dict[str, Any]], out: Path, *,
                length: int | None = None, protocol: str | None = None, device: str = "",
                name: str = "bubble", note: Callable[[str], None] = print) -> list[Path]:
    """The LRA bubble chart: average test accuracy over the tasks every plotted variant
    has (y) against training steps per second at one sequence length (x), bubble area
    proportional to peak memory. ``length``: 4096 when every variant ran there, else the
    largest length all ran at (variants that ran out of memory there are left out)."""
    summary = accuracy_summary(_pick_protocol(_frame(runs), protocol, note))
    if summary.empty or not speed_rows:
        raise ValueError("the bubble chart needs finished runs and speed rows")
    speed_by = {}
    for r in speed_rows:
        speed_by.setdefault(_canonical(r["variant"]), []).append(r)
    acc_variants = [v for v in _variant_order(summary.variant) if _canonical(v) in speed_by]
    if not acc_variants:
        raise ValueError("no variant has both accuracy records and speed rows")
    rows = [r for v in acc_variants for r in speed_by[_canonical(v)]]
    L = _bubble_length(rows, acc_variants, length)
    at = {v: next((r for r in speed_by[_canonical(v)] if int(r["length"]) == L and _ok(r)), None)
          for v in acc_variants}
    dropped = [v for v, r in at.items() if r is None]
    if dropped:
        note(f"bubble: left out at L={L} (out of memory or not measured): {', '.join(dropped)}")
    variants = [v for v in acc_variants if at[v] is not None]
    if not variants:
        raise ValueError(f"no variant has an ok speed row at length {L}")
    tasks_of = {v: set(summary[summary.variant == v].task) for v in variants}
    common = set.intersection(*tasks_of.values())
    use = _task_order(common) if common else None
    if not common:
        note("bubble: no task shared by every variant; each average is over its own tasks")
    avg = {}
    for v in variants:
        s = summary[(summary.variant == v) & (summary.task.isin(use or tasks_of[v]))]
        avg[v] = float(s["mean"].mean())
    mems = {v: _gib(at[v].get("peak_memory_bytes")) for v in variants}
    have_mem = all(m is not None and m > 0 for m in mems.values())
    max_area, max_mem = 500.0, max((m for m in mems.values() if m), default=1.0)

    def area(m: float | None) -> float:
        return max_area * m / max_mem if have_mem else 60.0

    with _style():
        fig = _figure(COLUMN_IN, 2.6)
        ax = fig.add_subplot()
        xs = [at[v]["steps_per_s"] for v in variants]
        for v in variants:
            ax.scatter(at[v]["steps_per_s"], avg[v], s=area(mems[v]), color=variant_color(v), alpha=0.75,
                       edgecolors="white", linewidths=0.6, zorder=3)
            ax.scatter(at[v]["steps_per_s"], avg[v], s=6, color="#222222", marker=".", linewidths=0, zorder=4)
        logx = max(xs) / min(xs) > 4
        if logx:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.margins(x=0.25, y=0.3)
        _label_points(ax, [(at[v]["steps_per_s"], avg[v], f"{v} ({mems[v]:.2g} GiB)" if have_mem else v)
                           for v in variants],
                      [math.sqrt(area(mems[v])) for v in variants], logx)
        ax.set_xlabel(f"Training steps per second (L = {L})")
        tasks_txt = ", ".join(task_title(t) for t in use) if use else "own tasks"
        ax.set_ylabel("Average test accuracy (%)")
        ax.set_title(f"average over {tasks_txt}" + (f"; {device}" if device else ""), fontsize=7,
                     color="#444444", loc="left")
        ax.yaxis.grid(True, linewidth=0.4, color="#EEEEEE", zorder=0)
        ax.xaxis.grid(True, linewidth=0.4, color="#EEEEEE", zorder=0)
        ax.set_axisbelow(True)
        if have_mem:
            ax.text(0.99, 0.02, "bubble area: peak memory", transform=ax.transAxes, ha="right", va="bottom",
                    fontsize=6.5, color="#666666")
        else:
            ax.text(0.99, 0.02, "peak memory not recorded (CPU run):\nequal bubbles", transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=6.5, color="#666666")
        return _save(fig, out, name)


def _label_points(ax, pts: list[tuple[float, float, str]], radii_pt: list[float], logx: bool = False) -> None:
    """Label each bubble beside it: to the right, or to the left in the right part of the
    x range, and on the other side than a neighbour at nearly the same height."""
    xs = np.array([p[0] for p in pts], dtype=float)
    xs = np.log(xs) if logx else xs
    span_x = (xs.max() - xs.min()) or 1.0
    ys = [p[1] for p in pts]
    span_y = (max(ys) - min(ys)) or 1.0
    order = sorted(range(len(pts)), key=lambda i: (pts[i][1], pts[i][0]))
    prev = None
    for i in order:
        x, y, text = pts[i]
        side = -1 if (xs[i] - xs.min()) / span_x > 0.6 else 1
        if prev is not None and abs(y - pts[prev[0]][1]) < 0.06 * span_y and \
                abs(xs[i] - xs[prev[0]]) < 0.3 * span_x and side == prev[1]:
            side = -side
        prev = (i, side)
        off = radii_pt[i] / 2 + 2
        ax.annotate(text, (x, y), xytext=(side * off, 0), textcoords="offset points", fontsize=6.5,
                    ha="left" if side > 0 else "right", va="center", zorder=5)


def plot_speed(speed_rows: list[dict[str, Any]], out: Path, *, device: str = "", name: str = "speed",
               note: Callable[[str], None] = print) -> list[Path]:
    """Training steps per second (top) and peak memory (bottom) against sequence length,
    one line per variant; an out-of-memory length is marked with an x at the panel top."""
    if not speed_rows:
        raise ValueError("no speed rows")
    variants = _variant_order(dict.fromkeys(r["variant"] for r in speed_rows))
    lengths = sorted({int(r["length"]) for r in speed_rows})
    have_mem = any(_ok(r) and r.get("peak_memory_bytes") for r in speed_rows)
    batch = sorted({r.get("batch_size") for r in speed_rows if r.get("batch_size")})
    with _style():
        fig = _figure(COLUMN_IN, 3.5)
        ax1, ax2 = fig.subplots(2, 1, sharex=True)
        looks = line_looks(variants)
        for v in variants:
            rows = sorted((r for r in speed_rows if r["variant"] == v), key=lambda r: int(r["length"]))
            ok = [r for r in rows if _ok(r)]
            kw = dict(color=variant_color(v), marker=looks[v][1], linestyle=looks[v][0],
                      markersize=3.5, label=v)
            ax1.plot([int(r["length"]) for r in ok], [r["steps_per_s"] for r in ok], **kw)
            mem = [r for r in ok if r.get("peak_memory_bytes")]
            if mem:
                ax2.plot([int(r["length"]) for r in mem], [_gib(r["peak_memory_bytes"]) for r in mem], **kw)
            for r in rows:
                if r.get("status") == "oom":
                    for ax in (ax1, ax2):
                        ax.plot([int(r["length"])], [1.0], marker="x", color=variant_color(v), markersize=4,
                                transform=ax.get_xaxis_transform(), clip_on=False)
        for ax in (ax1, ax2) if have_mem else (ax1,):
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        for ax in (ax1, ax2):
            ax.set_xscale("log", base=2)
            ax.grid(True, which="major", linewidth=0.4, color="#EEEEEE")
            ax.set_axisbelow(True)
        ax2.set_xticks(lengths, [_length_label(l) for l in lengths])
        ax2.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax1.set_ylabel("Steps per second")
        ax2.set_ylabel("Peak memory (GiB)")
        ax2.set_xlabel("Sequence length" + (f" (batch {batch[0]})" if len(batch) == 1 else ""))
        if not have_mem:
            ax2.text(0.5, 0.5, "peak memory not recorded\n(CPU run: no device allocator)", transform=ax2.transAxes,
                     ha="center", va="center", fontsize=7, color="#666666")
            ax2.set_yticks([])
        if device:
            ax1.set_title(device, fontsize=7, color="#444444", loc="left")
        _legend_top(fig, _variant_handles(variants, "line"), ncol=min(len(variants), 3))
        return _save(fig, out, name)


def _length_label(n: int) -> str:
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}K"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def _panel_grid(n: int) -> tuple[int, int, float]:
    """(rows, cols, width) for ``n`` small-multiple panels."""
    if n <= 2:
        return 1, n, COLUMN_IN
    cols = 3 if n in (3, 5, 6) else 2
    return math.ceil(n / cols), cols, WIDE_IN if cols == 3 else COLUMN_IN


MAX_CURVE_MARKERS = 15  # markers per validation curve


def plot_curves(runs: list[dict[str, Any]] | pd.DataFrame, out: Path, *, protocol: str | None = None,
                name: str = "curves", note: Callable[[str], None] = print) -> list[Path]:
    """Validation accuracy against training step, one panel per task, one line per variant:
    the mean over seeds with a band of +-1 std (seeds are aligned on their common steps)."""
    frame = _pick_protocol(_frame(runs), protocol, note)
    curves: dict[tuple[str, str], list[pd.Series]] = {}
    for d, task, variant in zip(frame.dir, frame.task, frame.variant):
        if not isinstance(d, str):
            continue
        rows = [r for r in records.read_jsonl(Path(d) / records.METRICS) if r.get("val_acc") is not None]
        if rows:
            curves.setdefault((task, variant), []).append(
                pd.Series([100 * r["val_acc"] for r in rows], index=[r["step"] for r in rows]))
    if not curves:
        raise ValueError("no metrics.jsonl with val_acc under the runs")
    tasks = _task_order({t for t, _ in curves})
    variants = _variant_order({v for _, v in curves})
    nrow, ncol, width = _panel_grid(len(tasks))
    with _style():
        fig = _figure(width, 1.55 * nrow + 0.35)
        axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
        looks = line_looks(variants)
        for ax, task in zip(axes, tasks):
            for v in variants:
                series = curves.get((task, v))
                if not series:
                    continue
                df = pd.concat(series, axis=1, join="inner").sort_index()
                mean, std = df.mean(axis=1), df.std(axis=1, ddof=1)
                color = variant_color(v)
                # a marker on every point would bury long curves (Image evaluates every 50 steps)
                ax.plot(df.index, mean, color=color, marker=looks[v][1], markersize=2.5, linewidth=1.0,
                        linestyle=looks[v][0], markevery=max(1, len(df) // MAX_CURVE_MARKERS))
                if df.shape[1] > 1:
                    ax.fill_between(df.index, mean - std, mean + std, color=color, alpha=0.18, linewidth=0)
            ax.set_title(task_title(task))
            ax.grid(True, linewidth=0.4, color="#EEEEEE")
            ax.set_axisbelow(True)
            ax.set_xlim(0, max(s.index.max() for (t, _), ss in curves.items() if t == task for s in ss) * 1.05)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4, integer=True))
        for ax in axes[len(tasks):]:
            ax.set_visible(False)
        for i, ax in enumerate(axes[:len(tasks)]):
            if i % ncol == 0:
                ax.set_ylabel("Val. accuracy (%)")
            if i >= len(tasks) - ncol:
                ax.set_xlabel("Training step")
        _legend_top(fig, _variant_handles(variants, "line"), ncol=min(len(variants), 3 if width == COLUMN_IN else 5))
        return _save(fig, out, name)


def _alpha_of(label: str) -> float | None:
    name, hp = _resolve(label)
    return float(hp["alpha"]) if name == "polarity" and "alpha" in hp else None


def plot_alpha(runs: list[dict[str, Any]] | pd.DataFrame, out: Path, *, protocol: str | None = None,
               published: str | None = "auto", name: str = "alpha",
               note: Callable[[str], None] = print) -> list[Path]:
    """Test accuracy of the polarity variants against alpha (the power range, POLARITY.md
    step 4), one line per task: mean over seeds, std error bars; open markers are the
    published PolaFormer alpha = 3 / 5 / 7 numbers of the same task when the runs'
    protocol has them."""
    frame = _pick_protocol(_frame(runs), protocol, note)
    summary = accuracy_summary(frame)
    summary = summary.assign(alpha=[_alpha_of(v) for v in summary.variant]).dropna(subset=["alpha"])
    if summary.empty:
        raise ValueError("no polarity runs")
    proto = frame.protocol.iloc[0] if frame.protocol.nunique() == 1 else None
    points, source = published_points(proto, published)
    pub = {}
    for (label, task), value in points.items():
        a = _alpha_of(label)
        if a is not None:
            pub.setdefault(task, []).append((a, value))
    tasks = _task_order(summary.task)
    with _style():
        fig = _figure(COLUMN_IN, 2.3)
        ax = fig.add_subplot()
        handles = []
        any_pub = False
        for task in tasks:
            s = summary[summary.task == task].groupby("alpha", as_index=False).agg(
                mean=("mean", "mean"), std=("std", "max")).sort_values("alpha")
            color = task_color(task)
            ax.errorbar(s.alpha, s["mean"], yerr=s["std"].fillna(0).where(s["std"].notna(), 0), color=color,
                        marker=_TASK_MARKERS.get(task, "o"), markersize=3.5, linewidth=1.0, elinewidth=0.7)
            handles.append(Line2D([], [], color=color, marker=_TASK_MARKERS.get(task, "o"), markersize=3.5,
                                  label=task_title(task)))
            if task in pub:
                any_pub = True
                a, y = zip(*sorted(pub[task]))
                ax.plot(a, y, linestyle=":", linewidth=0.8, color=color, marker=_TASK_MARKERS.get(task, "o"),
                        markerfacecolor="white", markersize=3.5)
        alphas = sorted(set(summary.alpha) | {a for v in pub.values() for a, _ in v})
        ax.set_xticks(alphas, [f"{a:g}" for a in alphas])
        ax.set_xlabel(r"$\alpha$ (power $p \in (1, 1+\alpha)$)")
        ax.set_ylabel("Test accuracy (%)")
        ax.grid(True, linewidth=0.4, color="#EEEEEE")
        ax.set_axisbelow(True)
        ax.margins(x=0.08)
        if any_pub:
            handles.append(Line2D([], [], color="#555555", linestyle=":", marker="o", markerfacecolor="white",
                                  markersize=3.5, label=f"published ({source})"))
        _legend_top(fig, handles, ncol=min(len(handles), 3))
        seeds = int(summary.n.max())
        ax.set_title(f"polarity, {proto or 'mixed'} protocol; mean of up to {seeds} seed{'s' if seeds > 1 else ''}",
                     fontsize=7, color="#444444", loc="left")
        return _save(fig, out, name)


# ----------------------------------------------------------------------------- attention maps

MAP_VARIANTS = ("softmax", "linear", "polarity")
CHECKPOINT_NAMES = ("checkpoint.pt", "best.pt", "model.pt", "weights.pt", "best_model.pt")


def attention_matrix(attn, x, mask):
    """The explicit (B, H, L, L) attention matrix of ``attn`` on its input ``x`` (B, L, C),
    ``mask`` (B, L) bool, from the module's own projections and feature maps, in float64.

    Row i holds the weights query i gives the values, exactly the left-product form of
    what the module computes (padded keys get weight 0):

    - ``softmax``: softmax(q k^T / sqrt(d)) over the real keys;
    - ``linear``: s_ij = phi(q_i).phi(k_j), phi = elu + 1, a_ij = s_ij / (sum_j s_ij + eps);
    - ``polarity``: s_ij = phi(q_i).phi(k_j) + phi(-q_i).phi(-k_j), phi = relu(.)**p with
      the learned per-channel power, q and k scaled as the layer does, a_ij = s_ij /
      (sum_j s_ij + n eps): the weights of x_sim, the same-sign half of the output
      (POLARITY.md step 7); x_opp uses the opposite-sign pairs.
    """
    import torch
    import torch.nn.functional as F

    from attention_zoo.kernels.polarity.reference import polarity_feature

    name = getattr(attn, "variant_name", type(attn).__name__)
    b, l, c = x.shape
    h = attn.heads
    d = c // h
    x = x.detach().to(torch.float64)
    keep = mask[:, None, None, :]  # (B, 1, 1, L) over keys

    def heads_first(t):
        return t.reshape(b, l, h, d).transpose(1, 2)  # (B, H, L, D)

    with torch.no_grad():
        if name in ("softmax", "softmax_naive") and hasattr(attn, "qkv"):
            q, k, _ = (heads_first(t) for t in F.linear(x, attn.qkv.weight.double(), _dbl(attn.qkv.bias)).chunk(3, -1))
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)  # (B, H, L, L)
            return torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
        if name == "linear":
            q, k, _ = (heads_first(t) for t in F.linear(x, attn.qkv.weight.double(), _dbl(attn.qkv.bias)).chunk(3, -1))
            s = attn.feature_map(q) @ attn.feature_map(k).transpose(-1, -2)  # (B, H, L, L)
            s = s.masked_fill(~keep, 0.0)
            return s / (s.sum(-1, keepdim=True) + attn.eps)
        if name == "polarity":
            q, _ = F.linear(x, attn.qg.weight.double(), _dbl(attn.qg.bias)).chunk(2, -1)  # (B, L, C)
            k, _ = F.linear(x, attn.kv.weight.double(), _dbl(attn.kv.bias)).chunk(2, -1)
            k = k + attn.pos[:, :l].double()
            sc = F.softplus(attn.scale.double())
            q, k = heads_first(q / sc), heads_first(k / sc)
            p = 1 + attn.alpha * torch.sigmoid(attn.power.double())  # (1, H, 1, D)
            s = (polarity_feature(q, p) @ polarity_feature(k, p).transpose(-1, -2)
                 + polarity_feature(-q, p) @ polarity_feature(-k, p).transpose(-1, -2))  # (B, H, L, L)
            s = s.masked_fill(~keep, 0.0)
            n = mask.sum(-1).clamp_min(1).to(s.dtype)[:, None, None, None]
            return s / (s.sum(-1, keepdim=True) + n * 1e-6)
    raise NotImplementedError(f"no explicit attention matrix for variant {name!r}; have softmax, linear, polarity")


def _dbl(t):
    return None if t is None else t.double()


def row_entropy(a, mask=None):
    """Shannon entropy (nats) of each row of ``a`` (..., L, L) over its keys; 0 log 0 = 0.
    With ``mask`` (L,) bool only real keys count (padded ones carry no weight anyway)."""
    import torch

    if mask is not None:
        a = a[..., mask]
    logs = torch.where(a > 0, torch.log(a.clamp_min(torch.finfo(a.dtype).tiny)), torch.zeros_like(a))
    return -(a * logs).sum(-1)


def _checkpoint(run_dir: Path):
    """(state dict, description) of weights a run left beside its record, or None.

    ``checkpoint.pt`` (``lra.checkpoint``, kept by ``train(..., keep_checkpoint=True)``)
    holds the last weights under ``model`` and the best-validation ones, which the test
    accuracy is measured with, under ``best.state``: those are preferred. Other names
    of ``CHECKPOINT_NAMES`` may hold a bare state dict or one under ``model`` /
    ``state_dict``.
    """
    import torch

    for fname in CHECKPOINT_NAMES:
        p = Path(run_dir) / fname
        if not p.exists():
            continue
        blob = torch.load(p, map_location="cpu", weights_only=True)
        state, what = blob, p.name
        if isinstance(blob, dict):
            best = blob.get("best")
            if isinstance(best, dict) and isinstance(best.get("state"), dict):
                state, what = best["state"], f"best-val step {best.get('step')}"
            else:
                for key in ("model", "state_dict", "model_state"):
                    if isinstance(blob.get(key), dict):
                        state, what = blob[key], p.name
                        break
        # DDP-wrapped models save their parameters under "module."
        state = {k.removeprefix("module."): v for k, v in state.items()}
        return state, what
    return None


def _model_for(variant: str, task: str, runs: list[dict[str, Any]], vocab_size: int, seq_len: int, seed: int,
               protocol: str | None):
    """(model, how) for ``variant`` on ``task``: a run's trained weights when one left a
    checkpoint, else a fresh model of that run's (or the protocol's) config, seeded."""
    import torch

    import attention_zoo
    from lra import protocols
    from lra.config import RunConfig
    from lra.model import Classifier
    from tasks import get_task

    name, hp = attention_zoo.parse_spec(variant)
    want = _canonical(variant)
    same = [r for r in runs if r.get("task") == task and _canonical(r.get("variant", "")) == want]
    for r in sorted(same, key=lambda r: r.get("seed", 0)):
        ck = _checkpoint(Path(r["dir"]))
        if ck is None:
            continue
        cfg = RunConfig.from_dict({k: v for k, v in r["config"].items()
                                   if k in {f.name for f in dataclasses.fields(RunConfig)}})
        t = get_task(task)
        model = Classifier(cfg.model, vocab_size, seq_len, t.num_classes, t.num_docs,
                           t.mask_zero_default if cfg.mask_zero is None else cfg.mask_zero)
        try:
            model.load_state_dict(ck[0])
        except RuntimeError:
            continue
        return model.eval(), f"trained (seed {r.get('seed')}, {ck[1]})"
    base = next((r for r in runs if r.get("task") == task and (protocol is None or r.get("protocol") == protocol)),
                None)
    if base is not None:
        cfg = RunConfig.from_dict({k: v for k, v in base["config"].items()
                                   if k in {f.name for f in dataclasses.fields(RunConfig)}})
        cfg.model.attention, cfg.model.attention_hp = name, dict(hp)
        proto = cfg.protocol
    else:
        proto = protocol or "skyformer"
        cfg = protocols.resolve(task, proto, name, hp)
    t = get_task(task)
    torch.manual_seed(seed)
    model = Classifier(cfg.model, vocab_size, seq_len, t.num_classes, t.num_docs,
                       t.mask_zero_default if cfg.mask_zero is None else cfg.mask_zero)
    return model.eval(), f"untrained (fresh init, seed {seed}, {proto}-protocol model)"


def first_layer_maps(model, tokens, head: int = 0):
    """(A (L', L'), real-token mask (L',)) for one head of the first attention layer of a
    ``Classifier`` on ``tokens`` (L,) — L' = L plus one for a CLS token. The layer's input
    is captured with a forward pre-hook, so embedding, positions and pre-LN are the
    model's own."""
    import torch

    captured = {}
    attn = model.encoder.blocks[0].attn

    def hook(module, args):
        captured["x"], captured["mask"] = args[0], args[1]

    handle = attn.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model.eval()
            model(tokens[None].long())
    finally:
        handle.remove()
    x, mask = captured["x"][:1], captured["mask"][:1]
    a = attention_matrix(attn, x, mask)[0, head]  # (L', L')
    return a, mask[0]


def example_tokens(runs: list[dict[str, Any]], prefer: Sequence[str] = ("listops", "image", "pathfinder"),
                   split: str = "test", index: int = 0):
    """A real input: row ``index`` of ``split`` of the prepared cache a run of the first
    task in ``prefer`` trained on (``config.data_dir``), else of any prepared cache of
    those tasks under ``$LRA_DATA``. Returns (tokens (L,) tensor, task, vocab size,
    description) or None."""
    import torch

    from tasks.cache import list_prepared, open_prepared

    candidates = []
    for task in prefer:
        for r in runs:
            d = (r.get("config") or {}).get("data_dir")
            if r.get("task") == task and d and (Path(d) / "meta.json").exists():
                candidates.append(Path(d))
        try:
            candidates += [p.path for p in list_prepared() if p.meta.get("task") == task]
        except Exception:
            pass
    for path in dict.fromkeys(candidates):
        data = open_prepared(path)
        x, y = data.split(split)
        if len(y) <= index:
            continue
        row = np.asarray(x[index])
        if row.ndim == 2:  # two documents (retrieval): the first
            row = row[0]
        return (torch.from_numpy(row.astype(np.int64)), data.meta["task"], data.vocab_size,
                f"{data.meta['task']} {split}[{index}], label {int(y[index])}")
    return None


def plot_attention_maps(tokens, out: Path, *, task: str = "listops", runs: list[dict[str, Any]] | None = None,
                        variants: Sequence[str] = MAP_VARIANTS, head: int = 0, seed: int = 0,
                        vocab_size: int | None = None, seq_len: int | None = None, protocol: str | None = None,
                        input_note: str = "", max_shown: int = 256, shared_scale: bool = True,
                        name: str = "attention_maps") -> list[Path]:
    """Attention maps of one head of the first layer for ``variants`` on one real input
    ``tokens`` (L,) of ``task``, and the entropy of every query's row.

    Maps are the exact left-product matrices of ``attention_matrix`` (for polarity the
    x_sim weights); each variant's model has trained weights when one of ``runs`` left a
    checkpoint, else a fresh seeded initialisation (the panel title says which). Maps
    show the real tokens only, at most the first ``max_shown`` of them; entropies use
    every real key and query. ``shared_scale``: one colour scale for all maps (the 99.5th
    percentile of all weights tops it), else one per map.
    """
    import torch

    runs = runs or []
    tokens = torch.as_tensor(tokens).long().reshape(-1)
    seq_len = seq_len or int(tokens.shape[0])
    vocab_size = vocab_size or int(tokens.max()) + 1
    maps, ents, hows = {}, {}, {}
    for v in variants:
        model, how = _model_for(v, task, runs, vocab_size, seq_len, seed, protocol)
        a, m = first_layer_maps(model, tokens, head)
        real = m.nonzero().flatten()
        ents[v] = row_entropy(a[real], m).numpy()
        shown = real[:max_shown]
        maps[v] = a[shown][:, shown].numpy()
        hows[v] = how
        n_real = int(m.sum())
    all_vals = np.concatenate([mp.ravel() for mp in maps.values()])
    vmax_shared = float(np.quantile(all_vals, 0.995)) or float(all_vals.max())
    kinds = {v: hows[v].split(" (")[0] for v in variants}
    with _style():
        nv = len(variants)
        fig = _figure(WIDE_IN, 2.2)
        gs = fig.add_gridspec(1, nv + 1, width_ratios=[1] * nv + [1.25])
        axes = [fig.add_subplot(gs[0, i]) for i in range(nv)]
        im = None
        for i, (ax, v) in enumerate(zip(axes, variants)):
            vmax = vmax_shared if shared_scale else (float(np.quantile(maps[v], 0.995)) or float(maps[v].max()))
            im = ax.imshow(maps[v], cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest", aspect="equal")
            title = v if len(set(kinds.values())) == 1 else f"{v} ({kinds[v]})"
            ax.set_title(title, color=variant_color(v))
            ax.set_xlabel("key")
            if i == 0:
                ax.set_ylabel("query")
            ax.tick_params(length=2, labelsize=6)
            if not shared_scale:
                fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02).ax.tick_params(labelsize=6)
        if shared_scale and im is not None:
            cb = fig.colorbar(im, ax=axes, shrink=0.8, pad=0.01, aspect=22, extend="max")
            cb.set_label("attention weight", fontsize=7)
            cb.ax.tick_params(labelsize=6)
        ax = fig.add_subplot(gs[0, nv])
        uniform = math.log(n_real)
        lo = min(float(e.min()) for e in ents.values())
        bins = np.linspace(min(lo, uniform) - 0.02 * uniform, uniform * 1.005, 36)
        for v in variants:
            color = variant_color(v)
            ax.hist(ents[v], bins=bins, histtype="stepfilled", color=color, alpha=0.25, linewidth=0)
            ax.hist(ents[v], bins=bins, histtype="step", color=color, linewidth=0.9,
                    label=f"{v} ({ents[v].mean():.2f})")
        ax.axvline(uniform, color="#888888", linestyle="--", linewidth=0.8, label=f"uniform ({uniform:.2f})")
        ax.set_xlabel("row entropy (nats)")
        ax.set_ylabel("queries")
        ax.legend(loc="upper left", fontsize=6, title="mean entropy", title_fontsize=6, alignment="left")
        ax.set_ylim(top=ax.get_ylim()[1] * 1.6)  # room for the legend above the bars
        ax.grid(True, linewidth=0.4, color="#EEEEEE")
        ax.set_axisbelow(True)
        ax.set_box_aspect(1)
        groups: dict[str, list[str]] = {}
        for v in variants:
            groups.setdefault(hows[v], []).append(v)
        provenance = ("; ".join(f"{', '.join(vs)}: {h}" for h, vs in groups.items()) if len(groups) > 1
                      else f"all {next(iter(groups))}")
        provenance = "\n".join(textwrap.wrap(f"models: {provenance}", 150))
        cropped = f", first {max_shown} of {n_real} tokens shown" if n_real > max_shown else ""
        fig.suptitle(f"Layer 1, head {head}, one {task_title(task)} input"
                     f"{' (' + input_note + ')' if input_note else ''}{cropped}\n{provenance}",
                     fontsize=7, color="#333333")
        return _save(fig, out, name)


# ----------------------------------------------------------------------------- everything

FIGURES = ("accuracy", "bubble", "speed", "curves", "alpha", "attention_maps")


def plot_all(runs_root: Path, out_dir: Path, bench_json: list[Path] | None = None, *,
             only: str | Iterable[str] | None = None, protocol: str | None = None,
             published: str | None = "auto", tokens=None, task: str | None = None,
             note: Callable[[str], None] = print) -> list[Path]:
    """Every figure of ``FIGURES`` (or those named in ``only``) that the records under
    ``runs_root`` and the speed rows of ``bench_json`` have data for; each missing input
    skips its figure with a note. ``tokens``/``task``: the input of the attention maps
    (default: test row 0 of a prepared ListOps, else image, cache the runs used)."""
    wanted = [only] if isinstance(only, str) else list(only or FIGURES)
    unknown = sorted(set(wanted) - set(FIGURES))
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; valid: {', '.join(FIGURES)}")
    runs = records.load_runs(Path(runs_root)) if runs_root is not None and Path(runs_root).exists() else []
    frame = records_frame(runs)
    speed_rows, device = load_speed_rows(bench_json or [])
    out_dir = Path(out_dir)
    made: list[Path] = []

    def attempt(fig: str, needs: str | None, fn: Callable[[], list[Path]]) -> None:
        if fig not in wanted:
            return
        if needs:
            note(f"skip {fig}: {needs}")
            return
        try:
            made.extend(fn())
        except ValueError as e:  # "no data of that kind": say so, keep going
            note(f"skip {fig}: {e}")

    no_runs = None if not frame.empty else f"no finished runs under {runs_root}"
    no_speed = None if speed_rows else "no speed rows (pass --bench FILE from `lra bench speed --out`)"
    attempt("accuracy", no_runs, lambda: plot_accuracy(frame, out_dir, protocol=protocol, published=published,
                                                       note=note))
    attempt("bubble", no_runs or no_speed, lambda: plot_bubble(frame, speed_rows, out_dir, protocol=protocol,
                                                               device=device, note=note))
    attempt("speed", no_speed, lambda: plot_speed(speed_rows, out_dir, device=device, note=note))
    attempt("curves", no_runs, lambda: plot_curves(frame, out_dir, protocol=protocol, note=note))
    has_pol = not frame.empty and any(_alpha_of(v) is not None for v in frame.variant.unique())
    attempt("alpha", no_runs or (None if has_pol else "no polarity runs"),
            lambda: plot_alpha(frame, out_dir, protocol=protocol, published=published, note=note))
    example = None
    if "attention_maps" in wanted:
        if tokens is not None:
            example = (tokens, task or "listops", None, "given input")
        else:
            example = example_tokens(runs, prefer=(task,) if task else ("listops", "image", "pathfinder"))

    def maps() -> list[Path]:
        toks, t, vocab, desc = example
        return plot_attention_maps(toks, out_dir, task=t, runs=runs, vocab_size=vocab, protocol=protocol,
                                   input_note=desc)

    attempt("attention_maps", None if example else "no input (prepare a listops or image cache, or pass tokens)",
            maps)
    return made
