"""Lazy package exports (PEP 562), shared by ``callward.sip``, ``callward.rtp`` and
``callward.quality``: a package keeps its imports under ``TYPE_CHECKING`` (for mypy and
readers), lists ``name → module`` in a table, and sets ``__getattr__ = exports(__name__, table)``.
Importing one submodule then no longer loads the whole package."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["exports"]


def exports(package: str, home: dict[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: loads ``home[name]`` on first use."""

    def __getattr__(name: str) -> Any:
        module = home.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    return __getattr__
