"""The capture accelerator (src/callward/quality/_accel.c) against the pure Python references.

Differential, on random inputs: every C function must give exactly what its reference gives —
``reference_stream`` (tshark's RTP statistics), ``burst_reference``, ``AdaptiveBuffer.run``, and
the numpy record walks and header split of ``capture``/``fastpath`` (compared by reading the
same random capture with the accelerator on and off).
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callward.config import QualityConfig
from callward.errors import CaptureError
from callward.quality import capture, fastpath
from callward.quality.accel import ACCEL
from callward.quality.alerts import DEFAULTS
from callward.quality.analysis import collect
from callward.quality.playout import adaptive_playout, adaptive_reference
from callward.quality.streams import (
    StreamStats,
    burst_metrics,
    burst_reference,
    reference_stream,
    stream_stats,
    unwrap_timestamps,
)
from callward.quality.synth import Frame, rtp_header, udp_datagram, write_pcap, write_pcapng

from .test_adaptive_vector import streams as playout_streams

pytestmark = pytest.mark.skipif(
    ACCEL is None, reason="C accelerator not in use (not built, or CALLWARD_PURE_PYTHON=1)"
)


def test_cli_defaults_equal_the_config_model() -> None:
    q = QualityConfig()
    assert {k: getattr(q, k) for k in DEFAULTS} == DEFAULTS


@st.composite
def rtp_streams(draw: st.DrawFn) -> tuple[list[float], list[int], list[int], list[int], ...]:
    n = draw(st.integers(1, 400))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    seq0 = draw(st.integers(0, 65535))
    ts0 = draw(st.integers(0, 2**32 - 1))
    step = draw(st.sampled_from([160, 320, 960]))
    idx = np.arange(n) + np.cumsum(rng.random(n) < draw(st.floats(0, 0.3)))  # loss
    if draw(st.booleans()) and n > 3:  # reordering and duplicates
        k = int(rng.integers(1, n - 1))
        idx[k], idx[k + 1] = idx[k + 1], idx[k]
        idx[int(rng.integers(0, n))] = idx[int(rng.integers(0, n))]
    seq = ((seq0 + idx) % 65536).tolist()
    ts = ((ts0 + idx * step) % 2**32).astype(np.int64)
    if draw(st.booleans()):  # a timestamp jump backwards (wrong timestamps)
        ts[int(rng.integers(0, n)) :] -= int(rng.integers(1, 2**31))
        ts %= 2**32
    t = np.cumsum(rng.exponential(20.0, n)).tolist()
    pt = rng.choice([0, 0, 0, 8, 13, 101], n).tolist()
    marker = (rng.random(n) < 0.05).tolist()
    clock = [0 if p == 101 else draw(st.sampled_from([8000, 16000, 48000])) for p in pt]
    return t, ts.tolist(), seq, pt, marker, clock


@settings(max_examples=200, deadline=None)
@given(rtp_streams())
def test_stream_stats_equal_the_reference(s: tuple) -> None:  # type: ignore[type-arg]
    t, ts, seq, pt, marker, clock = s
    ets = unwrap_timestamps(np.array(ts, dtype=np.int64))
    ref = reference_stream(t, ets.tolist(), seq, pt, marker, clock)
    got = stream_stats(
        np.array(t), ets, np.array(seq), np.array(pt), np.array(marker, dtype=bool),
        np.array(clock),
    )  # fmt: skip
    assert isinstance(got, StreamStats)
    assert dataclasses.astuple(got) == dataclasses.astuple(ref)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2000), st.floats(0.0, 0.9), st.integers(0, 2**32 - 1), st.booleans(),
       st.integers(1, 20))  # fmt: skip
def test_burst_equals_the_reference(n: int, loss: float, seed: int, mix: bool, gmin: int) -> None:
    rng = np.random.default_rng(seed)
    a = np.flatnonzero(rng.random(n) >= loss).astype(np.int64) + 70_000
    if mix and len(a) > 2:  # late and duplicate arrivals
        a = np.concatenate((a, a[rng.integers(0, len(a), 3)]))
        rng.shuffle(a)
    assert burst_metrics(a, gmin) == burst_reference(a, gmin)


@settings(max_examples=150, deadline=None)
@given(playout_streams())
def test_adaptive_equals_the_buffer(s: tuple[np.ndarray, np.ndarray, int]) -> None:
    arrival, ts, clock = s
    got = adaptive_playout(arrival, ts, clock)
    ref = adaptive_reference(arrival, ts, clock)
    assert np.array_equal(got.late, ref.late)
    assert got.mean_delay_ms == ref.mean_delay_ms


# --- the capture walk and header split: same capture, accelerator on and off -----------------


def _eth(payload: bytes, vlan: bool, et: int = 0x0800) -> bytes:
    head = b"\x02" * 6 + b"\x04" * 6
    if vlan:
        head += struct.pack(">HH", 0x8100, 7)
    return head + struct.pack(">H", et) + payload


def _ip(src: int, dst: int, l4: bytes, *, proto: int = 17, frag: int = 0, ihl: int = 5) -> bytes:
    opts = b"\x01" * (4 * (ihl - 5))
    hdr = struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(l4), 1, frag, 64, proto, 0,
                      src.to_bytes(4, "big"), dst.to_bytes(4, "big"))  # fmt: skip
    return hdr + opts + l4


@st.composite
def frames(draw: st.DrawFn) -> tuple[int, list[Frame]]:
    """A link type and frames mixing RTP, RTCP, SIP, claimed ports, IP options, fragments,
    VLAN tags, truncation and garbage."""
    linktype = draw(st.sampled_from([1, 1, 101, 113, 276]))
    out: list[Frame] = []
    t = 1_700_000_000.0
    for _ in range(draw(st.integers(0, 60))):
        t += draw(st.floats(0.0, 0.05))
        kind = draw(st.sampled_from(["rtp"] * 6 + ["rtcp", "sip", "claimed", "opts", "frag",
                                                   "garbage", "short"]))  # fmt: skip
        sport = draw(st.sampled_from([4000, 4002, 53, 5060, 123, 20000]))
        dport = draw(st.sampled_from([5000, 5002, 5353, 6000]))
        if kind == "rtp":
            body = rtp_header(
                draw(st.sampled_from([0, 8, 18, 72, 96, 127])),
                draw(st.integers(0, 65535)),
                draw(st.integers(0, 2**32 - 1)),
                draw(st.sampled_from([1, 2, 0xDEADBEEF])),
                draw(st.booleans()),
            )
            body += b"\x55" * draw(st.integers(0, 40))  # fmt: skip
        elif kind == "rtcp":
            body = b"\x80\xc8\x00\x06" + b"\x00" * 24
        elif kind in ("sip", "claimed"):
            body = b"OPTIONS sip:a@b SIP/2.0\r\n\r\n" if kind == "sip" else b"\x80\x00" * 10
        else:
            body = draw(st.binary(min_size=0, max_size=30))
        l4 = udp_datagram(sport, dport, body)
        src = draw(st.sampled_from([0x0A000001, 0x0A000002, 0xC0A80001]))
        ip = _ip(src, 0x0A0000FE, l4, frag=0x2000 if kind == "frag" else 0,
                 ihl=6 if kind == "opts" else 5)  # fmt: skip
        if linktype == 1:
            data = _eth(ip, draw(st.booleans()), draw(st.sampled_from([0x0800] * 5 + [0x86DD])))
        elif linktype == 113:
            data = b"\x00\x00\x00\x01\x00\x06" + b"\x02" * 8 + b"\x08\x00" + ip
        elif linktype == 276:
            data = b"\x08\x00\x00\x00" + b"\x00" * 16 + ip
        else:
            data = ip
        if kind == "short":
            data = data[: draw(st.integers(0, len(data)))]
        if kind == "garbage":
            data = draw(st.binary(min_size=0, max_size=80))
        out.append(Frame(t, data))
    return linktype, out


def _columns(path: Path) -> tuple[list[object], list[object], list[np.ndarray]]:
    """Per packet: its stream's 5-tuple (stream numbering may differ), then the columns."""
    col = collect(path)
    c = col.columns()
    return (
        [col.keys[i] for i in c.stream.tolist()],
        [(d.ts_ns, d.payload) for d in col.sip + col.rtcp],
        [c.ts_ns, c.seq, c.rtp_ts, c.pt, c.marker, c.size],
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames(), st.sampled_from(["pcap", "pcap-be", "pcapng"]))
def test_capture_path_equals_numpy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fr: tuple[int, list[Frame]], fmt: str
) -> None:
    linktype, items = fr
    path = tmp_path / f"c.{fmt}"
    if fmt == "pcapng":
        write_pcapng(path, items, linktype=linktype, tsresol=9)
    else:
        write_pcap(path, items, linktype=linktype, big_endian=fmt == "pcap-be", nsec=True)
    fast = _columns(path)
    with monkeypatch.context() as m:
        m.setattr(capture, "ACCEL", None)
        m.setattr(fastpath, "ACCEL", None)
        slow = _columns(path)
    assert fast[0] == slow[0] and fast[1] == slow[1]
    for a, b in zip(fast[2], slow[2], strict=True):
        assert np.array_equal(a, b)


def _outcome(path: Path) -> tuple[str, object]:
    try:
        return "ok", _columns(path)
    except CaptureError as exc:
        return "error", str(exc)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(["pcap", "pcapng"]),
    st.lists(st.tuples(st.integers(0, 4000), st.binary(min_size=1, max_size=8)), max_size=6),
    st.integers(0, 4000),
)
def test_corrupt_captures_read_the_same_with_and_without_the_accelerator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str,
    patches: list[tuple[int, bytes]], cut: int,
) -> None:  # fmt: skip
    """Hostile files: bytes overwritten anywhere (length fields, block types, headers) and a
    cut end. The C walks must never crash and must end in the same columns as the pure reader,
    or reject the file with a CaptureError as it does."""
    items = [Frame(1_700_000_000.0 + i * 0.02, _eth(_ip(0x0A000001, 0x0A0000FE, udp_datagram(
        4000, 5000, rtp_header(0, i, i * 160, 7) + b"\x00" * 20)), i % 2 == 0))
        for i in range(40)]  # fmt: skip
    path = tmp_path / f"c.{fmt}"
    (write_pcap if fmt == "pcap" else write_pcapng)(path, items)
    data = bytearray(path.read_bytes())
    for at, junk in patches:
        at %= len(data)
        data[at : at + len(junk)] = junk
    path.write_bytes(bytes(data[: len(data) - cut % len(data)]))
    fast = _outcome(path)
    with monkeypatch.context() as m:
        m.setattr(capture, "ACCEL", None)
        m.setattr(fastpath, "ACCEL", None)
        slow = _outcome(path)
    assert fast[0] == slow[0]  # both read it, or both reject it with a CaptureError
    if fast[0] == "error":
        return  # (the first problem named may differ: the C walk flushes its runs earlier)
    f, w = fast[1], slow[1]
    assert isinstance(f, tuple) and isinstance(w, tuple)
    assert f[0] == w[0] and f[1] == w[1]
    for a, b in zip(f[2], w[2], strict=True):
        assert np.array_equal(a, b)
