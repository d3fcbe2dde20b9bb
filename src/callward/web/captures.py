"""Capture analysis for the dashboard: an uploaded pcap/pcapng/HEPv3 file → per-stream MOS,
jitter and loss over time (issue 6's plots "in the dashboard"), through the quality area's own
engine (:func:`callward.quality.report.analyze_capture`, :func:`callward.quality.plot`).

Privacy: a capture holds addresses, SIP URIs and (in RTP payload) voice. The upload lives only
in a private temporary directory for the duration of the analysis and is deleted after; the
answer names streams by SSRC and codec only, never an address, port or URI, like the PNG
legend of ``plot_streams``.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from callward.config import QualityConfig
from callward.quality.alerts import Thresholds
from callward.quality.analysis import StreamReport
from callward.quality.plot import plot_streams, windowed_series
from callward.quality.report import analyze_capture

__all__ = ["MAX_CAPTURE_BYTES", "MAX_POINTS", "analyze_upload"]

MAX_CAPTURE_BYTES = 32 * 1024 * 1024
MAX_POINTS = 600  # per series: a 10-minute call at 1 s windows; longer calls widen the window
_PLOT_LOCK = threading.Lock()  # pyplot keeps global state: one figure at a time


def _in_arrival_order(s: StreamReport) -> StreamReport:
    """The stream with its packet columns sorted by capture time.

    A capture file's records need not be in time order (merged or edited files); RFC 3550
    A.8 jitter is defined over packets in arrival order, and ``windowed_series`` indexes its
    windows from the first element, so out-of-order records are sorted first (stable)."""
    t = s.arrival_s
    if len(t) < 2 or bool(np.all(np.diff(t) >= 0)):
        return s
    idx = np.argsort(t, kind="stable")
    return dataclasses.replace(s, arrival_s=t[idx], rtp_ts=s.rtp_ts[idx], seq_ext=s.seq_ext[idx])


def _num(v: float) -> float | None:
    return None if math.isnan(v) or math.isinf(v) else round(float(v), 3)


def analyze_upload(
    data: bytes, cfg: QualityConfig, window_s: float = 1.0, plot: bool = False
) -> dict[str, Any]:
    """Analyse capture bytes; CaptureError (from the quality area) when they are no capture."""
    with tempfile.TemporaryDirectory(prefix="callward-upload-") as tmp:
        path = Path(tmp) / "capture"
        path.write_bytes(data)
        rep = analyze_capture(
            path,
            base_delay_ms=cfg.base_delay_ms,
            rtp_timeout_s=cfg.rtp_timeout_s,
            pdd_warn_s=cfg.pdd_warn_s,
            thresholds=Thresholds(cfg.mos_warn, cfg.mos_critical),
        )
        ordered = [_in_arrival_order(s) for s in rep.streams[:50]]
        streams = []
        for s in ordered:
            span = float(s.arrival_s[-1] - s.arrival_s[0]) if len(s.arrival_s) else 0.0
            w = max(window_s, span / MAX_POINTS)
            t, jit, loss, mos = windowed_series(s, w)
            t0 = float(t[0]) if len(t) else 0.0
            streams.append(
                {
                    "ssrc": f"{s.ssrc:#010x}",
                    "codec": s.codec,
                    "packets": s.stats.packets,
                    "lost": s.stats.lost,
                    "loss_pct": round(s.stats.loss_pct, 3),
                    "max_jitter_ms": round(s.stats.max_jitter, 3),
                    "mos": {k: (None if v is None else v.get("mos")) for k, v in s.mos.items()},
                    "alert": s.alert,
                    "window_s": w,
                    "series": {
                        "t_s": [round(float(x) - t0, 3) for x in t],
                        "jitter_ms": [_num(x) for x in jit],
                        "loss_pct": [_num(x) for x in loss],
                        "mos": [_num(x) for x in mos],
                    },
                }
            )
        out: dict[str, Any] = {
            "frames": rep.frames,
            "streams": streams,
            "calls": len(rep.calls),
            "problems": sorted({p.kind for c in rep.calls for p in c.problems}),
            "plot_png_base64": None,
        }
        if plot and ordered:
            png = Path(tmp) / "plot.png"
            with _PLOT_LOCK:
                plot_streams(ordered, png, window_s)
            out["plot_png_base64"] = base64.b64encode(png.read_bytes()).decode()
    return out
