"""The attention registry: one decorator, one signature, typed hyperparameters.

Every variant is an ``nn.Module`` built as ``cls(dim, heads, max_len, hp)`` whose
forward maps ``(x: (B, L, C), mask: (B, L) bool, True = real token) -> (B, L, C)``
and owns its projections. ``hp`` is an instance of the variant's hyperparameter
dataclass, so ``build("polarity", alpha=5)`` is checked by name and type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from torch import nn


@dataclass(frozen=True)
class NoHP:
    """A variant with no hyperparameters."""


@dataclass(frozen=True)
class Variant:
    name: str
    cls: type[nn.Module]
    hparams: type
    time: str
    memory: str
    summary: str

    def defaults(self) -> dict[str, Any]:
        return dataclasses.asdict(self.hparams())

    def doc(self) -> str:
        return (self.cls.__doc__ or self.summary).strip()


REGISTRY: dict[str, Variant] = {}


class UnknownVariantError(ValueError):
    pass


class HyperparameterError(ValueError):
    pass


def register(
    name: str, hparams: type = NoHP, *, time: str = "O(L^2)", memory: str = "O(L^2)", summary: str = ""
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: ``@register("softmax", SoftmaxHP, time="O(L^2)", memory="O(L)")``."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in REGISTRY:
            raise ValueError(f"attention variant {name!r} is registered twice")
        first_paragraph = (cls.__doc__ or "").strip().split("\n\n")[0]
        doc = summary or " ".join(first_paragraph.split())
        REGISTRY[name] = Variant(name, cls, hparams, time, memory, doc)
        cls.variant_name = name
        return cls

    return deco


def get(name: str) -> Variant:
    _load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownVariantError(
            f"unknown attention {name!r}; valid: {', '.join(sorted(REGISTRY))}"
        ) from None


def names() -> list[str]:
    _load_all()
    return sorted(REGISTRY)


def _coerce(value: Any, typ: Any, key: str, variant: str) -> Any:
    """Turn CLI strings into the field's type; reject what does not fit."""
    origin = typing.get_origin(typ)
    if origin is typing.Literal:
        choices = typing.get_args(typ)
        if value not in choices:
            raise HyperparameterError(f"{variant}: {key} must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        return _coerce(value, args[0], key, variant)
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes"):
                    return True
                if value.lower() in ("0", "false", "no"):
                    return False
                raise ValueError
            return bool(value)
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if typ is float:
            return float(value)
        if typ is str:
            return str(value)
    except (TypeError, ValueError):
        raise HyperparameterError(
            f"{variant}: {key} must be {getattr(typ, '__name__', typ)}, got {value!r}"
        ) from None
    return value


def make_hparams(name: str, **hp: Any) -> Any:
    """Validated hyperparameter dataclass for ``name``; unknown keys list the valid ones."""
    variant = get(name)
    hints = typing.get_type_hints(variant.hparams)
    valid = {f.name for f in fields(variant.hparams)}
    unknown = sorted(set(hp) - valid)
    if unknown:
        raise HyperparameterError(
            f"{name}: unknown hyperparameter(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(valid)) or '(none)'}"
        )
    values = {k: _coerce(v, hints[k], k, name) for k, v in hp.items()}
    obj = variant.hparams(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except ValueError as e:
            raise HyperparameterError(f"{name}: {e}") from None
    return obj


def build(name: str, dim: int, heads: int, max_len: int, **hp: Any) -> nn.Module:
    """Build the attention module ``name`` for model width ``dim`` with ``heads`` heads."""
    if dim % heads:
        raise HyperparameterError(f"model dim {dim} is not divisible by {heads} heads")
    return get(name).cls(dim, heads, max_len, make_hparams(name, **hp))


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"polarity:alpha=5,backend=torch"`` -> ("polarity", {"alpha": "5", "backend": "torch"})."""
    name, _, rest = spec.partition(":")
    hp: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise HyperparameterError(f"{name}: expected key=value, got {item!r}")
        hp[key.strip()] = value.strip()
    return name.strip(), hp


def _load_all() -> None:
    # Importing the package registers every variant module.
    import attention_zoo  # noqa: F401
