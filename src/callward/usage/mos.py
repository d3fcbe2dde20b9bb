"""MOS for a media setting under given network conditions, on one scale for every codec.

The optimiser and the demo ask one question: "what MOS does this codec, bitrate, ptime and FEC
give at this loss and delay?". :func:`estimate` answers it with the quality package's
:func:`~callward.quality.emodel_wb.mos_for` (ITU-T G.107.1 for Opus and other wideband
codecs, G.107 for G.711, both as MOS-CQE on one 1-4.5 scale), after two corrections that are
the sender's doing, not the codec's:

- **In-band FEC** (RFC 6716 §2.1.7): a lost frame is rebuilt from the next packet's LBRR copy,
  so it is only lost when that packet is lost too. With the loss model of G.107 (BurstR), the
  probability that a packet after a lost one is lost is ``1 - (1 - Ppl) / BurstR``; the
  residual loss is Ppl times that. With CBR the LBRR bits come out of the same budget, so the
  primary coding runs at ``bitrate x (1 - lbrr_share(loss))``; the share was measured with
  libopus (VBR size with FEC over size without, on espeak-ng speech, 12-24 kb/s:
  ``benchmarks/usage_mos_per_byte.py``): about 3 % at 1 % expected loss, 8 % at 10 %.
- **Delay**: mouth-to-ear = one-way network delay + packetization (ptime) + codec look-ahead
  (6.5 ms Opus, 0 G.711) + jitter buffer of twice the jitter; with FEC the buffer must also
  hold a packet until the next one arrives (ptime + jitter).

The optimiser only depends on the :data:`MosFunction` shape, so tests plug in their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from callward.errors import PolicyError

__all__ = ["MosEstimate", "MosFunction", "MosQuery", "estimate", "lbrr_share", "mouth_to_ear"]


def lbrr_share(loss_pct: float) -> float:
    """Share of a CBR Opus frame spent on LBRR at an expected loss (module docstring)."""
    return 0.03 + 0.005 * min(max(loss_pct, 0.0), 10.0)


_LOOKAHEAD_MS = {"opus": 6.5}


@dataclass(frozen=True, slots=True)
class MosQuery:
    codec: str  # opus | pcmu | pcma | g729 | amr-wb | g722
    bitrate: int
    ptime_ms: int
    fec: bool
    loss_pct: float  # packet loss on the path, before FEC
    delay_ms: float  # one-way mouth-to-ear delay (see :func:`mouth_to_ear`)
    burst_r: float = 1.0  # G.107 BurstR: 1 = random loss


@dataclass(frozen=True, slots=True)
class MosEstimate:
    mos: float
    model: str
    residual_loss_pct: float = 0.0


MosFunction = Callable[[MosQuery], "MosEstimate | None"]


def mouth_to_ear(codec: str, ptime_ms: int, fec: bool, rtt_ms: float, jitter_ms: float) -> float:
    """One-way delay budget of a setting (module docstring)."""
    buffer = max(2.0 * jitter_ms, ptime_ms + jitter_ms if fec else 0.0)
    return rtt_ms / 2 + ptime_ms + _LOOKAHEAD_MS.get(codec, 0.0) + buffer


def residual_loss(loss_pct: float, burst_r: float, fec: bool) -> float:
    if not fec or loss_pct <= 0:
        return loss_pct
    ppl = loss_pct / 100.0
    again = min(1.0, max(0.0, 1.0 - (1.0 - ppl) / burst_r))
    return 100.0 * ppl * again


def estimate(q: MosQuery) -> MosEstimate | None:
    """MOS-CQE for ``q``; None for a codec no installed model rates."""
    from callward.quality.emodel_wb import mos_for

    fec = q.fec and q.codec == "opus"
    loss = residual_loss(q.loss_pct, q.burst_r, fec)
    rate = q.bitrate * (1 - lbrr_share(q.loss_pct)) if fec else q.bitrate
    try:
        res = mos_for(q.codec, rate if q.codec == "opus" else None, loss, q.burst_r,
                      min(q.delay_ms, 10_000.0))  # fmt: skip
    except PolicyError:
        return None
    scale = "ITU-T G.107.1 (wideband)" if res.scale == "wb" else "ITU-T G.107 (narrowband)"
    return MosEstimate(res.mos, f"{scale}, Ie from {res.source}", loss)
