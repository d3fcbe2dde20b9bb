"""MOS per byte: the cheapest media setting that still sounds good on the network at hand.

Given the path (loss, burstiness, RTT, jitter), the user's voice activity and a minimum MOS,
every setting the phone can produce (Opus 6-64 kb/s CBR or G.711, ptime 20/40/60, FEC on or
off, DTX/VAD on) is priced by the planner (bytes on the wire, SRTP and RTCP included) and
rated by a MOS function (``usage/mos.py``: the G.107.1/G.107 E-models). On a metered link the
cheapest setting with MOS >= target wins (ties: higher MOS); on an unmetered link the best MOS
wins (ties: fewer bytes). When nothing reaches the target, the best-sounding setting is
returned with ``meets_target`` False, so a caller can still place the call and say why.

Pure and deterministic: the phone runs it at call set-up (``ua/sdp_offer.py`` turns the
choice into what it offers) and again when RTCP reports a changed network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from callward.errors import ConfigError
from callward.usage.mos import MosFunction, MosQuery, estimate, mouth_to_ear
from callward.usage.planner import MediaChoice, plan_call

__all__ = ["Network", "Optimum", "Setting", "candidates", "optimise"]

OPUS_BITRATES = (6000, 8000, 9000, 10000, 11000, 12000, 13000, 14000, 16000, 20000, 24000, 32000)
PTIMES = (20, 40, 60)


@dataclass(frozen=True, slots=True)
class Network:
    """The path and the user: loss in percent, G.107 BurstR, round trip and jitter in ms,
    fraction of time the user talks, IP version, whether bytes are paid for."""

    loss_pct: float = 0.0
    burst_r: float = 1.0
    rtt_ms: float = 100.0
    jitter_ms: float = 20.0
    voice_activity: float = 0.5
    ip_version: int = 4
    metered: bool = True
    srtp: str = "AES_CM_128_HMAC_SHA1_80"
    rohc: bool = False
    rohc_header_bytes: float = 4.0

    def __post_init__(self) -> None:
        checks = (
            (0 <= self.loss_pct <= 50, f"loss {self.loss_pct} %: expected 0..50"),
            (1 <= self.burst_r <= 10, f"burstiness {self.burst_r}: expected 1..10"),
            (0 <= self.rtt_ms <= 5000, f"RTT {self.rtt_ms} ms: expected 0..5000"),
            (0 <= self.jitter_ms <= 1000, f"jitter {self.jitter_ms} ms: expected 0..1000"),
            (0 < self.voice_activity <= 1, "voice activity must be in (0, 1]"),
        )
        for ok, why in checks:
            if not ok or any(math.isnan(v) for v in (self.loss_pct, self.rtt_ms, self.jitter_ms)):
                raise ConfigError(why)


@dataclass(frozen=True, slots=True)
class Setting:
    codec: str
    bitrate: int
    ptime_ms: int
    fec: bool
    dtx: bool = True


@dataclass(frozen=True, slots=True)
class Scored:
    setting: Setting
    mos: float
    bytes_per_minute: float  # one direction, media + RTCP, on the wire
    delay_ms: float
    residual_loss_pct: float
    model: str

    def as_dict(self) -> dict[str, object]:
        s = self.setting
        return {
            "codec": s.codec, "bitrate": s.bitrate, "ptime_ms": s.ptime_ms, "fec": s.fec,
            "dtx": s.dtx, "mos": round(self.mos, 3),
            "bytes_per_minute": round(self.bytes_per_minute),
            "bytes_per_minute_both_directions": round(2 * self.bytes_per_minute),
            "mouth_to_ear_ms": round(self.delay_ms, 1),
            "residual_loss_pct": round(self.residual_loss_pct, 3), "model": self.model,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Optimum:
    best: Scored
    meets_target: bool
    min_mos: float
    evaluated: int
    runners_up: tuple[Scored, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, object]:
        return {
            "choice": self.best.as_dict(),
            "meets_target": self.meets_target,
            "min_mos": self.min_mos,
            "evaluated": self.evaluated,
            "runners_up": [r.as_dict() for r in self.runners_up],
        }


def candidates(codecs: tuple[str, ...] = ("opus", "pcmu")) -> list[Setting]:
    out: list[Setting] = []
    for codec in codecs:
        for ptime in PTIMES:
            if codec == "opus":
                out += [Setting("opus", b, ptime, fec) for b in OPUS_BITRATES
                        for fec in (False, True)]  # fmt: skip
            else:
                out.append(Setting(codec, 64000, ptime, False))
    return out


def _score(s: Setting, net: Network, mos_fn: MosFunction) -> Scored | None:
    choice = MediaChoice(
        codec=s.codec, ptime_ms=s.ptime_ms, bitrate=s.bitrate if s.codec == "opus" else None,
        srtp=net.srtp, ip_version=net.ip_version, rohc=net.rohc,
        rohc_header_bytes=net.rohc_header_bytes, voice_activity=net.voice_activity,
        dtx=s.dtx, fec=s.fec,
    )  # fmt: skip
    plan = plan_call(choice)
    delay = mouth_to_ear(s.codec, s.ptime_ms, s.fec, net.rtt_ms, net.jitter_ms)
    est = mos_fn(MosQuery(s.codec, s.bitrate, s.ptime_ms, s.fec, net.loss_pct, delay,
                          net.burst_r))  # fmt: skip
    if est is None:
        return None
    return Scored(s, est.mos, plan.bytes_per_minute, delay, est.residual_loss_pct, est.model)


def optimise(
    net: Network,
    min_mos: float = 4.0,
    *,
    settings: list[Setting] | None = None,
    mos_fn: MosFunction = estimate,
) -> Optimum:
    """The setting to use on ``net`` (module docstring)."""
    if not 1.0 <= min_mos <= 4.5 or math.isnan(min_mos):
        raise ConfigError(f"minimum MOS {min_mos}: expected 1.0..4.5")
    scored = [x for s in (settings or candidates()) if (x := _score(s, net, mos_fn))]
    if not scored:
        raise ConfigError("no candidate setting could be rated")
    ok = [x for x in scored if x.mos >= min_mos]
    if net.metered and ok:
        ranked = sorted(ok, key=lambda x: (x.bytes_per_minute, -x.mos))
    elif ok:
        ranked = sorted(ok, key=lambda x: (-x.mos, x.bytes_per_minute))
    else:
        ranked = sorted(scored, key=lambda x: (-x.mos, x.bytes_per_minute))
    return Optimum(ranked[0], bool(ok), min_mos, len(scored), tuple(ranked[1:6]))
