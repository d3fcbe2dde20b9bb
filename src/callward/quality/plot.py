"""PNG plots of an analysis: per-stream jitter, loss and MOS over time (matplotlib, Agg).

Legends name streams by SSRC only, so a plot shared in a ticket carries no addresses.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from callward.quality import emodel
from callward.quality.analysis import StreamReport
from callward.quality.playout import codec_for

__all__ = ["plot_streams", "png_bytes", "windowed_series"]


def windowed_series(
    s: StreamReport, window_s: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(window start s, jitter ms, loss %, network MOS) per window of one stream."""
    t = s.arrival_s
    if len(t) == 0 or s.clock_rate <= 0:
        z = np.zeros(0)
        return z, z, z, z
    transit = (t - s.rtp_ts / s.clock_rate) * 1000.0
    d = np.abs(np.diff(transit, prepend=transit[0]))
    jit = np.zeros(len(d))
    j = 0.0
    for i, v in enumerate(d.tolist()):  # RFC 3550 A.8 running estimate, for display only
        j += (v - j) / 16
        jit[i] = j
    w = np.floor((t - t[0]) / window_s).astype(np.int64)
    nw = int(w[-1]) + 1
    cnt = np.bincount(w, minlength=nw)
    jmax = np.zeros(nw)
    np.maximum.at(jmax, w, jit)
    seq = s.seq_ext
    lo = np.full(nw, np.iinfo(np.int64).max)
    hi = np.full(nw, np.iinfo(np.int64).min)
    np.minimum.at(lo, w, seq)
    np.maximum.at(hi, w, seq)
    exp = np.where(cnt > 0, hi - lo + 1, 0)
    loss = np.where(exp > 0, np.clip(exp - cnt, 0, None) * 100.0 / np.maximum(exp, 1), 0.0)
    key = codec_for(-1, s.codec)
    mos = np.full(nw, np.nan)
    if key:
        c = emodel.codec(key)
        for k in range(nw):
            r = emodel.compute(emodel.EModelInput(t=40 + c.frame_ms, ta=40 + c.frame_ms,
                                                  tr=2 * (40 + c.frame_ms), ie=c.ie, bpl=c.bpl,
                                                  ppl=float(loss[k])))  # fmt: skip
            mos[k] = r.mos
    starts = np.arange(nw) * window_s + float(t[0])
    return starts, jmax, loss, mos


def png_bytes(streams: list[StreamReport], window_s: float = 1.0) -> bytes:
    """The same figure as ``plot_streams`` as PNG bytes (for the dashboard to serve)."""
    buf = io.BytesIO()
    plot_streams(streams, buf, window_s)
    return buf.getvalue()


def plot_streams(
    streams: list[StreamReport], out: str | Path | io.BytesIO, window_s: float = 1.0
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for s in streams[:12]:
        x, jit, loss, mos = windowed_series(s, window_s)
        if len(x) == 0:
            continue
        label = f"SSRC {s.ssrc:#010x}"
        axes[0].plot(x, jit, label=label)
        axes[1].plot(x, loss, label=label)
        axes[2].plot(x, mos, label=label)
    axes[0].set_ylabel("jitter (ms)")
    axes[1].set_ylabel("loss (%)")
    axes[2].set_ylabel("MOS (network)")
    axes[2].set_ylim(1, 4.6)
    axes[2].set_xlabel("time since capture start (s)")
    if streams:
        axes[0].legend(fontsize="small", loc="upper right")
    fig.suptitle("callward analyze: per-stream quality over time")
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
