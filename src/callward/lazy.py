"""Lazy package exports (PEP 562), shared by ``callward.sip``, ``callward.rtp`` and
``callward.quality``.

A package lists its exports once, as imports under ``if TYPE_CHECKING:`` (what mypy and readers
see), names them in ``__all__``, and sets ``__getattr__ = exports(__name__)``. On the first
lookup of a name the package's own source is read (``ast``) to find which module that import
block takes it from; only that module is then imported. So importing one submodule no longer
loads the whole package, and there is no second name → module table to keep in step.
``tests/test_lazy_exports.py`` checks that every name in each ``__all__`` resolves.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["exports", "type_checking_imports"]


def type_checking_imports(source: str) -> dict[str, str]:
    """``name → module`` of every ``from module import name`` under ``if TYPE_CHECKING:``."""
    home: dict[str, str] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name)):
            continue
        if node.test.id != "TYPE_CHECKING":
            continue
        for imp in node.body:
            if isinstance(imp, ast.ImportFrom) and imp.module and imp.level == 0:
                for alias in imp.names:
                    home[alias.asname or alias.name] = imp.module
    return home


def exports(package: str) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: loads a name from its home module on first
    use, the home being read from the package's ``if TYPE_CHECKING:`` imports."""
    table: dict[str, str] = {}

    def __getattr__(name: str) -> Any:
        if not table:
            spec = sys.modules[package].__spec__
            loader = spec.loader if spec is not None else None
            get_source = getattr(loader, "get_source", None)
            source = get_source(package) if get_source is not None else None
            if source is None:  # no source loader: read the file itself
                path = sys.modules[package].__file__
                source = Path(path).read_text(encoding="utf-8") if path else ""
            table.update(type_checking_imports(source))
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    return __getattr__
