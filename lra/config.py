"""Typed configs for a run: model, optimisation, data. Protocols fill them (lra/protocols.py)."""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal


class ConfigError(ValueError):
    pass


@dataclass
class ModelConfig:
    layers: int = 2
    dim: int = 64
    heads: int = 2
    ffn: int = 128
    dropout: float = 0.1
    # mean: over the real tokens; mean_padded: padded positions zeroed, then the mean over the
    # whole padded length (the Skyformer code's MEAN pooling); cls: a prepended CLS token
    pooling: Literal["mean", "mean_padded", "cls"] = "mean"
    head_hidden: int = 128
    attention: str = "softmax"
    attention_hp: dict[str, Any] = field(default_factory=dict)
    # std of the token embedding's normal init; None keeps nn.Embedding's N(0, 1) (the Skyformer
    # code draws N(0, 0.02^2), as for its positions)
    embed_std: float | None = None


# Fields added after run records existed, with the value every earlier run had: left out of a
# config's dict (config.json and the hash) while they hold it, so earlier records keep their
# identity and the same command still finds them.
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"model": {"embed_std": None}, "train": {"best_rule": "after"}}


@dataclass
class TrainConfig:
    steps: int = 50000
    batch_size: int = 32
    lr: float = 1e-4
    warmup: int = 1000
    # onecycle: torch OneCycleLR with linear annealing (warm-up fraction = warmup/steps);
    # rsqrt / cosine: LRA's JAX "linear_warmup * rsqrt_decay" / "* cosine_decay".
    schedule: Literal["onecycle", "rsqrt", "cosine", "constant"] = "onecycle"
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-6
    weight_decay: float = 0.0
    clip_value: float = 1.0  # clip gradients by value; 0 disables
    clip_norm: float = 0.0  # clip by global norm; 0 disables
    eval_every: int = 500
    eval_batches: int = 62  # 0 = the whole validation split
    best_after: float = 0.2  # keep best-val weights only after this fraction of training
    # after: the best validation among the evaluations from best_after on; overall (the Skyformer
    # code's main.py): the best is tracked from the first evaluation and weights are kept only
    # when a step past best_after beats every evaluation before it; if none does, the final
    # model is tested
    best_rule: Literal["after", "overall"] = "after"
    amp: bool = True  # bf16 autocast on CUDA (CPU runs in float32)
    # Replay forward + backward from a CUDA graph (lra/graphs.py): single-GPU CUDA runs with
    # graph-safe modules; elsewhere, or if capture fails, eager steps.
    cuda_graph: bool = True


@dataclass
class RunConfig:
    task: str
    protocol: str = "skyformer"
    seed: int = 0
    source: str | None = None  # None: the task's default source
    data: dict[str, Any] = field(default_factory=dict)  # task data parameters (seq_len, ...)
    mask_zero: bool | None = None  # None: the task's default (LRA: input == 0 is padding)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for section, fields_ in LEGACY_DEFAULTS.items():
            for key, legacy in fields_.items():
                if d[section].get(key, legacy) == legacy:
                    d[section].pop(key, None)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        d = dict(d)
        d["model"] = ModelConfig(**d.get("model", {}))
        d["train"] = TrainConfig(**d.get("train", {}))
        return cls(**d)

    def hash(self) -> str:
        """Identity of the resolved config (what the run computes), for resumption and skipping."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def variant_label(self) -> str:
        """``polarity:alpha=5`` style label: the variant plus the hyperparameters that differ from
        the protocol's for it (``nystromformer`` under skyformer is its conv-free Nystromformer)."""
        from lra.protocols import attention_defaults

        defaults = attention_defaults(self.protocol, self.model.attention)
        hp = {k: v for k, v in self.model.attention_hp.items() if k not in defaults or defaults[k] != v}
        if not hp:
            return self.model.attention
        return self.model.attention + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in sorted(hp.items()))


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def coerce(value: Any, typ: Any, key: str) -> Any:
    """A ``--set`` string as ``typ`` (bool words, integral numbers, literals, optional str/bool);
    other values pass unchanged. One bad value is one ``ConfigError`` line naming ``key``."""
    origin = typing.get_origin(typ)
    if origin is Literal:
        if value not in typing.get_args(typ):
            raise ConfigError(f"{key} must be one of {list(typing.get_args(typ))}, got {value!r}")
        return value
    if not isinstance(value, str):
        return value
    try:
        if typ is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            f = float(value)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if typ is float:
            return float(value)
    except ValueError:
        raise ConfigError(f"{key} must be {typ.__name__}, got {value!r}") from None
    if typ in (bool | None, typing.Optional[bool]):
        return coerce(value, bool, key) if value.lower() != "none" else None
    if typ in (str | None, typing.Optional[str]):
        return None if value.lower() == "none" else value
    if typ in (float | None, typing.Optional[float]):
        return None if value.lower() == "none" else coerce(value, float, key)
    return value


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Apply ``{"train.lr": "1e-3", "model.layers": 4, "data.seq_len": 512}`` (strings coerced).

    ``data.*`` keys are checked by the task; ``model.attention_hp.*`` by the registry.
    """
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section == "data" and name:
            cfg.data[name] = value
            continue
        if section == "model" and name.startswith("attention_hp."):
            cfg.model.attention_hp[name.split(".", 1)[1]] = value
            continue
        target = {"model": cfg.model, "train": cfg.train}.get(section)
        if target is None and not name:
            target, name = cfg, section
        if target is None:
            raise ConfigError(f"unknown config key {key!r}; sections: model, train, data, or top-level fields")
        valid = {f.name: f for f in fields(target)}
        if name not in valid or name in ("model", "train", "data"):
            raise ConfigError(f"unknown config key {key!r}; valid in {section or 'run'}: {', '.join(sorted(valid))}")
        hints = typing.get_type_hints(type(target))
        setattr(target, name, coerce(value, hints[name], key))
    return cfg


def check(cfg: RunConfig) -> None:
    """Impossible hyperparameters fail here, before any work starts."""
    m, t = cfg.model, cfg.train
    problems = []
    for name in ("layers", "dim", "heads", "ffn", "head_hidden"):
        if getattr(m, name) < 1:
            problems.append(f"model.{name} must be >= 1")
    if m.dim % max(m.heads, 1):
        problems.append(f"model.dim {m.dim} is not divisible by model.heads {m.heads}")
    if not 0 <= m.dropout < 1:
        problems.append("model.dropout must be in [0, 1)")
    if m.embed_std is not None and not m.embed_std > 0:
        problems.append("model.embed_std must be > 0 (or none: nn.Embedding's N(0, 1))")
    for name in ("steps", "batch_size", "eval_every"):
        if getattr(t, name) < 1:
            problems.append(f"train.{name} must be >= 1")
    if t.lr <= 0:
        problems.append("train.lr must be > 0")
    if t.warmup < 0 or (t.schedule == "onecycle" and t.warmup >= t.steps):
        problems.append(f"train.warmup must be >= 0 and below train.steps ({t.steps})")
    if not 0 <= t.best_after < 1:
        problems.append("train.best_after must be in [0, 1)")
    if t.eval_batches < 0:
        problems.append("train.eval_batches must be >= 0")
    if problems:
        raise ConfigError("; ".join(problems))


def kv_pairs(items: Iterable[str], what: str = "--set") -> dict[str, str]:
    """['a=1', 'b.c=x'] -> {'a': '1', 'b.c': 'x'}; an item without '=' or a key is a ConfigError
    naming the option ``what``."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{what} expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def split_specs(text: str) -> list[str]:
    """'softmax,polarity:alpha=3,beta=1,linear' -> ['softmax', 'polarity:alpha=3,beta=1', 'linear']:
    a 'k=v' item without ':' continues the previous spec (as ``lra bench --attention``)."""
    specs: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if "=" in item and ":" not in item and specs:
            specs[-1] += "," + item
        elif item:
            specs.append(item)
    return specs


__all__ = ["ConfigError", "ModelConfig", "RunConfig", "TrainConfig", "apply_overrides", "check", "kv_pairs",
           "split_specs"]
