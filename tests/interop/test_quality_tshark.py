"""Our RTP stream statistics against tshark's `-z rtp,streams` on generated captures.

The captures carry known impairments (loss, bursts, jitter with reordering, duplicates,
sequence and timestamp wraparound, SSRC change, late first packet, markers, IPv6, VLAN,
pcapng, SIP/SDP-signalled dynamic payload types). tshark is the independent reference:
lost must be identical, max delta and mean/max jitter within 0.01 ms.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.quality.analysis import collect, stream_reports
from callward.quality.report import analyze_capture
from callward.quality.synth import (
    RtpSpec,
    merge,
    rtp_frames,
    sip_call,
    write_pcap,
    write_pcapng,
)

pytestmark = pytest.mark.interop

T0 = 1_700_000_000.0


def tshark_streams(path: Path, heuristic: bool = True) -> dict[tuple, dict]:
    if shutil.which("tshark") is None:
        pytest.skip("why: tshark not installed")
    cmd = ["tshark", "-q", "-n", "-r", str(path), "-z", "rtp,streams"]
    if heuristic:
        cmd[1:1] = ["--enable-heuristic", "rtp_udp"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    rows: dict[tuple, dict] = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) < 17 or not f[6].startswith("0x"):
            continue
        key = (f[2], int(f[3]), f[4], int(f[5]), int(f[6], 16))
        problem = f[-1] == "X"
        r = f[:-1] if problem else f  # the payload name may hold spaces: read from the right
        rows[key] = {
            "packets": int(r[-9]),
            "lost": int(r[-8]),
            "max_delta": float(r[-4]),
            "mean_jitter": float(r[-2]),
            "max_jitter": float(r[-1]),
            "problem": problem,
        }
    return rows


def ours(path: Path, sip: bool = False) -> dict[tuple, dict]:
    streams = analyze_capture(path, mos=False).streams if sip else stream_reports(collect(path))
    return {
        (s.src, s.sport, s.dst, s.dport, s.ssrc): {
            "packets": s.stats.packets,
            "lost": s.stats.lost,
            "max_delta": s.stats.max_delta,
            "mean_jitter": s.stats.mean_jitter,
            "max_jitter": s.stats.max_jitter,
            "problem": s.stats.problem,
        }
        for s in streams
    }


def assert_match(path: Path, heuristic: bool = True, sip: bool = False) -> None:
    ref = tshark_streams(path, heuristic)
    got = ours(path, sip)
    assert set(got) == set(ref), (sorted(got), sorted(ref))
    for key, r in ref.items():
        g = got[key]
        assert g["packets"] == r["packets"], key
        assert g["lost"] == r["lost"], key
        assert g["max_delta"] == pytest.approx(r["max_delta"], abs=0.01), key
        assert g["max_jitter"] == pytest.approx(r["max_jitter"], abs=0.01), key
        assert g["mean_jitter"] == pytest.approx(r["mean_jitter"], abs=0.01), key
        assert g["problem"] == r["problem"], key


SCENARIOS = {
    "clean": [RtpSpec(count=300)],
    "random_loss": [RtpSpec(count=800, loss=0.05, seed=2)],
    "bursts": [RtpSpec(count=800, bursts=[(100, 12), (400, 3), (405, 4)])],
    "jitter_reorder": [RtpSpec(count=800, jitter_ms=45, loss=0.01, seed=5)],
    "duplicates": [RtpSpec(count=400, duplicates=[10, 11, 200], jitter_ms=3)],
    "seq_ts_wrap": [RtpSpec(count=900, seq0=65000, ts0=2**32 - 8000, jitter_ms=12, loss=0.02)],
    "seq_wrap_loss_at_wrap": [RtpSpec(count=300, seq0=65530, bursts=[(4, 4)])],
    "ssrc_change": [RtpSpec(count=600, ssrc_change_at=300, jitter_ms=6)],
    "late_first": [RtpSpec(count=300, reorder=[0, 50], jitter_ms=2)],
    "markers": [RtpSpec(count=500, marker_at=[0, 100, 101, 250], jitter_ms=25, seed=9)],
    "pcma_multi": [
        RtpSpec(count=500, pt=8, jitter_ms=10, loss=0.03),
        RtpSpec(count=500, sport=40100, dport=40102, ssrc=9, pt=18, jitter_ms=30, seed=4),
        RtpSpec(count=500, sport=40200, dport=40202, ssrc=10, pt=9, clock_rate=8000, seed=6,
                jitter_ms=8),
    ],
    "l16_44k_integer_ticks": [RtpSpec(count=300, pt=11, clock_rate=44100, jitter_ms=9)],
    "dynamic_pt_no_sdp": [RtpSpec(count=300, pt=96, clock_rate=48000, jitter_ms=9, loss=0.02)],
    "comfort_noise": [RtpSpec(count=400, pt_at={i: 13 for i in (50, 51, 52, 200, 300)},
                              jitter_ms=15, loss=0.02, seed=12)],
    "ts_jump_with_marker": [RtpSpec(count=400, ts_jump_at={150: 16000, 300: 8000},
                                    marker_at=[150], jitter_ms=10, seed=13)],
    "multi_wrap": [RtpSpec(count=140_000, seq0=60000, loss=0.003, jitter_ms=8, payload_len=4,
                           bursts=[(5535, 3), (71071, 2)])],
    "decoys_on_claimed_ports": [
        RtpSpec(count=100),
        RtpSpec(count=50, sport=40400, dport=53, ssrc=99),  # DNS claims it: no RTP stream
        RtpSpec(count=50, sport=40600, dport=4789, ssrc=97),  # VXLAN claims it too
        RtpSpec(count=50, sport=40500, dport=3478, ssrc=98),  # STUN rejects it: RTP stream
        RtpSpec(count=50, sport=40700, dport=5060, ssrc=96),  # SIP rejects it: RTP stream
    ],
    "vlan": [RtpSpec(count=300, vlan=42, jitter_ms=5, loss=0.02)],
    "ipv6": [RtpSpec(count=300, ipv6=True, src="2001:db8::1", dst="2001:db8::2", jitter_ms=5,
                     loss=0.02)],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_matches_tshark_pcap(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.pcap"
    write_pcap(path, merge(*(rtp_frames(s) for s in SCENARIOS[name])))
    assert_match(path)


@pytest.mark.parametrize("variant", ["pcapng_us", "pcapng_ns", "pcap_ns_be"])
def test_matches_tshark_formats(tmp_path: Path, variant: str) -> None:
    frames = merge(rtp_frames(RtpSpec(count=500, jitter_ms=20, loss=0.03, seed=11)))
    path = tmp_path / "f.cap"
    if variant == "pcapng_us":
        write_pcapng(path, frames, tsresol=6)
    elif variant == "pcapng_ns":
        write_pcapng(path, frames, tsresol=9)
    else:
        write_pcap(path, frames, nsec=True, big_endian=True)
    assert_match(path)


def test_matches_tshark_sdp_telephone_event(tmp_path: Path) -> None:
    """RFC 4733 events (PT 101 from the SDP rtpmap) have no clock for jitter."""
    sip = sip_call("dtmf@x", T0, "192.0.2.1", "192.0.2.2", ("192.0.2.1", 41000),
                   ("192.0.2.2", 42000))  # fmt: skip
    a = RtpSpec(src="192.0.2.1", sport=41000, dst="192.0.2.2", dport=42000, start=T0 + 1.1,
                count=400, jitter_ms=12, pt_at={i: 101 for i in range(100, 108)},
                marker_at=[100], seed=21)  # fmt: skip
    path = tmp_path / "dtmf.pcap"
    write_pcap(path, merge(sip, rtp_frames(a)))
    assert_match(path, heuristic=False, sip=True)


def test_matches_tshark_sdp_dynamic_payload(tmp_path: Path) -> None:
    """Dynamic PT 111 at 48 kHz: the clock comes from the SDP rtpmap (no heuristic)."""
    sip = sip_call("dyn@x", T0, "192.0.2.1", "192.0.2.2", ("192.0.2.1", 41000),
                   ("192.0.2.2", 42000), pt=111, codec="opus", rate=48000)  # fmt: skip
    a = RtpSpec(src="192.0.2.1", sport=41000, dst="192.0.2.2", dport=42000, pt=111,
                clock_rate=48000, start=T0 + 1.1, count=400, jitter_ms=25, loss=0.02)  # fmt: skip
    b = RtpSpec(src="192.0.2.2", sport=42000, dst="192.0.2.1", dport=41000, pt=111, ssrc=3,
                clock_rate=48000, start=T0 + 1.1, count=400, jitter_ms=7, seed=8)  # fmt: skip
    path = tmp_path / "dyn.pcap"
    write_pcap(path, merge(sip, rtp_frames(a), rtp_frames(b)))
    assert_match(path, heuristic=False, sip=True)
    got = ours(path, sip=True)
    assert all(v["max_jitter"] > 0 for v in got.values())  # the rtpmap clock was used


@settings(max_examples=8, deadline=None)
@given(
    count=st.integers(20, 600),
    seq0=st.integers(0, 65535),
    ts0=st.integers(0, 2**32 - 1),
    loss=st.floats(0, 0.3),
    jitter=st.floats(0, 80),
    dups=st.lists(st.integers(0, 599), max_size=5),
    reorder=st.lists(st.integers(0, 599), max_size=5),
    markers=st.lists(st.integers(0, 599), max_size=5),
    pt=st.sampled_from([0, 8, 18, 9, 96]),
    seed=st.integers(0, 1000),
)
def test_random_impairments_match_tshark(tmp_path_factory, count, seq0, ts0, loss, jitter, dups,
                                         reorder, markers, pt, seed) -> None:  # fmt: skip
    spec = RtpSpec(count=count, seq0=seq0, ts0=ts0, loss=loss, jitter_ms=jitter,
                   duplicates=dups, reorder=reorder, marker_at=markers, pt=pt, seed=seed)  # fmt: skip
    frames = rtp_frames(spec)
    if not frames:
        return
    path = tmp_path_factory.mktemp("rnd") / "r.pcap"
    write_pcap(path, frames)
    assert_match(path)
