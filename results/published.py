"""Published LRA numbers as data: one CSV per source under ``results/published/``.

Each CSV opens with ``# source: ...`` / ``# values: ...`` lines (the citation and what
the numbers are), then a header in the source's own column order. Every row carries
the source's model name (``model``), our variant label (``variant``) and the protocol
the source's numbers correspond to (``protocol``). Values are kept exactly as printed;
``load`` only renames the task columns to our task names and records the source's
column order in ``frame.attrs["source_order"]``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import pandas as pd

TASKS = ("listops", "text", "retrieval", "image", "pathfinder")
PUBLISHED_DIR = Path(__file__).resolve().parent / "published"
_ID_COLUMNS = ["model", "variant", "protocol"]
# Hyperparameters that pick an implementation, not the function computed: ignored when
# matching our runs to published rows (polarity:alpha=3,backend=torch is PolaFormer a=3).
_IMPLEMENTATION_HP = {"backend"}
# Variants computing the same function as another one under a different implementation.
_SAME_MATH = {"softmax_naive": "softmax"}


@dataclass(frozen=True)
class Source:
    name: str
    file: str
    citation: str
    protocol: str  # our protocol that the numbers correspond to
    kind: str  # "accuracy" (test accuracy, %), "hours" (training time), "speed" (steps/s and GB)

    @property
    def path(self) -> Path:
        return PUBLISHED_DIR / self.file


_LRA = ("Tay, Dehghani, Abnar, Shen, Bahri, Pham, Rao, Yang, Ruder, Metzler. Long Range Arena: "
        "A Benchmark for Efficient Transformers. ICLR 2021 (arXiv:2011.04006)")
_SKY = ("Chen, Zeng, Ji, Yang. Skyformer: Remodel Self-Attention with Gaussian Kernel and Nystrom Method. "
        "NeurIPS 2021 (code: pkuzengqi/Skyformer)")

SOURCES: dict[str, Source] = {
    "lra": Source("lra", "lra_table1.csv", f"{_LRA}, Table 1.", "lra", "accuracy"),
    "lra_speed": Source("lra_speed", "lra_table2.csv", f"{_LRA}, Table 2.", "lra", "speed"),
    "polaformer": Source(
        "polaformer", "polaformer.csv",
        "PolaFormer official repository README, LRA table (an earlier revision carried the full table). "
        "Meng et al., PolaFormer: Polarity-aware Linear Attention for Vision Transformers, ICLR 2025. "
        "Skyformer PyTorch protocol.",
        "skyformer", "accuracy"),
    "skyformer": Source("skyformer", "skyformer_table1.csv", f"{_SKY}, Table 1.", "skyformer", "accuracy"),
    "skyformer_hours": Source("skyformer_hours", "skyformer_table2.csv", f"{_SKY}, Table 2.", "skyformer", "hours"),
    "nystromformer": Source(
        "nystromformer", "nystromformer.csv",
        "mlpen/Nystromformer repository, LRA/README.md results table. Xiong et al., Nystromformer: "
        "A Nystrom-Based Algorithm for Approximating Self-Attention, AAAI 2021.",
        "nystromformer", "accuracy"),
}
# The accuracy tables ``lra table --compare`` accepts.
COMPARE = ("polaformer", "lra", "skyformer", "nystromformer")


def _source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown published source {name!r}; valid: {', '.join(SOURCES)}") from None


@lru_cache(maxsize=None)
def _read(name: str) -> tuple[dict[str, str], pd.DataFrame]:
    src = _source(name)
    meta: dict[str, str] = {}
    body = []
    for line in src.path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            meta[key.strip()] = value.strip()
        elif line.strip():
            body.append(line)
    raw = pd.read_csv(io.StringIO("\n".join(body)), dtype={c: str for c in _ID_COLUMNS})
    return meta, raw


def read_raw(name: str) -> pd.DataFrame:
    """The CSV as stored: the source's column names and order, plus ``model, variant, protocol``."""
    meta, raw = _read(name)
    out = raw.copy()
    out.attrs.update(name=name, citation=meta.get("source", ""), values=meta.get("values", ""))
    return out


def load(name: str) -> pd.DataFrame:
    """An accuracy or hours source in our task naming: ``model, variant, protocol``, then
    the tasks (and ``avg`` where the source gives one) in the source's column order.

    ``frame.attrs``: ``source_order`` (our task names in the source's order, ``avg``
    excluded), ``citation``, ``name``, ``kind``.
    """
    src = _source(name)
    if src.kind == "speed":
        raise ValueError(f"{name!r} is a speed table; use load_speed()")
    meta, raw = _read(name)
    renames = {c: c.lower() for c in raw.columns if c not in _ID_COLUMNS}
    unknown = sorted(set(renames.values()) - {*TASKS, "avg"})
    if unknown:
        raise ValueError(f"{src.file}: unexpected column(s) {', '.join(unknown)}")
    frame = raw.rename(columns=renames)
    frame.attrs.update(name=name, citation=meta.get("source", src.citation), kind=src.kind,
                       source_order=[renames[c] for c in raw.columns if c in renames and renames[c] != "avg"])
    return frame


def source_order(name: str) -> list[str]:
    """Our task names in the order the source printed its columns."""
    return list(load(name).attrs["source_order"])


def load_speed(name: str = "lra_speed") -> pd.DataFrame:
    """LRA Table 2 in long form: one row per model and length, with ``speed_rel`` and
    ``memory_rel`` relative to the Transformer row (as our ``lra bench speed`` rows).

    ``length`` maps the paper's 1K..4K onto 1024..4096, the lengths ``lra bench speed`` uses.
    """
    meta, raw = _read(name)
    rows = []
    for _, r in raw.iterrows():
        for col in raw.columns:
            if not col.startswith("steps_per_s_"):
                continue
            label = col.removeprefix("steps_per_s_")
            rows.append({"model": r["model"], "variant": r["variant"], "protocol": r["protocol"],
                         "length_label": label, "length": int(label.rstrip("K")) * 1024,
                         "steps_per_s": float(r[col]), "memory_gb": float(r[f"memory_GB_{label}"])})
    frame = pd.DataFrame(rows)
    base = frame[frame.variant == "softmax"].set_index("length")
    frame["speed_rel"] = frame.steps_per_s / frame.length.map(base.steps_per_s)
    frame["memory_rel"] = frame.memory_gb / frame.length.map(base.memory_gb)
    frame.attrs.update(name=name, citation=meta.get("source", ""))
    return frame


def _resolved(label: str) -> tuple[str, dict] | None:
    """``polarity:alpha=5`` -> ("polarity", every hyperparameter with defaults filled in)."""
    import dataclasses

    import attention_zoo

    try:
        name, hp = attention_zoo.parse_spec(label)
        name = _SAME_MATH.get(name, name)
        values = dataclasses.asdict(attention_zoo.make_hparams(name, **hp))
    except Exception:  # a label from another version of the zoo: only exact matches then
        return None
    return name, {k: v for k, v in values.items() if k not in _IMPLEMENTATION_HP}


def match_variant(label: str, published: Iterable[str]) -> str | None:
    """The published variant label that computes the same function as our ``label``:
    the same label, else the same variant with the same hyperparameters once defaults
    are filled in and implementation choices (``backend``) are ignored."""
    published = list(published)
    if label in published:
        return label
    ours = _resolved(label)
    if ours is None:
        return None
    for candidate in published:
        if _resolved(candidate) == ours:
            return candidate
    return None
