"""MOS for a media setting under given network conditions, on one scale for every codec.

The planner's optimiser and the demo ask one question: "what MOS does this codec, bitrate,
ptime and FEC give at this loss and delay?". :func:`estimate` answers it with the quality
package's E-models: the wideband/Opus E-model (ITU-T G.107.1) when it is installed, which
rates G.711 and Opus on the same wideband scale, else the narrowband G.107 model for the
codecs G.113 gives values for (G.711). Codecs no installed model can rate return None rather
than a guess. The optimiser only depends on the :data:`MosFunction` shape, so tests and other
models plug in the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from callward.errors import PolicyError

__all__ = ["MosEstimate", "MosFunction", "MosQuery", "estimate"]


@dataclass(frozen=True, slots=True)
class MosQuery:
    codec: str  # opus | pcmu | pcma | g729 ...
    bitrate: int
    ptime_ms: int
    fec: bool
    loss_pct: float
    delay_ms: float  # one-way mouth-to-ear
    burst_r: float = 1.0  # G.107 BurstR: 1 = random loss


@dataclass(frozen=True, slots=True)
class MosEstimate:
    mos: float
    model: str


MosFunction = Callable[[MosQuery], MosEstimate | None]


def _wideband() -> Callable[..., object] | None:
    """The quality package's G.107.1 model, when that module exists at this commit."""
    for name in ("callward.quality.emodel_wb", "callward.quality.emodel_wideband"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        fn: Callable[..., object] | None = getattr(mod, "estimate_mos", None)
        if callable(fn):
            return fn
    return None


def estimate(q: MosQuery) -> MosEstimate | None:
    """MOS (CQE) for ``q``: G.107.1 when available, else G.107 for the codecs it knows."""
    wb = _wideband()
    if wb is not None:
        try:
            value = wb(q.codec, q.bitrate, q.ptime_ms, q.fec, q.loss_pct, q.delay_ms, q.burst_r)
        except PolicyError:
            value = None
        if isinstance(value, float | int):
            return MosEstimate(float(value), "ITU-T G.107.1 (wideband)")
    from callward.quality.emodel import quick

    name = {"pcmu": "g711", "pcma": "g711", "g729": "g729a"}.get(q.codec)
    if name is None:
        return None
    res = quick(name, min(q.loss_pct, 100.0), min(q.delay_ms, 10_000.0), q.burst_r)
    return MosEstimate(res.mos, "ITU-T G.107 (narrowband)")
