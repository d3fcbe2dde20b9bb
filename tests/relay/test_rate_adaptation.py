"""Opus rate control driven by the relay: a loss ramp gives the MediaAdaptation events the
policy's formulas give by hand (rate_control module docstring), on an InProcessBus, both from
direct link reports and from RTCP receiver reports arriving over loopback SRTCP."""

from __future__ import annotations

import asyncio

import pytest

from callward.events import InProcessBus, MediaAdaptation, event_from_dict, event_to_dict
from callward.media.rate_control import LinkReport
from callward.relay.leg import LegConfig
from callward.relay.session import MediaRelay
from callward.rtp.rtcp import ReceiverReport, ReportBlock, serialize_rtcp
from callward.rtp.srtp import SrtpKeying

pytestmark = pytest.mark.timeout(30)


async def session_with_bus(make_phone, bus: InProcessBus):  # type: ignore[no-untyped-def]
    ka, kb, kc, kd = (SrtpKeying.generate() for _ in range(4))
    alice = await make_phone(tx=ka, rx=kb)
    bob = await make_phone(tx=kc, rx=kd)
    relay = MediaRelay(bus=bus, stats_interval_s=3600)
    s = await relay.create_session(
        "opus-call",
        LegConfig("a", remote=alice.address, srtp_rx=ka, srtp_tx=kb, rate_control=True,
                  clock_rate=48000),
        LegConfig("b", remote=bob.address, srtp_rx=kc, srtp_tx=kd, clock_rate=48000),
    )  # fmt: skip
    return relay, s, alice


async def test_loss_ramp_publishes_expected_events(make_phone) -> None:  # type: ignore[no-untyped-def]
    bus = InProcessBus()
    seen: list[MediaAdaptation] = []
    bus.subscribe(lambda e: seen.append(e) if isinstance(e, MediaAdaptation) else None)
    relay, s, _ = await session_with_bus(make_phone, bus)
    try:
        ramp = [0.0, 0.04, 0.20, 0.30, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        for x in ramp:
            await s.on_link_report("a", LinkReport(x, 50.0))
    finally:
        await relay.close_all()
    # smoothed loss (EWMA 0.5): 0, .02, .11, .205, .1025, .05125, .0256, .0128, .0064, .0032
    # .11 > 10%: 24000 * (1 - .055) = 22680 and FEC on (> 3%); .205: 22680 * .8975 = 20355;
    # .1025: 20355 * .94875 = 19311; then inside the band (no bitrate change, FEC stays on
    # above 1%); .0064 < 1%: FEC off; third report below 2%: 19311 * 1.08 = 20855
    assert [(e.bitrate, e.fec, e.ptime_ms, e.reason) for e in seen] == [
        (22680, True, 20, "loss-rise,fec-on"),
        (20355, True, 20, "loss-rise"),
        (19311, True, 20, "loss-rise"),
        (19311, False, 20, "fec-off"),
        (20855, False, 20, "loss-fall"),
    ]
    assert all(e.call_id == "opus-call" and e.leg == "a" for e in seen)
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)
    # RTT above 300 ms on a report lengthens ptime (and back below 200 ms)
    relay2, s2, _ = await session_with_bus(make_phone, bus)
    try:
        ev = await s2.on_link_report("a", LinkReport(0.0, 350.0))
        assert ev is not None and (ev.ptime_ms, ev.reason) == (40, "rtt-high")
        assert await s2.on_link_report("a", LinkReport(0.0, 250.0)) is None  # hysteresis
        ev = await s2.on_link_report("a", LinkReport(0.0, 150.0))
        # third clean report too: 24000 * 1.08 = 25920 in the same decision
        assert ev is not None
        assert (ev.bitrate, ev.ptime_ms, ev.reason) == (25920, 20, "loss-fall,ptime-normal")
    finally:
        await relay2.close_all()


async def test_rtcp_loss_report_drives_an_event(make_phone) -> None:  # type: ignore[no-untyped-def]
    bus = InProcessBus()
    seen: list[MediaAdaptation] = []
    bus.subscribe(lambda e: seen.append(e) if isinstance(e, MediaAdaptation) else None)
    relay, s, alice = await session_with_bus(make_phone, bus)
    try:
        # alice reports losing 64/256 = 25% of what the relay sends her
        rr = serialize_rtcp([ReceiverReport(0xA1, (ReportBlock(0xB0, fraction_lost=64),))])
        alice.transport.sendto(alice.tx.protect_rtcp(rr), s.local_address("a"))
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.02)
    finally:
        await relay.close_all()
    # first report, no smoothing history: 24000 * (1 - 0.125) = 21000, FEC on
    assert [(e.bitrate, e.fec, e.reason) for e in seen] == [(21000, True, "loss-rise,fec-on")]


def test_media_adaptation_round_trips() -> None:
    ev = MediaAdaptation(ts=1.5, node="relay-1", seq=9, tenant="t1", call_id="c", leg="b",
                         bitrate=16000, fec=True, ptime_ms=40, reason="metered")  # fmt: skip
    d = event_to_dict(ev)
    assert d["kind"] == "media_adaptation" and d["bitrate"] == 16000 and d["fec"] is True
    assert event_from_dict(d) == ev
    assert event_from_dict({**d, "future_field": 1}) == ev
