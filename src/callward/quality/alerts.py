"""MOS thresholds per tenant → QualityAlert events, and the live monitor on the event bus.

The cause names the impairment that cost the most R (G.107 terms): ``loss`` (network
Ie,eff), ``jitter`` (late discards the playout buffer added on top of network loss),
``delay`` (Id) or ``codec`` (the codec's own Ie with little loss).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from callward.quality import emodel_wb
from callward.quality.playout import codec_for

if TYPE_CHECKING:  # config (pydantic) and events load only where a monitor or alert is made
    from callward.config import QualityConfig
    from callward.events import EventBus, QualityAlert

__all__ = [
    "DEFAULTS",
    "QualityMonitor",
    "Thresholds",
    "dominant_cause",
    "evaluate",
    "thresholds_for",
]

# QualityConfig's defaults for what `callward analyze` reads, so a run without --config or
# CALLWARD_QUALITY__* overrides needs no pydantic (tests/quality/test_accel.py checks they
# equal QualityConfig()).
DEFAULTS: dict[str, float] = {
    "mos_warn": 3.6, "mos_critical": 3.1, "base_delay_ms": 40.0, "rtp_timeout_s": 10.0,
    "pdd_warn_s": 5.0,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Thresholds:
    warn: float
    critical: float

    def level(self, mos: float) -> str | None:
        if mos < self.critical:
            return "critical"
        if mos < self.warn:
            return "warn"
        return None


def thresholds_for(cfg: QualityConfig, tenant: str) -> Thresholds:
    t = cfg.tenants.get(tenant)
    warn = t.mos_warn if t and t.mos_warn is not None else cfg.mos_warn
    crit = t.mos_critical if t and t.mos_critical is not None else cfg.mos_critical
    return Thresholds(warn, crit)


def dominant_cause(mos: dict[str, Any], model: str, codec_ie: float = 0.0) -> str:
    """Which G.107 term cost the most R for ``model`` (see module docstring)."""
    net = mos.get("network") or {}
    m = mos.get(model) or net
    net_ie = float(net.get("ie_eff", 0.0)) - codec_ie
    jitter_ie = float(m.get("ie_eff", 0.0)) - float(net.get("ie_eff", 0.0))
    delay = float(m.get("id", 0.0))
    terms = {"loss": net_ie, "jitter": jitter_ie, "delay": delay, "codec": codec_ie}
    return max(terms, key=lambda k: terms[k])


def evaluate(
    mos: dict[str, Any],
    thresholds: Thresholds,
    *,
    call_id: str,
    leg: str,
    tenant: str,
    ts: float,
    node: str,
    seq: int,
    model: str = "adaptive",
    codec_ie: float = 0.0,
) -> QualityAlert | None:
    """An alert when the stream's MOS under ``model`` (else network) is below a threshold."""
    m = mos.get(model) or mos.get("network")
    if not m:
        return None
    level = thresholds.level(float(m["mos"]))
    if level is None:
        return None
    from callward.events import QualityAlert

    return QualityAlert(
        ts=ts, node=node, seq=seq, tenant=tenant, call_id=call_id, leg=leg, level=level,
        mos=float(m["mos"]), cause=dominant_cause(mos, model, codec_ie),
    )  # fmt: skip


class QualityMonitor:
    """Subscribes to MediaStats and publishes QualityAlert when a leg's MOS is too low.

    MediaStats carrying a MOS are judged as-is; otherwise the E-model is run on the reported
    loss (jitter enters as delay: a buffer of ~2× jitter, G.107 Id). Clock injected for tests.

    Periodic stats repeat: an alert is published when a leg's level changes (ok → warn →
    critical and back down is silent until it worsens again); CallEnded forgets the call.
    """

    def __init__(self, bus: EventBus, cfg: QualityConfig, node: str, clock: Callable[[], float]):
        self.bus = bus
        self.cfg = cfg
        self.node = node
        self.clock = clock
        self.seq = 0
        self._level: dict[tuple[str, str], str | None] = {}  # (call, leg) → last level alerted
        bus.subscribe(self.on_event)

    async def on_event(self, ev: object) -> None:
        from callward.events import CallEnded, MediaStats

        if isinstance(ev, CallEnded):
            for leg in ("a", "b"):
                self._level.pop((ev.call_id, leg), None)
            return
        if not isinstance(ev, MediaStats):
            return
        key = codec_for(-1, ev.codec)
        if ev.mos is None and key is None:
            return
        total = ev.packets + max(ev.lost, 0)
        loss = 100.0 * max(ev.lost, 0) / total if total else 0.0
        frame = emodel_wb.frame_ms(key) if key else 20.0
        delay = self.cfg.base_delay_ms + frame + 2 * ev.jitter_ms
        r = emodel_wb.mos_for(key or "g711", loss=min(loss, 100.0),
                              delay_ms=min(delay, 10_000.0))  # fmt: skip
        mos_val = ev.mos if ev.mos is not None else r.mos
        ie = emodel_wb.codec_ie(key) if key else 0.0
        terms = {"network": {"mos": mos_val, "ie_eff": r.ie_eff, "id": r.id}}
        self.seq += 1
        alert = evaluate(
            terms, thresholds_for(self.cfg, ev.tenant), call_id=ev.call_id, leg=ev.leg,
            tenant=ev.tenant, ts=self.clock(), node=self.node, seq=self.seq, model="network",
            codec_ie=ie,
        )  # fmt: skip
        key2 = (ev.call_id, ev.leg)
        level = alert.level if alert is not None else None
        previous = self._level.get(key2)
        if level is None or level == previous or (previous == "critical" and level == "warn"):
            if level is None and key2 in self._level:
                self._level[key2] = None
            return
        if len(self._level) >= 100_000:  # bounded: calls whose CallEnded never came
            self._level.clear()
        self._level[key2] = level
        assert alert is not None
        await self.bus.publish(alert)
