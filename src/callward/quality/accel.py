"""The optional C accelerator of the capture path (``_accel.c``), or None.

Built by setup.py when a C compiler and Python.h are present; ``CALLWARD_PURE_PYTHON=1`` (at
import or at build time) keeps everything on the pure Python/numpy code, which is the tested
reference (tests/quality/test_accel.py compares both on random inputs).
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["ACCEL"]

_API = 2


def _load() -> ModuleType | None:
    if os.environ.get("CALLWARD_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from callward.quality import _accel
    except ImportError:
        return None
    if getattr(_accel, "API_VERSION", None) != _API:
        return None  # built from another version of _accel.c: reinstall to rebuild
    module: ModuleType = _accel
    return module


ACCEL: ModuleType | None = _load()
