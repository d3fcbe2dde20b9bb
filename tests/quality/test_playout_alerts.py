"""Playout replay (vs the media plane's FixedBuffer), MOS per model, alerts, DPI policy."""

from __future__ import annotations

import numpy as np
import pytest

from callward.config import QualityConfig, TenantQuality
from callward.events import InProcessBus, MediaStats, QualityAlert
from callward.quality.alerts import QualityMonitor, Thresholds, evaluate, thresholds_for
from callward.quality.dpi import SamplingPolicy, rtp_header_length
from callward.quality.playout import fixed_playout, stream_mos
from callward.quality.synth import rtp_header
from callward.rtp.jitter_buffer import FixedBuffer


def _trace(jitter_ms: float, n: int = 500, seed: int = 1):
    rng = np.random.default_rng(seed)
    ts = np.arange(n, dtype=np.int64) * 160
    arr = np.arange(n) * 0.02 + rng.uniform(0, jitter_ms / 1000, n)
    return arr, ts


@pytest.mark.parametrize("depth", [20.0, 50.0, 200.0])
def test_fixed_playout_equals_media_fixed_buffer(depth: float) -> None:
    arr, ts = _trace(80)
    ours = fixed_playout(arr, ts, 8000, depth)
    ref = FixedBuffer(depth).run(arr.tolist(), ts.tolist(), 8000)
    assert int(ours.late.sum()) == ref.late
    assert ours.mean_delay_ms == pytest.approx(ref.mean_delay_ms)


def test_effective_loss_lowers_mos_under_jitter() -> None:
    arr, ts = _trace(120)
    seq = np.arange(len(ts))
    m = stream_mos("g711", arr, ts, seq, expected=len(ts), lost=0, clock_rate=8000)
    assert m["network"] is not None and m["fixed50"] is not None and m["fixed200"] is not None
    assert m["network"]["loss_pct"] == 0
    assert m["fixed50"]["late"] > 0  # a 50 ms buffer cannot absorb 120 ms of jitter
    assert m["fixed50"]["mos"] < m["network"]["mos"]
    assert m["fixed200"]["late"] == 0 and m["fixed200"]["delay_ms"] > m["fixed50"]["delay_ms"]
    assert m["adaptive"] is not None
    # unknown codec → no MOS rather than a guess
    assert stream_mos(None, arr, ts, seq, len(ts), 0, 8000)["network"] is None


def test_thresholds_per_tenant_and_alert_cause() -> None:
    cfg = QualityConfig(tenants={"gold": TenantQuality(mos_warn=4.0, mos_critical=3.5)})
    assert thresholds_for(cfg, "gold") == Thresholds(4.0, 3.5)
    assert thresholds_for(cfg, "other") == Thresholds(3.6, 3.1)
    mos = {"network": {"mos": 3.7, "ie_eff": 5.0, "id": 1.0},
           "adaptive": {"mos": 3.3, "ie_eff": 20.0, "id": 2.0}}  # fmt: skip
    a = evaluate(mos, thresholds_for(cfg, "gold"), call_id="c", leg="a", tenant="gold",
                 ts=1.0, node="n", seq=1)  # fmt: skip
    assert a is not None and a.level == "critical" and a.cause == "jitter"
    assert evaluate(mos, Thresholds(3.0, 2.0), call_id="c", leg="a", tenant="t", ts=1.0,
                    node="n", seq=1) is None  # fmt: skip


async def test_monitor_publishes_alert_for_lossy_leg() -> None:
    bus = InProcessBus()
    seen: list[object] = []
    bus.subscribe(seen.append)
    QualityMonitor(bus, QualityConfig(), node="q1", clock=lambda: 42.0)
    await bus.publish(MediaStats(ts=1.0, node="r", seq=1, call_id="c1", codec="PCMU",
                                 packets=900, lost=100, jitter_ms=5.0))  # fmt: skip
    await bus.publish(MediaStats(ts=1.0, node="r", seq=2, call_id="c2", codec="PCMU",
                                 packets=1000, lost=0, jitter_ms=1.0))  # fmt: skip
    alerts = [e for e in seen if isinstance(e, QualityAlert)]
    assert [(a.call_id, a.cause, a.ts) for a in alerts] == [("c1", "loss", 42.0)]


def test_dpi_policy_header_only_and_sampling() -> None:
    pol = SamplingPolicy(
        QualityConfig(sample_rate=0.25, tenants={"all": TenantQuality(sample_rate=1.0)})
    )
    pkt = rtp_header(0, 1, 2, 3) + b"voice payload"
    assert pol.header_only(pkt) == pkt[:12]
    assert rtp_header_length(bytes([0x82]) + pkt[1:12] + b"\0" * 8 + b"x") == 20  # 2 CSRCs
    picks = sum(pol.should_inspect(f"call-{i}") for i in range(4000))
    assert 800 < picks < 1200  # ≈ 25 %
    assert pol.should_inspect("call-1") == pol.should_inspect("call-1")  # deterministic
    assert all(pol.should_inspect(f"c{i}", "all") for i in range(50))
    assert not SamplingPolicy(QualityConfig(sample_rate=0.0)).should_inspect("x")
