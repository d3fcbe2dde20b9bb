"""Shared by every test directory: puts benchmarks/ on sys.path so interop tests and benchmark
scripts drive real peers through one harness (benchmarks/peers.py). pytest runs with
--import-mode=importlib, which does not add test directories to sys.path itself."""

from __future__ import annotations

import sys
from pathlib import Path

_BENCHMARKS = str(Path(__file__).resolve().parent.parent / "benchmarks")
if _BENCHMARKS not in sys.path:
    sys.path.append(_BENCHMARKS)
