"""Root-cause classification: one generated SIP+RTP capture per classification.

Each capture is built from the scenario's definition (who sends RTP where, which SIP
responses, when BYE comes), so the expected class is known independently of the analyser.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.quality.capture import Datagram
from callward.quality.correlate import build_calls, classify, parse_sdp
from callward.quality.report import analyze_capture
from callward.quality.synth import (
    Frame,
    RtpSpec,
    ethernet_ipv4_udp,
    merge,
    rtp_frames,
    sdp_body,
    sip_call,
    write_pcap,
)

T0 = 1_700_000_000.0
A_SIG, B_SIG = "198.51.100.10", "203.0.113.20"
A_MEDIA, B_MEDIA = (A_SIG, 40000), (B_SIG, 50000)


def media(src, dst, start=T0 + 1.05, count=200, **kw):
    return rtp_frames(RtpSpec(src=src[0], sport=src[1], dst=dst[0], dport=dst[1], start=start,
                              count=count, **kw))  # fmt: skip


def kinds(tmp_path: Path, *frames, **kw):
    p = tmp_path / "c.pcap"
    write_pcap(p, merge(*frames))
    rep = analyze_capture(p, **kw)
    assert len(rep.calls) == 1
    return [(pr.kind, pr.cause, pr.direction) for pr in rep.calls[0].problems], rep


def test_healthy_call(tmp_path: Path) -> None:
    sip = sip_call("ok@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=4.2)
    got, rep = kinds(tmp_path, sip, media(A_MEDIA, B_MEDIA), media(B_MEDIA, A_MEDIA, ssrc=2))
    assert got == []
    assert rep.calls[0].pdd_s == pytest.approx(0.2)
    assert len(rep.calls[0].streams) == 2


def test_no_audio(tmp_path: Path) -> None:
    sip = sip_call("na@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=4)
    got, _ = kinds(tmp_path, sip)
    assert got[0][0] == "no_audio"


def test_one_way_no_packets(tmp_path: Path) -> None:
    sip = sip_call("ow@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=4.2)
    got, _ = kinds(tmp_path, sip, media(B_MEDIA, A_MEDIA, ssrc=2))
    assert got == [("one_way_audio", "no_packets", "caller->callee")]


def test_one_way_wrong_address(tmp_path: Path) -> None:
    sip = sip_call("wa@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=4.2)
    stale = ("192.0.2.99", 50000)  # A sends to an address the answer never named
    got, _ = kinds(tmp_path, sip, media(A_MEDIA, stale), media(B_MEDIA, A_MEDIA, ssrc=2))
    assert got == [("one_way_audio", "wrong_address", "caller->callee")]


def test_one_way_nat_private_sdp_without_latching(tmp_path: Path) -> None:
    # B is behind NAT: its answer names 10.0.0.5:50000 but its RTP leaves from B_SIG:61000.
    private = ("10.0.0.5", 50000)
    sip = sip_call("nat@x", T0, A_SIG, B_SIG, A_MEDIA, private, bye_after_s=4.2)
    got, _ = kinds(tmp_path, sip, media(A_MEDIA, private), media((B_SIG, 61000), A_MEDIA, ssrc=2))
    assert got == [("one_way_audio", "nat", "caller->callee")]


def test_nat_with_latching_is_healthy(tmp_path: Path) -> None:
    private = ("10.0.0.5", 50000)
    sip = sip_call("latch@x", T0, A_SIG, B_SIG, A_MEDIA, private, bye_after_s=4.2)
    got, _ = kinds(tmp_path, sip, media(A_MEDIA, (B_SIG, 61000)),
                   media((B_SIG, 61000), A_MEDIA, ssrc=2))  # fmt: skip
    assert got == []


def test_one_way_wrong_public_sdp_address(tmp_path: Path) -> None:
    wrong = ("192.0.2.77", 50000)  # public, but B's media comes from B_SIG
    sip = sip_call("ws@x", T0, A_SIG, B_SIG, A_MEDIA, wrong, bye_after_s=4.2)
    got, _ = kinds(tmp_path, sip, media(A_MEDIA, wrong), media((B_SIG, 50000), A_MEDIA, ssrc=2))
    assert got == [("one_way_audio", "wrong_sdp_address", "caller->callee")]


def test_callee_side_missing(tmp_path: Path) -> None:
    sip = sip_call("cs@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=4.2)
    got, _ = kinds(tmp_path, sip, media(A_MEDIA, B_MEDIA))
    assert got == [("one_way_audio", "no_packets", "callee->caller")]


@pytest.mark.parametrize(
    "status,cause",
    [(408, "request_timeout"), (480, "temporarily_unavailable"), (487, "request_terminated"),
     (503, "server_error"), (603, "rejected")],
)  # fmt: skip
def test_failed_calls(tmp_path: Path, status: int, cause: str) -> None:
    sip = sip_call(f"f{status}@x", T0, A_SIG, B_SIG, A_MEDIA, None, final_status=status)
    got, _ = kinds(tmp_path, sip)
    assert got == [("call_failed", cause, "")]


def test_bye_after_rtp_timeout(tmp_path: Path) -> None:
    # Media for 4 s, then silence, BYE 30 s after answer: 25+ s without RTP.
    sip = sip_call("to@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=30, bye_from="callee")
    got, _ = kinds(tmp_path, sip, media(A_MEDIA, B_MEDIA), media(B_MEDIA, A_MEDIA, ssrc=2))
    assert got == [("rtp_timeout", "rtp_timeout", "")]


def test_bye_with_rtp_timeout_reason(tmp_path: Path) -> None:
    sip = sip_call("tr@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=4.1,
                   bye_reason='SIP;cause=200;text="RTP Timeout"')  # fmt: skip
    got, _ = kinds(tmp_path, sip, media(A_MEDIA, B_MEDIA), media(B_MEDIA, A_MEDIA, ssrc=2))
    assert got == [("rtp_timeout", "rtp_timeout", "")]


def test_session_timer_expiry(tmp_path: Path) -> None:
    # Session-Expires 90 s, no refresh; BYE at 60 s = S − min(32, S/3) (RFC 4028 §10).
    sip = sip_call("st@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=60, session_expires=90)
    got, _ = kinds(tmp_path, sip, media(A_MEDIA, B_MEDIA, count=2990),
                   media(B_MEDIA, A_MEDIA, ssrc=2, count=2990))  # fmt: skip
    assert got == [("session_timer_expiry", "session_timer", "")]


def test_post_dial_delay(tmp_path: Path) -> None:
    sip = sip_call("pdd@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, ring_after_s=7.5,
                   answer_after_s=9, bye_after_s=4.2)  # fmt: skip
    got, rep = kinds(tmp_path, sip, media(A_MEDIA, B_MEDIA, start=T0 + 9.05),
                     media(B_MEDIA, A_MEDIA, ssrc=2, start=T0 + 9.05))  # fmt: skip
    assert got == [("post_dial_delay", "", "")]
    assert rep.calls[0].pdd_s == pytest.approx(7.5)


def test_parse_sdp_media_level_connection_and_rtpmap() -> None:
    body = (sdp_body("192.0.2.1", 4000, 111, "opus", 48000) + "m=video 5000 RTP/AVP 96\n").encode()
    d = parse_sdp(body.replace(b"c=IN IP4 192.0.2.1\n", b"c=IN IP4 192.0.2.1\n", 1))
    assert d is not None and (d.ip, d.port) == ("192.0.2.1", 4000)
    assert d.rtpmap[111] == ("opus", 48000) and d.payload_types == (111, 101)
    assert parse_sdp(b"v=0\r\n") is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_parse_sdp(data: bytes) -> None:
    d = parse_sdp(data)
    assert d is None or d.port >= 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=5), st.sampled_from(["INVITE", "SIP/2.0 200"]))
def test_fuzz_build_calls(payloads: list[bytes], start: str) -> None:
    dgs = [
        Datagram(i, "10.0.0.1", 5060, "10.0.0.2", 5060, start.encode() + b" " + p)
        for i, p in enumerate(payloads)
    ]
    for c in build_calls(dgs):
        classify(c, [])


def _rr(reporter: int, about: int, fraction: int, cum: int, jitter: int) -> bytes:
    """RFC 3550 §6.4.2 receiver report with one block, packed by hand."""
    block = struct.pack("!IB", about, fraction) + cum.to_bytes(3, "big")
    block += struct.pack("!IIII", 5000, jitter, 0, 0)
    body = struct.pack("!I", reporter) + block
    return struct.pack("!BBH", 0x81, 201, len(body) // 4) + body


def test_rtcp_receiver_reports_attach_to_streams(tmp_path: Path) -> None:
    sip = sip_call("rtcp@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=4.2)
    rr = [
        Frame(T0 + 2 + i, ethernet_ipv4_udp(B_SIG, 50001, A_SIG, 40001,
                                            _rr(2, 0x11223344, 64 * (i + 1), 10 * i, 80 * i)))
        for i in range(3)
    ]  # fmt: skip
    p = tmp_path / "r.pcap"
    write_pcap(p, merge(sip, media(A_MEDIA, B_MEDIA), media(B_MEDIA, A_MEDIA, ssrc=2), rr))
    rep = analyze_capture(p)
    s = next(x for x in rep.streams if x.ssrc == 0x11223344)
    assert s.rtcp == {"reports": 3, "fraction_lost": 0.75, "max_fraction_lost": 0.75,
                      "cumulative_lost": 20, "max_jitter_ms": 20.0}  # fmt: skip
    assert next(x for x in rep.streams if x.ssrc == 2).rtcp is None


@pytest.mark.parametrize(
    "offer,answer,mismatch",
    [((1, "AES_CM_128_HMAC_SHA1_80"), (1, "AES_CM_128_HMAC_SHA1_80"), False),
     ((1, "AES_CM_128_HMAC_SHA1_80"), (1, "AES_CM_128_HMAC_SHA1_32"), True),
     ((1, "AES_CM_128_HMAC_SHA1_80"), (2, "AES_CM_128_HMAC_SHA1_80"), True),
     ((1, "AES_CM_128_HMAC_SHA1_80"), None, True)],
)  # fmt: skip
def test_srtp_key_mismatch(tmp_path: Path, offer, answer, mismatch: bool) -> None:
    sip = sip_call("srtp@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=4.2,
                   offer_crypto=offer, answer_crypto=answer)  # fmt: skip
    got, _ = kinds(tmp_path, sip, media(A_MEDIA, B_MEDIA), media(B_MEDIA, A_MEDIA, ssrc=2))
    if mismatch:
        assert [(k, c) for k, c, _ in got] == [("one_way_audio", "srtp_key_mismatch")]
    else:
        assert got == []


def test_handover_then_rtp_timeout(tmp_path: Path) -> None:
    # A moves from Wi-Fi (A_SIG) to cellular (192.0.2.50) after 2 s; media then dies and the
    # callee hangs up 20 s later.
    moved = ("192.0.2.50", 40000)
    sip = sip_call("ho@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=24, bye_from="callee")
    a1 = media(A_MEDIA, B_MEDIA, count=100)
    a2 = media(moved, B_MEDIA, start=T0 + 3.1, count=50)
    b = media(B_MEDIA, A_MEDIA, ssrc=2, count=150)
    got, rep = kinds(tmp_path, sip, a1, a2, b)
    assert got == [("rtp_timeout", "handover", "")]
    assert len(rep.calls[0].handovers) == 1


def test_successful_handover_is_not_a_problem(tmp_path: Path) -> None:
    moved = ("192.0.2.50", 40000)
    sip = sip_call("ho2@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=6.1)
    a1 = media(A_MEDIA, B_MEDIA, count=100)
    a2 = media(moved, B_MEDIA, start=T0 + 3.1, count=150)
    b = media(B_MEDIA, A_MEDIA, ssrc=2, count=250)
    got, rep = kinds(tmp_path, sip, a1, a2, b)
    assert got == [] and len(rep.calls[0].handovers) == 1


def test_port_reuse_by_a_later_call(tmp_path: Path) -> None:
    # Call 1 ends at ~T0+5; call 2 reuses the same media ports at T0+60 with media one-way.
    s1 = sip_call("c1@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=4.2)
    s2 = sip_call("c2@x", T0 + 60, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=4.2)
    m1 = media(A_MEDIA, B_MEDIA) + media(B_MEDIA, A_MEDIA, ssrc=2)
    m2 = media(A_MEDIA, B_MEDIA, start=T0 + 61.05, ssrc=9)
    p = tmp_path / "two.pcap"
    write_pcap(p, merge(s1, s2, m1, m2))
    rep = analyze_capture(p)
    by_id = {c.call_id: c for c in rep.calls}
    assert by_id["c1@x"].problems == [] and len(by_id["c1@x"].streams) == 2
    assert [(x.kind, x.direction) for x in by_id["c2@x"].problems] == [
        ("one_way_audio", "callee->caller")
    ]


def test_parse_sdp_normalises_ipv6() -> None:
    body = b"v=0\r\nc=IN IP6 2001:0db8:0000:0000:0000:0000:0000:0001\r\nm=audio 4000 RTP/AVP 0\r\n"
    d = parse_sdp(body)
    assert d is not None and d.ip == "2001:db8::1"


def test_mos_uses_the_dominant_codec_when_stream_starts_with_cn(tmp_path: Path) -> None:
    p = tmp_path / "cn.pcap"
    write_pcap(p, rtp_frames(RtpSpec(count=200, pt=8, pt_at={0: 13, 1: 13})))
    s = analyze_capture(p).streams[0]
    assert s.payload_type == 13  # as tshark lists it: the first packet's type
    assert s.codec == "g711A" and s.mos["network"] is not None


def test_late_offer_caller_media_from_ack(tmp_path: Path) -> None:
    sip = sip_call("late@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=4.2, late_offer=True)
    got, rep = kinds(tmp_path, sip, media(A_MEDIA, B_MEDIA), media(B_MEDIA, A_MEDIA, ssrc=2))
    c = rep.calls[0]
    assert c.offer is not None and (c.offer.ip, c.offer.port) == A_MEDIA
    assert got == [] and len(c.streams) == 2


@pytest.mark.parametrize("mss,retransmit", [(1400, False), (100, False), (333, True)])
def test_sip_over_tcp(tmp_path: Path, mss: int, retransmit: bool) -> None:
    from callward.quality.synth import sip_frames_over_tcp

    sip = sip_call("tcp@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=4.2)
    tcp = sip_frames_over_tcp(sip, mss=mss, retransmit=retransmit)
    got, rep = kinds(tmp_path, tcp, media(A_MEDIA, B_MEDIA))
    c = rep.calls[0]
    assert c.final_status == 200 and c.offer is not None and c.answer is not None
    assert got == [("one_way_audio", "no_packets", "callee->caller")]


def test_tcp_reassembler_gap_and_garbage() -> None:
    from callward.quality.tcpsip import TcpSipReassembler

    r = TcpSipReassembler()
    flow = ("10.0.0.1", 5060, "10.0.0.2", 5060)
    msg = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    assert r.feed(flow, 100, 0x18, b"garbage mid-stream") == []
    assert r.feed(flow, 500, 0x18, msg[:30]) == []
    assert r.feed(flow, 530 + 7, 0x18, msg[37:]) == []  # a hole: the partial message is dropped
    assert r.feed(flow, 1000, 0x18, msg + msg) == [msg, msg]


def test_call_legs_carry_direction_and_mos(tmp_path: Path) -> None:
    sip = sip_call("legs@x", T0, A_SIG, B_SIG, A_MEDIA, B_MEDIA, bye_after_s=4.2)
    _, rep = kinds(tmp_path, sip, media(A_MEDIA, B_MEDIA, loss=0.1, seed=3),
                   media(B_MEDIA, A_MEDIA, ssrc=2))  # fmt: skip
    legs = {leg["direction"]: leg for leg in rep.calls[0].as_dict()["legs"]}
    assert set(legs) == {"caller->callee", "callee->caller"}
    assert legs["caller->callee"]["mos_network"] < legs["callee->caller"]["mos_network"]
