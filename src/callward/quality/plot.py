"""PNG plots of an analysis: per-stream jitter, loss and MOS over time (matplotlib, Agg).

Legends name streams by SSRC only, so a plot shared in a ticket carries no addresses.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from callward.errors import CaptureError, ConfigError, StoreError
from callward.quality import emodel_wb
from callward.quality.analysis import StreamReport
from callward.quality.playout import codec_for

__all__ = ["MAX_WINDOWS", "plot_streams", "png_bytes", "windowed_series"]


# One-second windows for ~28 hours. A capture whose records span more (one record with a
# bogus clock) would otherwise allocate gigabytes of per-window arrays before drawing anything.
MAX_WINDOWS = 100_000


def windowed_series(
    s: StreamReport, window_s: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(window start s, jitter ms, loss %, network MOS) per window of one stream.

    Packets are taken in arrival order (stable sort), whatever the record order of the
    capture: merged ring buffers and multi-interface pcapng files are not time-ordered, and
    RFC 3550 A.8 jitter is defined over packets as they arrive. Windows start at the earliest
    packet.

    Loss per window is the RFC 3550 §6.4.1 / A.3 interval loss on extended sequence numbers:
    expected = highest seq seen up to the end of the window − highest seq seen before it
    (the first packet's seq − 1 before the first window, A.1 base_seq), lost = expected −
    received, 0 when that is not positive (late or duplicate packets, as A.3 does). A gap
    that straddles a window edge is thus charged to the window where the next packet
    arrives instead of vanishing; a window with no packet expects nothing and shows 0 %.

    Raises ConfigError for a window that is not a positive number and CaptureError when the
    stream spans more than MAX_WINDOWS windows.
    """
    if not (math.isfinite(window_s) and window_s > 0):
        raise ConfigError(f"plot window must be a positive number of seconds, not {window_s}")
    if len(s.arrival_s) == 0 or s.clock_rate <= 0:
        z = np.zeros(0)
        return z, z, z, z
    order = np.argsort(s.arrival_s, kind="stable")
    t = np.asarray(s.arrival_s, dtype=np.float64)[order]
    seq = np.asarray(s.seq_ext, dtype=np.int64)[order]
    rtp_ts = np.asarray(s.rtp_ts)[order]
    # Capture clocks tick in nanoseconds at best: rounding the offsets to the ns keeps float
    # noise from putting a packet that sits exactly on a window edge on either side of it.
    span_s = float(t[-1] - t[0])
    if not math.isfinite(span_s) or span_s / window_s >= MAX_WINDOWS:
        raise CaptureError(
            f"stream {s.ssrc:#010x} spans {span_s:.0f} s, more than {MAX_WINDOWS} windows of "
            f"{window_s:g} s to plot (implausible capture timestamps?)"
        )
    rel_ns = np.rint((t - t[0]) * 1e9).astype(np.int64)
    win_ns = max(1, round(window_s * 1e9))
    w = rel_ns // win_ns
    nw = int(w[-1]) + 1
    transit = (t - rtp_ts / s.clock_rate) * 1000.0
    d = np.abs(np.diff(transit, prepend=transit[0]))
    jit = np.zeros(len(d))
    j = 0.0
    for i, v in enumerate(d.tolist()):  # RFC 3550 A.8 running estimate, for display only
        j += (v - j) / 16
        jit[i] = j
    cnt = np.bincount(w, minlength=nw)
    jmax = np.zeros(nw)
    np.maximum.at(jmax, w, jit)
    # Highest extended seq up to the end of each window (empty windows carry the previous
    # one), and the highest before each window: A.3's max_seq and expected_prior.
    hi = np.full(nw, np.iinfo(np.int64).min)
    np.maximum.at(hi, w, seq)
    hi_upto = np.maximum.accumulate(np.maximum(hi, seq[0] - 1))
    prior = np.concatenate(([seq[0] - 1], hi_upto[:-1]))
    exp = hi_upto - prior
    lost = exp - cnt
    loss = np.where((exp > 0) & (lost > 0), lost * 100.0 / np.maximum(exp, 1), 0.0)
    key = codec_for(-1, s.codec)
    mos = np.full(nw, np.nan)
    if key:
        delay = 40 + emodel_wb.frame_ms(key)
        by_loss: dict[float, float] = {}  # long calls repeat a few loss values: compute once
        for k in range(nw):
            ppl = float(loss[k])
            if ppl not in by_loss:
                by_loss[ppl] = emodel_wb.mos_for(key, s.bitrate_bps, loss=min(ppl, 100.0),
                                                 delay_ms=delay).mos  # fmt: skip
            mos[k] = by_loss[ppl]
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

    # Series first: a stream that cannot be windowed raises before a figure is left open.
    series = [(s, windowed_series(s, window_s)) for s in streams[:12]]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for s, (x, jit, loss, mos) in series:
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
    try:
        fig.savefig(out, format="png")
    except OSError as exc:  # our error, so `callward analyze --plot` exits 2 with one line
        raise StoreError(f"cannot write plot {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
