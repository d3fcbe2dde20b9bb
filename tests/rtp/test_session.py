"""RTP session: RFC 3550 A.7 interval worked by hand, SR counts, and an RTT measured through
a simulated 30 ms each-way path that must come out at 60 ms (§6.4.1)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import MediaError
from callward.rtp.packet import RtpPacket
from callward.rtp.rtcp import Bye, ReceiverReport, Sdes, SenderReport, parse_rtcp
from callward.rtp.session import COMPENSATION, RtpSession, rtcp_interval
from callward.rtp.stats import ntp_from_unix


class Half(random.Random):
    def random(self) -> float:  # the midpoint of the [0.5, 1.5) randomisation
        return 0.5


def test_interval_by_hand() -> None:
    # 64 kbit/s -> 8000 B/s, RTCP 5 % = 400 B/s; 2 members both sending, 100-byte reports:
    # 100 * 2 / 400 = 0.5 s < Tmin 5 s -> 5 s, * 1.0 / (e - 1.5)
    t = rtcp_interval(members=2, senders=2, rtcp_bw=400, we_sent=True, avg_rtcp_size=100,
                      initial=False, rng=Half())  # fmt: skip
    assert t == pytest.approx(5 / COMPENSATION)
    assert rtcp_interval(members=2, senders=2, rtcp_bw=400, we_sent=True, avg_rtcp_size=100,
                         initial=True, rng=Half()) == pytest.approx(2.5 / COMPENSATION)  # fmt: skip
    # large conference: 1000 members, 10 senders (<= 25 %): a receiver shares 75 % of RTCP bw
    # among 990 receivers: 100 * 990 / 300 = 330 s
    t = rtcp_interval(members=1000, senders=10, rtcp_bw=400, we_sent=False, avg_rtcp_size=100,
                      initial=False, rng=Half())  # fmt: skip
    assert t == pytest.approx(330 / COMPENSATION)
    # ... and a sender shares 25 % among the 10 senders: 100 * 10 / 100 = 10 s
    t = rtcp_interval(members=1000, senders=10, rtcp_bw=400, we_sent=True, avg_rtcp_size=100,
                      initial=False, rng=Half())  # fmt: skip
    assert t == pytest.approx(10 / COMPENSATION)


def test_sender_report_counts_and_timestamp() -> None:
    s = RtpSession(0xAAAA, 8000, "a@x", rng=Half())
    for i in range(50):
        s.record_sent(RtpPacket(0, i, 1000 + 160 * i, 0xAAAA, b"\xff" * 160), now=i * 0.02)
    data = s.build_rtcp(now=49 * 0.02 + 0.005, ntp_now=ntp_from_unix(1_800_000_000.0))
    sr, sdes = parse_rtcp(data, strict=True)
    assert isinstance(sr, SenderReport) and isinstance(sdes, Sdes)
    assert (sr.packet_count, sr.octet_count) == (50, 8000)  # payload octets only (§6.4.1)
    assert sr.rtp_timestamp == 1000 + 160 * 49 + 40  # extrapolated 5 ms = 40 ticks
    assert sdes.chunks[0].cname == "a@x"
    # nothing sent since: the next report is an RR
    rr, _ = parse_rtcp(s.build_rtcp(now=10.0, ntp_now=ntp_from_unix(1_800_000_010.0)))
    assert isinstance(rr, ReceiverReport)


def test_rtt_through_simulated_path_and_loss_report() -> None:
    delay = 0.030  # each way
    wall0 = 1_800_000_000.0
    a = RtpSession(0xA, 8000, "a@x", rng=Half())
    b = RtpSession(0xB, 8000, "b@x", rng=Half())
    for i in range(100):
        pkt = RtpPacket(0, i, i * 160, 0xA, b"\xff" * 160)
        a.record_sent(pkt, i * 0.02)
        if i not in (30, 31, 77):  # three lost on the way
            b.receive_rtp(bytes(pkt), i * 0.02 + delay)
    t_sr = 2.0
    sr = a.build_rtcp(t_sr, ntp_from_unix(wall0 + t_sr))
    b.receive_rtcp(sr, t_sr + delay, ntp_from_unix(wall0 + t_sr + delay))
    t_rr = 3.0  # b holds the SR for 0.97 s before reporting
    rr = b.build_rtcp(t_rr, ntp_from_unix(wall0 + t_rr))
    a.receive_rtcp(rr, t_rr + delay, ntp_from_unix(wall0 + t_rr + delay))
    assert a.rtt_s == pytest.approx(2 * delay, abs=2 / 65536)
    (report, _) = parse_rtcp(rr)
    assert isinstance(report, ReceiverReport)
    (block,) = report.reports
    # probation skips packet 0: expected 99 (1..99), received 96 -> 3 lost, 3/99 of 256 = 7
    assert block.ssrc == 0xA and block.cumulative_lost == 3 and block.fraction_lost == 7


def test_scheduling_and_bye() -> None:
    s = RtpSession(1, 8000, "c", rng=Half(), start=100.0)
    assert not s.rtcp_due(100.0) and s.rtcp_due(100.0 + 2.5 / COMPENSATION)
    s.build_rtcp(103.0, ntp_from_unix(0))
    assert s.next_report > 103.0 + 4.0  # after the first report, Tmin is 5 s
    _rr, bye = parse_rtcp(s.build_bye("done"))
    assert isinstance(bye, Bye) and bye.ssrcs == (1,) and bye.reason == b"done"
    other = RtpSession(2, 8000, "d")
    other.receive_rtp(bytes(RtpPacket(0, 1, 0, 1)), 0.0)
    assert other.members == 2
    other.receive_rtcp(s.build_bye(), 1.0, ntp_from_unix(1.0))
    assert other.members == 1


def test_bad_arguments() -> None:
    with pytest.raises(MediaError):
        RtpSession(1, 0, "x")
    with pytest.raises(MediaError):
        RtpSession(1, 8000, "")
    with pytest.raises(MediaError):
        rtcp_interval(members=0, senders=0, rtcp_bw=1, we_sent=False, avg_rtcp_size=1,
                      initial=False, rng=random.Random())  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=20))
def test_garbage_only_media_errors(datagrams: list[bytes]) -> None:
    s = RtpSession(1, 8000, "x")
    for i, d in enumerate(datagrams):
        try:
            s.receive_rtp(d, float(i))
        except MediaError:
            pass
        try:
            s.receive_rtcp(d, float(i), 0)
        except MediaError:
            pass
    s.build_rtcp(100.0, ntp_from_unix(100.0))
