"""Lazy attributes for a package (PEP 562): a name loads its submodule on first use.

The CLI registers every command without importing pandas, DuckDB or SciPy, so each command starts fast.
"""

from __future__ import annotations

import importlib
import sys


def lazy_getattr(package: str, names: dict[str, str]):
    """A module ``__getattr__`` for ``package``: ``names`` maps an attribute to the submodule defining it."""

    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
            setattr(sys.modules[package], name, value)  # cached: later lookups skip this function
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
