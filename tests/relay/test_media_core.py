"""The relay's I/O-free packet path: SRTP<->RTP bridging, latching, RTCP on its own port,
statistics against independently computed values, timers. No sockets, no clock."""

from __future__ import annotations

import pytest

from callward.events import CallEnded, MediaStats
from callward.relay.leg import LegConfig
from callward.relay.media_core import MediaCore
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.srtp import SrtpContext, SrtpKeying

PHONE = ("192.0.2.10", 4000)
PBX = ("10.0.0.5", 5000)


def make(**kw: object) -> tuple[MediaCore, SrtpKeying, SrtpKeying]:
    phone_key, relay_key = SrtpKeying.generate(), SrtpKeying.generate()
    a = LegConfig("a", bind_port=30000, remote=PHONE, srtp_rx=phone_key, srtp_tx=relay_key)
    b = LegConfig("b", bind_port=30002, remote=PBX, trusted=True, rtcp_mux=False)
    return MediaCore("call-1", a, b, 0.0, **kw), phone_key, relay_key  # type: ignore[arg-type]


def rtp(seq: int, ssrc: int = 0x1111, pt: int = 0) -> bytes:
    return bytes(RtpPacket(pt, seq, seq * 160, ssrc, b"\xd5" * 160))


def test_srtp_to_plain_and_back() -> None:
    core, phone_key, relay_key = make()
    tx = SrtpContext(phone_key, inbound=False)
    for seq in range(5):
        core.receive_datagram(0, tx.protect(rtp(seq)), PHONE, seq * 0.02)
    out = core.datagrams_to_send()
    assert [o.dest for o in out] == [PBX] * 5 and {o.leg for o in out} == {1}
    assert [parse_rtp(o.data).sequence_number for o in out] == list(range(5))
    assert out[0].data == rtp(0)  # decrypted bit-exact
    # the way back is protected with the relay's own key
    core.receive_datagram(1, rtp(1, ssrc=0x2222, pt=8), PBX, 0.2)
    (back,) = core.datagrams_to_send()
    assert back.dest == PHONE and not back.rtcp_socket
    assert parse_rtp(SrtpContext(relay_key, inbound=True).unprotect(back.data)).payload_type == 8


def test_forged_and_replayed_packets_are_dropped_before_latching() -> None:
    core, phone_key, _ = make()
    tx = SrtpContext(phone_key, inbound=False)
    wire = tx.protect(rtp(1))
    core.receive_datagram(0, wire, PHONE, 0)
    core.receive_datagram(0, wire, ("203.0.113.9", 1), 0)  # replay from elsewhere
    forged = SrtpContext(SrtpKeying.generate(), inbound=False).protect(rtp(2))
    core.receive_datagram(0, forged, ("203.0.113.9", 1), 0)
    assert len(core.datagrams_to_send()) == 1
    c = core.counters[0]
    assert (c.replays, c.auth_failures) == (1, 1) and core.legs[0].latched == PHONE
    # an authenticated packet from a new address moves the latch (handover)
    core.receive_datagram(0, tx.protect(rtp(3)), ("192.0.2.99", 7000), 0.1)
    assert core.legs[0].latched == ("192.0.2.99", 7000)


def test_plain_leg_latch_follows_only_the_same_ssrc() -> None:
    core, _, _ = make()
    core.receive_datagram(1, rtp(1, ssrc=7), ("10.0.0.6", 5000), 0)
    core.receive_datagram(1, rtp(2, ssrc=8), ("10.0.0.7", 5000), 0)  # a stranger
    core.receive_datagram(1, rtp(3, ssrc=7), ("10.0.0.8", 5000), 0)  # NAT rebinding
    assert core.counters[1].foreign == 1 and core.legs[1].latched == ("10.0.0.8", 5000)


def test_rtcp_uses_the_separate_port_of_a_non_mux_leg() -> None:
    core, phone_key, _ = make()
    tx = SrtpContext(phone_key, inbound=False)
    rr = bytes([0x80, 201, 0, 1]) + (0x1111).to_bytes(4, "big")  # an empty RR
    core.receive_datagram(0, tx.protect_rtcp(rr), PHONE, 0)
    (out,) = core.datagrams_to_send()
    assert out.rtcp_socket and out.dest == (PBX[0], PBX[1] + 1) and out.data == rr
    assert core.counters[0].rtcp_in == 1 and core.leg_stats(0).packets == 0


def test_stats_match_an_independent_count() -> None:
    core, phone_key, _ = make(stats_interval_s=1.0)
    tx = SrtpContext(phone_key, inbound=False)
    sent = [s for s in range(100) if s % 10 != 3]  # 10 % loss
    for s in sent:
        core.receive_datagram(0, tx.protect(rtp(s)), PHONE, s * 0.02)
    core.datagrams_to_send()
    st = core.leg_stats(0)
    assert st.packets == len(sent) == 90
    assert st.lost == 10  # expected (0..99) - received
    assert st.jitter_ms == pytest.approx(0.0, abs=1e-6)  # perfectly paced
    assert st.codec == "PCMU" and st.mos and 1.0 < st.worst_mos < 4.5  # type: ignore[operator]
    assert core.counters[1].packets_out == 90 and st.bytes_in == 90 * (172 + 10)
    core.handle_timer(1.0)
    evs = [core.next_event(), core.next_event()]
    assert all(isinstance(e, MediaStats) for e in evs)
    a = evs[0]
    assert isinstance(a, MediaStats) and a.leg == "a" and a.packets == 90 and a.lost == 10


def test_rtp_timeout_and_hold() -> None:
    core, _, _ = make(rtp_timeout_s=2.0, stats_interval_s=10.0, hold_timeout_s=60.0)
    assert core.get_timer() == 2.0
    core.set_hold(True, 1.0)
    assert core.get_timer() == 10.0  # stats first; the hold timeout is 61
    core.set_hold(False, 1.5)
    assert core.get_timer() == 3.5
    core.handle_timer(3.5)
    events = []
    while (ev := core.next_event()) is not None:
        events.append(ev)
    assert isinstance(events[-1], CallEnded) and events[-1].reason == "rtp-timeout"
    assert core.ended and core.get_timer() is None
    core.receive_datagram(0, b"x" * 20, PHONE, 4.0)  # ignored after the end
    assert core.datagrams_to_send() == []


def test_junk_is_counted_not_forwarded() -> None:
    core, _, _ = make()
    for junk in (b"", b"\x00" * 20, b"\x80" * 5, b"STUN-binding-req"):
        core.receive_datagram(1, junk, PBX, 0)
    assert core.datagrams_to_send() == [] and core.counters[1].malformed == 4
