"""Opus rate control from RTCP feedback (fraction lost, RTT), with hysteresis so a noisy link
does not make the encoder oscillate.

Policy (loss-based, in the spirit of the GCC loss controller, draft-ietf-rmcat-gcc §6):

- Loss is smoothed (EWMA of RTCP ``fraction_lost``). Above ``loss_high`` the bitrate drops
  multiplicatively by ``(1 - 0.5 * loss)`` per report; below ``loss_low`` for ``hold_reports``
  consecutive reports it grows by ``increase`` per report; in between it holds.
- In-band FEC (RFC 6716 §2.1.7 LBRR) turns on above ``fec_on`` and off only below ``fec_off``
  (a hysteresis band); the encoder's expected-loss knob follows the smoothed loss.
- ptime: 40 ms (fewer packets and header bytes) on metered links or when RTT exceeds
  ``rtt_high_ms`` (a congested path), back to 20 ms only once RTT is below ``rtt_low_ms``.

Each report returns a frozen :class:`RateDecision`; ``changed`` and ``reason`` are there so a
service can publish or log only real changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from callward.errors import MediaError

__all__ = ["LinkReport", "OpusRateController", "RateDecision"]


@dataclass(frozen=True, slots=True)
class LinkReport:
    """What one RTCP receiver report says about the path (plus whether the link is metered)."""

    fraction_lost: float  # 0..1 (RTCP fraction_lost / 256)
    rtt_ms: float | None = None
    metered: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction_lost <= 1.0:
            raise MediaError("fraction_lost must be within 0..1")
        if self.rtt_ms is not None and self.rtt_ms < 0:
            raise MediaError("rtt_ms must be >= 0")

    @classmethod
    def from_rtcp(
        cls, fraction_lost: int, rtt_s: float | None, metered: bool = False
    ) -> LinkReport:
        return cls(fraction_lost / 256.0, None if rtt_s is None else rtt_s * 1000.0, metered)


@dataclass(frozen=True, slots=True)
class RateDecision:
    bitrate: int
    fec: bool
    packet_loss_perc: int
    ptime_ms: int
    smoothed_loss: float
    changed: bool = False
    reason: str = ""
    #: short machine-readable causes, comma-separated ("loss-rise", "loss-fall", "fec-on",
    #: "fec-off", "rtt-high", "metered", "ptime-normal"), for events and metrics
    cause: str = ""


class OpusRateController:
    def __init__(
        self,
        *,
        min_bitrate: int = 8000,
        max_bitrate: int = 32000,
        start_bitrate: int = 24000,
        loss_low: float = 0.02,
        loss_high: float = 0.10,
        fec_on: float = 0.03,
        fec_off: float = 0.01,
        increase: float = 0.08,
        hold_reports: int = 3,
        rtt_high_ms: float = 300.0,
        rtt_low_ms: float = 200.0,
        smoothing: float = 0.5,
    ) -> None:
        if not 6000 <= min_bitrate <= start_bitrate <= max_bitrate <= 510000:
            raise MediaError("need 6000 <= min_bitrate <= start_bitrate <= max_bitrate <= 510000")
        if not 0 <= fec_off < fec_on <= 1 or not 0 <= loss_low < loss_high <= 1:
            raise MediaError("hysteresis thresholds must satisfy off < on and low < high")
        if not rtt_low_ms < rtt_high_ms:
            raise MediaError("rtt_low_ms must be below rtt_high_ms")
        if not 0 < smoothing <= 1:
            raise MediaError("smoothing must be in (0, 1]")
        self.min_bitrate, self.max_bitrate = min_bitrate, max_bitrate
        self.loss_low, self.loss_high = loss_low, loss_high
        self.fec_on_at, self.fec_off_at = fec_on, fec_off
        self.increase, self.hold_reports = increase, hold_reports
        self.rtt_high_ms, self.rtt_low_ms = rtt_high_ms, rtt_low_ms
        self.smoothing = smoothing
        self._loss: float | None = None
        self._good = 0
        self.current = RateDecision(start_bitrate, False, 0, 20, 0.0)

    def on_report(self, report: LinkReport) -> RateDecision:
        a = self.smoothing
        loss = (
            report.fraction_lost
            if self._loss is None
            else (a * report.fraction_lost + (1 - a) * self._loss)
        )
        self._loss = loss
        cur = self.current
        reasons: list[str] = []
        causes: list[str] = []

        bitrate = cur.bitrate
        if loss > self.loss_high:
            self._good = 0
            bitrate = max(self.min_bitrate, int(bitrate * (1 - 0.5 * loss)))
            if bitrate != cur.bitrate:
                reasons.append(f"loss {loss:.1%} > {self.loss_high:.0%}: bitrate down")
                causes.append("loss-rise")
        elif loss < self.loss_low:
            self._good += 1
            if self._good >= self.hold_reports:
                bitrate = min(self.max_bitrate, int(bitrate * (1 + self.increase)))
                if bitrate != cur.bitrate:
                    reasons.append("loss low: bitrate up")
                    causes.append("loss-fall")
        else:
            self._good = 0

        fec = cur.fec
        if not fec and loss > self.fec_on_at:
            fec = True
            reasons.append(f"loss {loss:.1%}: FEC on")
            causes.append("fec-on")
        elif fec and loss < self.fec_off_at:
            fec = False
            reasons.append(f"loss {loss:.1%}: FEC off")
            causes.append("fec-off")
        perc = min(30, round(loss * 100)) if fec else 0

        ptime = cur.ptime_ms
        rtt = report.rtt_ms
        if ptime == 20 and (report.metered or (rtt is not None and rtt > self.rtt_high_ms)):
            ptime = 40
            reasons.append("metered link: ptime 40" if report.metered else "RTT high: ptime 40")
            causes.append("metered" if report.metered else "rtt-high")
        elif ptime == 40 and not report.metered and (rtt is None or rtt < self.rtt_low_ms):
            ptime = 20
            reasons.append("ptime back to 20")
            causes.append("ptime-normal")

        changed = (bitrate, fec, perc, ptime) != (
            cur.bitrate, cur.fec, cur.packet_loss_perc, cur.ptime_ms,
        )  # fmt: skip
        self.current = RateDecision(
            bitrate, fec, perc, ptime, loss, changed, "; ".join(reasons), ",".join(causes)
        )
        return self.current
