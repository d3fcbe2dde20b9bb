"""Media relay over loopback: SRTP<->SRTP re-keying, SRTP<->RTP toward a trusted leg only,
latching, RTP timeout, per-leg stats (checked against the packets actually sent), DSCP, taps."""

from __future__ import annotations

import asyncio
import socket

import pytest

from callward.errors import PolicyError
from callward.events import CallEnded, InProcessBus, MediaStats
from callward.relay.leg import LegConfig, read_dscp
from callward.relay.session import MediaRelay
from callward.relay.taps import CollectingTap
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.rtcp import (
    ReceiverReport,
    ReportBlock,
    SenderReport,
    ntp_middle32,
    serialize_rtcp,
)
from callward.rtp.srtp import SrtpContext, SrtpError, SrtpKeying
from callward.rtp.stats import ntp_from_unix

pytestmark = pytest.mark.timeout(30)


def keys() -> SrtpKeying:
    return SrtpKeying.generate()


async def srtp_call(make_phone, relay: MediaRelay, call_id: str):  # type: ignore[no-untyped-def]
    """alice and bob, each with its own SRTP keys per direction, joined by a session of
    ``relay``; returns them, the session, and the key alice sends with."""
    a_send, a_recv, b_send, b_recv = keys(), keys(), keys(), keys()
    alice = await make_phone(tx=a_send, rx=a_recv)
    bob = await make_phone(tx=b_send, rx=b_recv)
    s = await relay.create_session(
        call_id,
        LegConfig("a", remote=alice.address, srtp_rx=a_send, srtp_tx=a_recv),
        LegConfig("b", remote=bob.address, srtp_rx=b_send, srtp_tx=b_recv),
    )
    return alice, bob, s, a_send


async def test_srtp_to_srtp_rekeys_per_leg(make_phone) -> None:  # type: ignore[no-untyped-def]
    relay = MediaRelay()
    alice, bob, s, a_send = await srtp_call(make_phone, relay, "call-1")
    try:
        plain = alice.send_rtp(s.local_address("a"), 1)
        wire, src = await bob.recv()
        assert src == s.local_address("b")
        # what bob gets is protected with the b-leg key, not alice's
        assert wire != plain and len(wire) == len(plain) + 10
        with pytest.raises(SrtpError):
            SrtpContext(a_send, inbound=True).unprotect(wire)
        assert bob.rx is not None and bob.rx.unprotect(wire) == plain
        back = bob.send_rtp(s.local_address("b"), 7, ssrc=0x2222)
        wire2, _ = await alice.recv()
        assert alice.rx is not None and alice.rx.unprotect(wire2) == back
    finally:
        await relay.close_all()


async def test_plain_leg_needs_trust(make_phone) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PolicyError):
        LegConfig("b", remote=("127.0.0.1", 9))
    with pytest.raises(PolicyError):
        LegConfig("a", srtp_rx=keys())  # one direction only
    a_send, a_recv = keys(), keys()
    alice = await make_phone(tx=a_send, rx=a_recv)
    pbx = await make_phone()
    relay = MediaRelay()
    s = await relay.create_session(
        "call-2",
        LegConfig("a", remote=alice.address, srtp_rx=a_send, srtp_tx=a_recv),
        LegConfig("b", remote=pbx.address, trusted=True),
    )
    try:
        plain = alice.send_rtp(s.local_address("a"), 1)
        wire, _ = await pbx.recv()
        assert wire == plain  # decrypted toward the trusted legacy leg
        back = pbx.send_rtp(s.local_address("b"), 5)
        wire2, _ = await alice.recv()
        assert alice.rx is not None and alice.rx.unprotect(wire2) == back
    finally:
        await relay.close_all()


async def test_latching_and_forgery(make_phone) -> None:  # type: ignore[no-untyped-def]
    a_send, a_recv, b_send, b_recv = keys(), keys(), keys(), keys()
    alice_nat = await make_phone(tx=a_send, rx=a_recv)  # the address media really comes from
    bob = await make_phone(tx=b_send, rx=b_recv)
    attacker = await make_phone(tx=keys())
    relay = MediaRelay()
    s = await relay.create_session(
        "call-3",
        # SDP said alice is at a private address that does not work (port 9 discard)
        LegConfig("a", remote=("127.0.0.1", 9), srtp_rx=a_send, srtp_tx=a_recv),
        LegConfig("b", remote=bob.address, srtp_rx=b_send, srtp_tx=b_recv),
    )
    try:
        alice_nat.send_rtp(s.local_address("a"), 1)
        await bob.recv()
        attacker.send_rtp(s.local_address("a"), 2)  # wrong key: must not move the latch
        await asyncio.sleep(0.1)
        assert s.counters[0].auth_failures == 1
        back = bob.send_rtp(s.local_address("b"), 9, ssrc=0x2222)
        wire, _ = await alice_nat.recv()  # the relay answers where alice really is
        assert alice_nat.rx is not None and alice_nat.rx.unprotect(wire) == back
        assert attacker.queue.empty()
        # a replayed copy of a genuine packet is dropped as a replay
        assert alice_nat.tx is not None
        genuine = alice_nat.tx.protect(bytes(parse_rtp(back)))  # any fresh seq
        assert alice_nat.transport is not None
        alice_nat.transport.sendto(genuine, s.local_address("a"))
        alice_nat.transport.sendto(genuine, s.local_address("a"))
        await bob.recv()
        await asyncio.sleep(0.1)
        assert s.counters[0].replays == 1
    finally:
        await relay.close_all()


async def test_stats_events_and_rtp_timeout(make_phone) -> None:  # type: ignore[no-untyped-def]
    bus = InProcessBus()
    events: list[object] = []
    bus.subscribe(events.append)
    a_send, a_recv = keys(), keys()
    alice = await make_phone(tx=a_send, rx=a_recv)
    pbx = await make_phone()
    relay = MediaRelay(bus=bus, rtp_timeout_s=0.6, stats_interval_s=0.3)
    s = await relay.create_session(
        "call-4",
        LegConfig("a", remote=alice.address, srtp_rx=a_send, srtp_tx=a_recv),
        LegConfig("b", remote=pbx.address, trusted=True),
    )
    sent = [seq for seq in range(100, 150) if seq % 10 != 3]  # 5 of 50 never sent
    for seq in sent:
        alice.send_rtp(s.local_address("a"), seq)
    for _ in sent:
        await pbx.recv()
    await asyncio.wait_for(s.ended.wait(), 5)
    assert s.end_reason == "rtp-timeout"
    ended = [e for e in events if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].reason == "rtp-timeout" and ended[0].call_id == "call-4"
    final = [e for e in events if isinstance(e, MediaStats) and e.leg == "a"][-1]
    # probation (RFC 3550 A.1) does not count the first packet: 44 counted, 49 expected
    assert final.packets == 45 and final.lost == 5 and final.ssrc == 0x1111
    assert final.codec == "PCMU" and final.bytes_received == 45 * (12 + 160 + 10)
    b_stats = [e for e in events if isinstance(e, MediaStats) and e.leg == "b"][-1]
    assert b_stats.bytes_sent == 45 * (12 + 160)  # plain toward the trusted leg
    await relay.close_all()


async def test_dscp_ef_on_media_sockets() -> None:
    relay = MediaRelay()
    s = await relay.create_session(
        "call-5", LegConfig("a", trusted=True), LegConfig("b", trusted=True)
    )
    try:
        for leg in ("a", "b"):
            sock = s.socket(leg)
            assert read_dscp(sock) == 46
            assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0xB8  # 46 << 2
    finally:
        await relay.close_all()
    relay2 = MediaRelay(dscp=34)
    s2 = await relay2.create_session(
        "c", LegConfig("a", trusted=True), LegConfig("b", trusted=True)
    )
    assert read_dscp(s2.socket("a")) == 34
    await relay2.close_all()


async def test_tap_sees_plaintext_and_close(make_phone) -> None:  # type: ignore[no-untyped-def]
    relay = MediaRelay()
    alice, bob, s, _ = await srtp_call(make_phone, relay, "call-6")
    tap = CollectingTap()

    class Broken:
        def on_packet(self, *a: object, **k: object) -> None:
            raise RuntimeError("boom")

        def on_close(self, call_id: str) -> None:
            pass

    s.add_tap(Broken())
    s.add_tap(tap)
    plain = alice.send_rtp(s.local_address("a"), 1)
    await bob.recv()  # media kept flowing despite the broken tap
    assert [(p.leg, p.packet, p.rtcp) for p in tap.packets] == [("a", plain, False)]
    assert s.tap_errors == 1
    await relay.close("call-6")
    assert tap.closed == ["call-6"]


async def test_rekey_mid_call(make_phone) -> None:  # type: ignore[no-untyped-def]
    relay = MediaRelay()
    alice, bob, s, _ = await srtp_call(make_phone, relay, "call-7")
    try:
        alice.send_rtp(s.local_address("a"), 1)
        await bob.recv()
        new_send, new_recv = keys(), keys()
        s.rekey("a", rx=new_send, tx=new_recv)
        alice.tx = SrtpContext(new_send, inbound=False)
        plain = alice.send_rtp(s.local_address("a"), 2)
        wire, _ = await bob.recv()
        assert bob.rx is not None and bob.rx.unprotect(wire) == plain
    finally:
        await relay.close_all()


async def test_handover_update_remote_and_fixed_address_mode(make_phone) -> None:  # type: ignore[no-untyped-def]
    pbx_old = await make_phone()
    pbx_new = await make_phone()
    alice = await make_phone()
    relay = MediaRelay()
    s = await relay.create_session(
        "call-8",
        # latch disabled: only the SDP address is accepted on leg a
        LegConfig("a", remote=alice.address, trusted=True, latch=False),
        LegConfig("b", remote=pbx_old.address, trusted=True),
    )
    try:
        stranger = await make_phone()
        stranger.send_rtp(s.local_address("a"), 1)
        await asyncio.sleep(0.1)
        assert s.counters[0].foreign == 1 and pbx_old.queue.empty()
        alice.send_rtp(s.local_address("a"), 2)
        data, _ = await pbx_old.recv()
        assert parse_rtp(data).sequence_number == 2
        # re-INVITE after a handover: leg b's peer moved
        s.update_remote("b", pbx_new.address)
        alice.send_rtp(s.local_address("a"), 3)
        data, _ = await pbx_new.recv()
        assert parse_rtp(data).sequence_number == 3 and pbx_old.queue.empty()
    finally:
        await relay.close_all()


async def test_ipv6_leg_dscp() -> None:
    if not socket.has_ipv6:
        pytest.skip("why: no IPv6 in this Python build")
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("why: ::1 not available")
    relay = MediaRelay()
    s = await relay.create_session(
        "call-9", LegConfig("a", bind_host="::1", trusted=True), LegConfig("b", trusted=True)
    )
    try:
        assert read_dscp(s.socket("a")) == 46 and s.local_address("a")[0] == "::1"
    finally:
        await relay.close_all()


async def test_per_leg_rtt_from_rtcp(make_phone) -> None:  # type: ignore[no-untyped-def]
    alice = await make_phone()
    bob = await make_phone()
    relay = MediaRelay()
    s = await relay.create_session(
        "call-10",
        LegConfig("a", remote=alice.address, trusted=True),
        LegConfig("b", remote=bob.address, trusted=True),
    )
    try:
        ntp = ntp_from_unix(1_800_000_000.25)
        sr = serialize_rtcp([SenderReport(0xA1, ntp, 0, 10, 1600)])
        assert alice.transport is not None and bob.transport is not None
        alice.transport.sendto(sr, s.local_address("a"))
        await bob.recv()
        await asyncio.sleep(0.25)
        # bob claims it held the SR for only 50 ms: the relay must see ~200 ms of "path"
        block = ReportBlock(0xA1, lsr=ntp_middle32(ntp), dlsr=int(0.05 * 65536))
        bob.transport.sendto(serialize_rtcp([ReceiverReport(0xB2, (block,))]), s.local_address("b"))
        await alice.recv()
        rtt = s.counters[1].rtt_ms
        assert rtt is not None and 190 <= rtt <= 300
        stats = {e.leg: e for e in s.stats_events()}
        assert stats["b"].rtt_ms == pytest.approx(rtt, abs=0.01) and stats["a"].rtt_ms is None
        # a report echoing an SR the relay never forwarded is ignored
        stray = ReportBlock(0xA1, lsr=12345, dlsr=0)
        bob.transport.sendto(serialize_rtcp([ReceiverReport(0xB2, (stray,))]), s.local_address("b"))
        await alice.recv()
        assert s.counters[1].rtt_ms == rtt
    finally:
        await relay.close_all()


async def test_leg_without_rtcp_mux_uses_port_plus_one() -> None:
    from callward.relay.leg import open_media_pair

    loop = asyncio.get_running_loop()
    rtp_sock, rtcp_sock = open_media_pair("127.0.0.1", 40000, 49999)
    bob = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bob.bind(("127.0.0.1", 0))
    for s_ in (rtp_sock, rtcp_sock, bob):
        s_.setblocking(False)
    p = rtp_sock.getsockname()[1]
    relay = MediaRelay(port_range=(30000, 39999))
    s = await relay.create_session(
        "call-11",
        LegConfig("a", remote=("127.0.0.1", p), trusted=True, rtcp_mux=False),
        LegConfig("b", remote=bob.getsockname(), trusted=True),
    )
    try:
        a_rtp, a_rtcp = s.local_address("a"), s.local_rtcp_address("a")
        assert a_rtp[1] % 2 == 0 and a_rtcp[1] == a_rtp[1] + 1 and 30000 <= a_rtp[1] <= 39999
        assert s.local_rtcp_address("b") == s.local_address("b")  # mux leg: one port
        rr = serialize_rtcp([ReceiverReport(0xA)])
        await loop.sock_sendto(rtcp_sock, rr, a_rtcp)  # RTCP from alice's port + 1
        got = await asyncio.wait_for(loop.sock_recv(bob, 2048), 2)
        assert got == rr  # forwarded on bob's muxed port
        sr = serialize_rtcp([SenderReport(0xB, 1 << 32, 0, 0, 0)])
        await loop.sock_sendto(bob, sr, s.local_address("b"))
        data, src = await asyncio.wait_for(loop.sock_recvfrom(rtcp_sock, 2048), 2)
        assert data == sr and src == a_rtcp  # to alice's RTCP port, from the relay's
        pkt = bytes(RtpPacket(0, 1, 160, 0xB, b"\xff" * 160))
        await loop.sock_sendto(bob, pkt, s.local_address("b"))
        data, src = await asyncio.wait_for(loop.sock_recvfrom(rtp_sock, 2048), 2)
        assert data == pkt and src == a_rtp
    finally:
        await relay.close_all()
        for s_ in (rtp_sock, rtcp_sock, bob):
            s_.close()


async def test_hold_suspends_rtp_timeout() -> None:
    bus = InProcessBus()
    ended: list[object] = []
    bus.subscribe(lambda e: ended.append(e) if isinstance(e, CallEnded) else None)
    relay = MediaRelay(bus=bus, rtp_timeout_s=0.4, stats_interval_s=10)
    s = await relay.create_session(
        "call-12", LegConfig("a", trusted=True), LegConfig("b", trusted=True)
    )
    s.set_hold(True)
    await asyncio.sleep(1.0)  # silent well past rtp_timeout_s, but on hold
    assert not s.ended.is_set() and ended == []
    s.set_hold(False)
    await asyncio.wait_for(s.ended.wait(), 3)
    assert s.end_reason == "rtp-timeout" and len(ended) == 1
    await asyncio.sleep(0)
    assert "call-12" not in relay.sessions  # the relay dropped the ended session
    await relay.close_all()


async def test_many_sessions_release_their_sockets() -> None:
    import os

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    relay = MediaRelay()
    before = fds()
    for i in range(40):
        await relay.create_session(
            f"load-{i}",
            LegConfig("a", srtp_rx=keys(), srtp_tx=keys()),
            LegConfig("b", trusted=True, rtcp_mux=i % 2 == 0),
        )
    assert fds() >= before + 40 * 2
    await relay.close_all()
    await asyncio.sleep(0)
    assert fds() <= before and relay.sessions == {}
