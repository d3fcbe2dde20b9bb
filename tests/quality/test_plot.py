"""quality.plot: per-window series in arrival order, RFC 3550 A.3 interval loss, CLI errors.

Expected values are worked out by hand from the synthetic capture's ground truth (RtpSpec:
20 ms packets, seq = 1000 + index, index i captured at i x 20 ms, so one-second windows hold
indexes 50k .. 50k+49).
"""

from __future__ import annotations

import dataclasses
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from callward.cli import app, main
from callward.errors import CallwardError
from callward.quality.analysis import StreamReport, collect, stream_reports
from callward.quality.plot import plot_streams, windowed_series
from callward.quality.synth import RtpSpec, rtp_frames, write_pcap

runner = CliRunner()


def _report(tmp_path: Path, spec: RtpSpec, shuffle_seed: int | None = None) -> StreamReport:
    frames = rtp_frames(spec)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(frames)  # records out of time order in the file
    p = tmp_path / "c.pcap"
    write_pcap(p, frames)
    reps = stream_reports(collect(p))
    assert len(reps) == 1
    return reps[0]


# --- bug 2: gaps at window edges ------------------------------------------------------------


def test_burst_filling_one_whole_window_is_charged_to_the_next(tmp_path: Path) -> None:
    # Indexes 50..99 (all of second 1) lost. Window 0: seq 1000..1049, expected 1049-999 = 50,
    # received 50 -> 0 %. Window 1: no packet, nothing expected -> 0 %. Window 2: highest
    # 1149, highest before 1049 -> expected 100, received 50 -> 50 %. Window 3: 1199-1149 =
    # 50 expected, 50 received -> 0 %.
    s = _report(tmp_path, RtpSpec(count=200, bursts=[(50, 50)]))
    x, _jit, loss, mos = windowed_series(s, 1.0)
    assert x.tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert loss.tolist() == pytest.approx([0.0, 0.0, 50.0, 0.0])
    assert mos[2] < mos[0]


def test_loss_at_window_start(tmp_path: Path) -> None:
    # Indexes 50..74 lost: window 1 receives 1075..1099; highest before is 1049 -> expected
    # 50, received 25 -> 50 %.
    s = _report(tmp_path, RtpSpec(count=200, bursts=[(50, 25)]))
    _x, _jit, loss, _mos = windowed_series(s, 1.0)
    assert loss.tolist() == pytest.approx([0.0, 50.0, 0.0, 0.0])


def test_loss_at_window_end(tmp_path: Path) -> None:
    # Indexes 25..49 lost (end of window 0): window 0 expects 1024-999 = 25 and gets 25 -> 0 %;
    # the gap shows where the next packet arrives: window 1 expects 1099-1024 = 75, gets 50
    # -> 25/75 = 33.3 %.
    s = _report(tmp_path, RtpSpec(count=200, bursts=[(25, 25)]))
    _x, _jit, loss, _mos = windowed_series(s, 1.0)
    assert loss.tolist() == pytest.approx([0.0, 100 / 3, 0.0, 0.0])


def test_mid_window_loss_unchanged(tmp_path: Path) -> None:
    # Indexes 60..69 lost inside window 1: expected 1099-1049 = 50, received 40 -> 20 %.
    s = _report(tmp_path, RtpSpec(count=250, bursts=[(60, 10)]))
    _x, _jit, loss, _mos = windowed_series(s, 1.0)
    assert loss.tolist() == pytest.approx([0.0, 20.0, 0.0, 0.0, 0.0])


# --- bug 1: records out of time order -------------------------------------------------------


def test_shuffled_records_give_the_in_order_series(tmp_path: Path) -> None:
    # Same stream as test_loss_at_window_start, records shuffled in the file. Windows start
    # at the earliest packet; jitter is computed in arrival order (perfect 20 ms pacing -> 0).
    s = _report(tmp_path, RtpSpec(count=200, bursts=[(50, 25)]), shuffle_seed=7)
    assert not bool(np.all(np.diff(s.arrival_s) >= 0))  # the capture really is shuffled
    x, jit, loss, _mos = windowed_series(s, 1.0)
    t_min = float(s.arrival_s.min())
    assert x.tolist() == pytest.approx([t_min + k for k in range(4)])
    assert loss.tolist() == pytest.approx([0.0, 50.0, 0.0, 0.0])
    assert float(jit.max()) < 1e-6


def test_cli_plot_of_shuffled_capture(tmp_path: Path) -> None:
    frames = rtp_frames(RtpSpec(count=200))
    random.Random(3).shuffle(frames)
    p = tmp_path / "shuffled.pcap"
    write_pcap(p, frames)
    png = tmp_path / "out.png"
    res = runner.invoke(app, ["analyze", str(p), "--json", "--plot", str(png)])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.exit_code in (0, 1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_unwritable_plot_exits_2_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "ok.pcap"
    write_pcap(p, rtp_frames(RtpSpec(count=100)))
    bad = tmp_path / "no-such-dir" / "out.png"
    monkeypatch.setattr(sys, "argv", ["callward", "analyze", str(p), "--json", "--plot", str(bad)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("callward: ")
    assert "Traceback" not in err


def test_implausible_span_is_our_error(tmp_path: Path) -> None:
    # One record 30 years after the others: 10^9 one-second windows cannot be drawn; we say so
    # instead of allocating gigabytes.
    s = _report(tmp_path, RtpSpec(count=10))
    t = s.arrival_s.copy()
    t[-1] += 30 * 365 * 86400
    with pytest.raises(CallwardError):
        windowed_series(dataclasses.replace(s, arrival_s=t), 1.0)
    with pytest.raises(CallwardError):
        windowed_series(s, 0.0)


# --- property: any order, any drop pattern, against a plain-Python A.3 reference ------------


def _reference_loss(kept: list[int], window: int) -> list[float]:
    """RFC 3550 A.3 by hand: index i arrives in window (i - first) // window, seq = i."""
    first = kept[0]
    nw = (kept[-1] - first) // window + 1
    prior = first - 1  # base_seq - 1 (A.1: expected counts from the first packet)
    out = []
    for k in range(nw):
        rx = [i for i in kept if (i - first) // window == k]
        if not rx:
            out.append(0.0)
            continue
        hi = max(prior, max(rx))
        expected = hi - prior
        lost = expected - len(rx)
        out.append(100.0 * lost / expected if expected > 0 and lost > 0 else 0.0)
        prior = hi
    return out


_BASE: list[StreamReport] = []


def _base_report(tmp_path_factory: pytest.TempPathFactory) -> StreamReport:
    if not _BASE:
        _BASE.append(_report(tmp_path_factory.mktemp("plot"), RtpSpec(count=5)))
    return _BASE[0]


@settings(max_examples=150, deadline=None)
@given(
    drops=st.lists(st.booleans(), min_size=1, max_size=400),
    seed=st.integers(0, 2**16),
)
def test_any_order_matches_reference(
    tmp_path_factory: pytest.TempPathFactory, drops: list[bool], seed: int
) -> None:
    kept = [i for i, d in enumerate(drops) if not d]
    if not kept:
        return
    base = _base_report(tmp_path_factory)
    perm = list(range(len(kept)))
    random.Random(seed).shuffle(perm)
    idx = np.array([kept[j] for j in perm], dtype=np.int64)
    s = dataclasses.replace(
        base,
        arrival_s=idx * 0.02,  # 50 packets per one-second window
        rtp_ts=idx * 160,
        seq_ext=idx + 65530,  # crosses the 16-bit wrap: extended numbers keep counting
    )
    _x, jit, loss, mos = windowed_series(s, 1.0)
    assert loss.tolist() == pytest.approx(_reference_loss(kept, 50))
    assert float(jit.max()) < 1e-6 and len(mos) == len(loss)


def test_plot_streams_png(tmp_path: Path) -> None:
    s = _report(tmp_path, RtpSpec(count=120, bursts=[(50, 10)]), shuffle_seed=1)
    out = tmp_path / "p.png"
    plot_streams([s], out)
    assert out.read_bytes()[:4] == b"\x89PNG"
