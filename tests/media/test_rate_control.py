"""Opus rate controller on loss ramps, with each expected value worked out from the policy's
formulas by hand."""

from __future__ import annotations

import pytest

from callward.errors import MediaError
from callward.media.rate_control import LinkReport, OpusRateController, RateDecision


def run(
    ctrl: OpusRateController, losses: list[float], rtt: float | None = 50.0
) -> list[RateDecision]:
    return [ctrl.on_report(LinkReport(x, rtt)) for x in losses]


def test_clean_link_ramps_up_after_hold_then_caps() -> None:
    c = OpusRateController(start_bitrate=20000, max_bitrate=24000, hold_reports=3)
    d = run(c, [0.0] * 5)
    # two reports held, then 20000*1.08 = 21600, then 23328, then 24000 (cap at 25194)
    assert [x.bitrate for x in d] == [20000, 20000, 21600, 23328, 24000]
    assert not any(x.fec for x in d) and all(x.ptime_ms == 20 for x in d)
    assert d[2].changed and not d[0].changed


def test_loss_ramp_lowers_bitrate_and_enables_fec() -> None:
    c = OpusRateController(start_bitrate=24000, smoothing=1.0)  # no smoothing: exact values
    d = run(c, [0.02, 0.05, 0.15, 0.25])
    assert d[0].bitrate == 24000 and not d[0].fec  # 2%: inside the band, FEC still off
    assert d[1].fec and d[1].packet_loss_perc == 5 and d[1].bitrate == 24000
    assert d[2].bitrate == int(24000 * (1 - 0.5 * 0.15)) == 22200
    assert d[3].bitrate == int(22200 * (1 - 0.5 * 0.25)) == 19425
    assert d[3].packet_loss_perc == 25 and "bitrate down" in d[3].reason


def test_fec_hysteresis_band() -> None:
    c = OpusRateController(smoothing=1.0)
    d = run(c, [0.04, 0.02, 0.015, 0.011, 0.005, 0.02])
    # on at 4% (> 3%), stays on at 2% / 1.5% / 1.1% (not below 1%), off at 0.5%,
    # and stays off at 2% (not above 3%)
    assert [x.fec for x in d] == [True, True, True, True, False, False]


def test_smoothing_ignores_a_single_spike() -> None:
    c = OpusRateController(smoothing=0.25, start_bitrate=24000)
    d = run(c, [0.0, 0.0, 0.2, 0.0, 0.0])
    # EWMA after the spike: 0.25*0.2 = 5% -> FEC on, but below loss_high: bitrate kept
    assert d[2].smoothed_loss == pytest.approx(0.05)
    assert d[2].bitrate == 24000 and d[2].fec


def test_floor_respected() -> None:
    c = OpusRateController(min_bitrate=8000, start_bitrate=9000, smoothing=1.0)
    d = run(c, [0.5] * 10)
    assert min(x.bitrate for x in d) == 8000 and d[-1].bitrate == 8000


def test_ptime_follows_rtt_with_hysteresis_and_metering() -> None:
    c = OpusRateController()
    seq = [100, 350, 250, 210, 150]
    d = [c.on_report(LinkReport(0.0, r)) for r in seq]
    assert [x.ptime_ms for x in d] == [20, 40, 40, 40, 20]
    m = c.on_report(LinkReport(0.0, 50, metered=True))
    assert m.ptime_ms == 40 and "metered" in m.reason


def test_from_rtcp_and_validation() -> None:
    r = LinkReport.from_rtcp(64, 0.120)
    assert r.fraction_lost == 0.25 and r.rtt_ms == pytest.approx(120)
    with pytest.raises(MediaError):
        LinkReport(1.5)
    with pytest.raises(MediaError):
        OpusRateController(min_bitrate=30000, start_bitrate=20000)
    with pytest.raises(MediaError):
        OpusRateController(fec_on=0.01, fec_off=0.02)


def test_causes_are_short_codes_per_change() -> None:
    c = OpusRateController(start_bitrate=24000, smoothing=1.0)
    d = run(c, [0.15], rtt=350.0)[0]
    # 15% > 10%: bitrate down; > 3%: FEC on; RTT 350 > 300 ms: ptime 40
    assert d.cause == "loss-rise,fec-on,rtt-high"
    assert run(c, [0.05], rtt=350.0)[0].cause == ""  # inside every band: nothing changes
    m = OpusRateController().on_report(LinkReport(0.0, None, metered=True))
    assert (m.ptime_ms, m.cause) == (40, "metered")
