"""The attention zoo: every variant registered by name behind one signature.

``build(name, dim, heads, max_len, **hp)`` makes a module mapping
``(x: (B, L, C), mask: (B, L) bool) -> (B, L, C)``. Every module of this package
(except the registry and the kernels) holds variants and is imported here, so adding
a variant is adding a file.
"""

import importlib
import pkgutil

from attention_zoo.registry import REGISTRY, build, get, make_hparams, names, parse_spec

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("registry", "kernels", "common"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["REGISTRY", "build", "get", "make_hparams", "names", "parse_spec"]
