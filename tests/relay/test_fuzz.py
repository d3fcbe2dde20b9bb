"""Hostile datagrams at the relay: nothing crashes the data path, nothing but verified SRTP
moves the latch or reaches the other leg, and genuine media still flows afterwards. SRTCP is
re-keyed across legs like SRTP."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callward.relay.leg import LegConfig
from callward.relay.session import MediaRelay
from callward.rtp.packet import RtpPacket
from callward.rtp.rtcp import ReceiverReport, ReportBlock, parse_rtcp, serialize_rtcp
from callward.rtp.srtp import SrtpContext, SrtpKeying

pytestmark = pytest.mark.timeout(120)

rtp_like = st.builds(
    lambda head, body: bytes([0x80 | (head & 0x3F), head >> 8 & 0xFF]) + body,
    st.integers(0, 0xFFFF),
    st.binary(min_size=0, max_size=120),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=200), rtp_like), min_size=1, max_size=40))
def test_garbage_never_breaks_relay(datagrams: list[bytes]) -> None:
    async def scenario() -> None:
        ka, kb, kc, kd = (SrtpKeying.generate() for _ in range(4))
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        relay = MediaRelay()
        s = await relay.create_session(
            "fuzz",
            LegConfig("a", srtp_rx=ka, srtp_tx=kb),
            LegConfig("b", remote=sink.getsockname(), srtp_rx=kc, srtp_tx=kd),
        )
        try:
            for d in datagrams:  # straight into the data path, from an unknown address
                s._on_datagram(0, d, ("127.0.0.1", 9))
            assert s.legs[0].latched is None  # nothing unverified latched
            assert s.counters[1].packets_out == 0  # and nothing reached leg b
            plain = bytes(RtpPacket(0, 1, 160, 7, b"x" * 20))
            s._on_datagram(0, SrtpContext(ka, inbound=False).protect(plain), ("127.0.0.1", 10))
            await asyncio.sleep(0.05)
            wire = sink.recv(2048)
            assert SrtpContext(kd, inbound=True).unprotect(wire) == plain
        finally:
            await relay.close_all()
            sink.close()

    asyncio.run(scenario())


async def test_srtcp_rekeyed_across_legs() -> None:
    ka, kb, kc, kd = (SrtpKeying.generate() for _ in range(4))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2)
    relay = MediaRelay()
    s = await relay.create_session(
        "rtcp",
        LegConfig("a", srtp_rx=ka, srtp_tx=kb),
        LegConfig("b", remote=sink.getsockname(), srtp_rx=kc, srtp_tx=kd),
    )
    try:
        rr = serialize_rtcp([ReceiverReport(0x42, (ReportBlock(7, 12, 3, 100, 9),))])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.sendto(SrtpContext(ka, inbound=False).protect_rtcp(rr), s.local_address("a"))
            wire = await asyncio.get_running_loop().run_in_executor(None, sink.recv, 2048)
        assert parse_rtcp(SrtpContext(kd, inbound=True).unprotect_rtcp(wire)) == parse_rtcp(rr)
        assert s.counters[0].rtcp_in == 1
    finally:
        await relay.close_all()
        sink.close()
