"""What every LRA task declares, and the registry that finds tasks by name.

A task knows where its data comes from (``sources``), how it is tokenised and what
shape it has (classes, length, documents). ``build()`` turns a source into integer
arrays; ``tasks.cache.prepare`` stores them once per parameter set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from lra.config import coerce  # the one string-to-type rule of every --set

SPLITS = ("train", "val", "test")


class DataError(Exception):
    """Missing or malformed data; the message is one line a user can act on."""


class UnknownTaskError(ValueError):
    pass


@dataclass
class Progress:
    """A small indirection so tasks report progress without knowing about tqdm."""

    factory: Callable[..., Any] | None = None

    def bar(self, total: int | None, desc: str, unit: str = "it"):
        if self.factory is None:
            return _NullBar()
        return self.factory(total=total, desc=desc, unit=unit)


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


@dataclass
class Built:
    """What ``Task.build`` returns: arrays per split plus what to store beside them.

    x: (N, L) or (N, docs, L) integer tokens, 0 = pad; y: (N,) int64 labels.
    """

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    vocab_size: int
    files: dict[str, str] = field(default_factory=dict)  # name -> text (e.g. vocab.json)
    info: dict[str, Any] = field(default_factory=dict)  # extra meta (source details)


class Task:
    """Base class; subclasses set the class attributes and implement ``build``."""

    name: ClassVar[str]
    num_classes: ClassVar[int]
    num_docs: ClassVar[int] = 1
    # Parameters that change the prepared arrays; they name the cache folder.
    default_params: ClassVar[dict[str, Any]] = {}
    # "generate", "hub" or a local path kind; the first is the default source.
    sources: ClassVar[tuple[str, ...]] = ()
    # LRA masks keys with ``input > 0`` in every task, pixels included (a black pixel is
    # then treated as padding). Kept as the default for fidelity; ``--set data.mask_zero=false``
    # treats every position as real (images only have no padding).
    mask_zero_default: ClassVar[bool] = True
    how_to_get: ClassVar[str] = ""

    def params(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        # ``size``: at most this many rows per split (0 = all), for quick runs and tests.
        # Generators make only what is needed (``apply_size``); real data is subsampled
        # with a fixed seed after reading, so a class-sorted file still gives every class.
        params = {**self.default_params, "size": 0}
        for key, value in self.typed(overrides or {}).items():
            if key not in params:
                raise DataError(
                    f"task {self.name}: unknown data parameter {key!r}; valid: {', '.join(sorted(params))}"
                )
            params[key] = value
        if params["size"] < 0:
            raise DataError(f"task {self.name}: size must be >= 0 (0 = every row), got {params['size']}")
        if params["size"]:
            self.apply_size(params)
        self.check_params(params)
        return params

    def typed(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Data parameters given as strings (``--set data.contour_length=6``) take the type of
        the parameter's default, so a run names the same data, and hashes the same, however it
        was given; unknown keys pass through untouched (``params`` rejects them)."""
        defaults = {**self.default_params, "size": 0}
        return {key: value if defaults.get(key) is None else coerce(value, type(defaults[key]), f"data.{key}")
                for key, value in overrides.items()}

    def apply_size(self, params: dict[str, Any]) -> None:
        """Generators shrink what they make to ``params["size"]`` rows per split."""

    def check_params(self, params: dict[str, Any]) -> None:
        if int(params.get("seq_len", 1)) < 1:
            raise DataError(f"task {self.name}: seq_len must be >= 1")
        if params.get("pad_to") and params["pad_to"] < params["seq_len"]:
            raise DataError(f"task {self.name}: pad_to must be 0 or at least seq_len ({params['seq_len']}), "
                            f"got {params['pad_to']} (0 keeps rows at seq_len)")

    def seq_len(self, params: dict[str, Any]) -> int:
        """Width of the prepared rows: ``seq_len``, or ``pad_to`` for tasks that cut at
        ``seq_len`` and then zero-pad (the Skyformer code's Text and Retrieval: 4,000 -> 4,096)."""
        return max(int(params["seq_len"]), int(params.get("pad_to") or 0))

    def default_source(self) -> str:
        return self.sources[0]

    def build(self, params: dict[str, Any], source: str, progress: Progress) -> Built:
        raise NotImplementedError


TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} registered twice")
    TASKS[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    import tasks  # noqa: F401  (registers every task module)

    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; valid: {', '.join(sorted(TASKS))}") from None


def task_names() -> list[str]:
    import tasks  # noqa: F401

    return sorted(TASKS)


def pad_rows(rows: list[list[int]] | list[np.ndarray], length: int, dtype: np.dtype) -> np.ndarray:
    """Right-pad with 0 (and truncate) a list of token id sequences into (N, length)."""
    out = np.zeros((len(rows), length), dtype=dtype)
    for i, r in enumerate(rows):
        r = r[:length]
        out[i, : len(r)] = r
    return out


def token_dtype(vocab_size: int) -> np.dtype:
    if vocab_size <= 256:
        return np.dtype(np.uint8)
    if vocab_size <= 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)
