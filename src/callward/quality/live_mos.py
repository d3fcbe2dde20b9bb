"""MOS per playout model from a live leg's summary statistics: the relay's MOS estimator.

A relay sees loss, interarrival jitter (RFC 3550 A.8) and RTT per leg, not the arrival times
that ``playout.py`` replays for a capture. To still rate each receiver model, the transit
delay is modelled as Gaussian: for consecutive transits the mean |D| that RFC 3550 jitter
tracks is 2σ/√π, so σ = J·√π/2. Then, with Q the normal tail:

- ``network``: the measured loss; delay = one-way network delay + codec frame;
- ``fixed50`` / ``fixed200``: the offset is set by the first packet (on average the mean
  transit) plus the depth d, so a share Q(d/σ) arrives late; buffer delay d;
- ``adaptive`` (the media plane's ``AdaptiveBuffer`` defaults: 98th percentile of a 300-packet
  window + 5 ms above the window minimum): late share Q(z98 + 5/σ), buffer delay
  (z98 + m300)·σ + 5 ms clamped to [10, 400] ms, where m300 ≈ 2.97 is the expected maximum
  deviation below the mean in 300 Gaussian samples.

Late packets add to the loss (as random loss) and the buffer delay to the one-way delay; the
E-model is :func:`callward.quality.emodel_wb.mos_for` (G.107, or G.107.1 for wideband codecs).
One-way network delay is RTT/2 when RTCP measured it, else ``base_delay_ms``.
"""

from __future__ import annotations

import math

from callward.errors import CallwardError
from callward.quality import emodel_wb

__all__ = ["late_share", "playout_mos"]

_Z98 = 2.0537
_M300 = 2.97


def _q(x: float) -> float:
    """Upper tail of the standard normal distribution."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def late_share(model: str, jitter_ms: float) -> tuple[float, float]:
    """(late fraction, buffer delay ms) of a playout model under jitter J (see module doc)."""
    sigma = max(jitter_ms, 0.0) * math.sqrt(math.pi) / 2.0
    if model in ("fixed50", "fixed200"):
        depth = 50.0 if model == "fixed50" else 200.0
        return (_q(depth / sigma) if sigma > 0 else 0.0), depth
    if model == "adaptive":
        delay = min(max((_Z98 + _M300) * sigma + 5.0, 10.0), 400.0)
        late = _q(_Z98 + 5.0 / sigma) if sigma > 0 else 0.0
        return late, delay
    return 0.0, 0.0


def playout_mos(
    codec: str,
    loss_pct: float,
    jitter_ms: float,
    rtt_ms: float | None,
    *,
    base_delay_ms: float = 40.0,
    bitrate_bps: float | None = None,
) -> dict[str, float]:
    """{playout model: MOS} for one leg; {} for a codec the E-model has no values for.

    The signature (codec, loss %, jitter ms, RTT ms) is the relay's ``MosEstimator``.
    """
    key = emodel_wb.codec_key(codec.split("/")[0])
    if key is None:
        return {}
    one_way = rtt_ms / 2.0 if rtt_ms is not None and rtt_ms >= 0 else base_delay_ms
    base = one_way + emodel_wb.frame_ms(key)
    loss = min(max(loss_pct, 0.0), 100.0)
    out: dict[str, float] = {}
    for model in ("network", "fixed50", "fixed200", "adaptive"):
        late, buf = late_share(model, jitter_ms)
        # Late discards happen among the packets that arrived: they add (1 − loss)·late.
        eff = min(loss + (100.0 - loss) * late, 100.0)
        try:
            m = emodel_wb.mos_for(key, bitrate_bps, eff, 1.0, min(base + buf, 10_000.0))
        except CallwardError:
            return {}
        out[model] = round(m.mos, 2)
    return out
