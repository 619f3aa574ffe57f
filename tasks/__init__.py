"""LRA tasks: one module per task (listops, text, retrieval, image, pathfinder).

Each task module registers itself with ``@register_task``; generators (``*_gen.py``),
the cache and the base classes are support modules.
"""

import importlib
import pkgutil

from tasks.base import SPLITS, TASKS, DataError, Task, UnknownTaskError, get_task, task_names

_SUPPORT = ("base", "cache")
for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in _SUPPORT and not _mod.name.endswith(("_gen", "_montage")) and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["SPLITS", "TASKS", "DataError", "Task", "UnknownTaskError", "get_task", "task_names"]
