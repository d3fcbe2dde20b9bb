"""Shared by every test directory: puts benchmarks/ on sys.path so interop tests and benchmark
scripts drive real peers through one harness (benchmarks/peers.py). pytest runs with
--import-mode=importlib, which does not add test directories to sys.path itself."""

from __future__ import annotations

import sys
from pathlib import Path

_BENCHMARKS = str(Path(__file__).resolve().parent.parent / "benchmarks")
if _BENCHMARKS not in sys.path:
    sys.path.append(_BENCHMARKS)

# Hypothesis' default 200 ms per-example deadline measures the machine, not the code: on a busy
# 2-core CI box it fails fuzz tests that pass alone. Tests that mean a time bound set their own
# `deadline=` (those still apply); the rest run without one.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("callward", deadline=None)
_hypothesis_settings.load_profile("callward")
