"""ITU-T G.107 (06/2015) E-model: transmission rating R and the R → MOS-CQE mapping.

R = Ro − Is − Id − Ie,eff + A  (G.107 §3.1, eq. 3-1), with
- Ro, basic signal-to-noise ratio (§3.3, eq. 3-2 … 3-8),
- Is, simultaneous impairments (§3.4, eq. 3-9 … 3-19),
- Id, delay impairments Idte + Idle + Idd from T, Tr and Ta (§3.5, eq. 3-20 … 3-29),
- Ie,eff = Ie + (95 − Ie)·Ppl / (Ppl/BurstR + Bpl)  (§3.6, eq. 3-30),
- MOS = 1 + 0.035R + R(R − 60)(100 − R)·7·10⁻⁶ for 0 < R < 100 (Annex B, eq. B-4).

Codec Ie/Bpl come from ITU-T G.113 Appendix I (Table I.1 and Amendment 1, Table I.3).
G.113 publishes no narrowband values for Opus, AMR-WB or G.722 (those are wideband, rated by
G.107.1's Ie,WB), so those codecs are deliberately absent rather than guessed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from callward.errors import PolicyError

__all__ = ["CODECS", "Codec", "EModelInput", "EModelResult", "compute", "mos_from_r", "quick"]


@dataclass(frozen=True, slots=True)
class Codec:
    """Equipment impairment factor Ie and packet-loss robustness Bpl (G.113 Appendix I)."""

    name: str
    ie: float
    bpl: float
    frame_ms: float  # packetisation + algorithmic delay contribution used by analyze


CODECS: dict[str, Codec] = {
    # G.711 with packet-loss concealment (G.711 Appendix I PLC): Ie 0, Bpl 25.1.
    "g711": Codec("g711", 0.0, 25.1, 20.0),
    # G.711 without PLC under random loss: Bpl 4.3 (also G.107's default Bpl).
    "g711-noplc": Codec("g711-noplc", 0.0, 4.3, 20.0),
    # G.729A with VAD: Ie 11, Bpl 19.0.
    "g729a": Codec("g729a", 11.0, 19.0, 25.0),
    # G.723.1 6.3 kbit/s with VAD: Ie 15, Bpl 16.1.
    "g723.1": Codec("g723.1", 15.0, 16.1, 37.5),
    # GSM EFR (GSM 06.60): Ie 5, Bpl 10.
    "gsm-efr": Codec("gsm-efr", 5.0, 10.0, 20.0),
    # GSM FR (GSM 06.10): Ie 20 (G.113 Table I.1, no Bpl published: random-loss G.711 value).
    "gsm-fr": Codec("gsm-fr", 20.0, 4.3, 20.0),
}
ALIASES = {"pcmu": "g711", "pcma": "g711", "g711u": "g711", "g711a": "g711", "g729": "g729a",
           "g723": "g723.1", "gsm": "gsm-fr"}  # fmt: skip


def codec(name: str) -> Codec:
    """Look up a codec by name or common alias; PolicyError names the known ones."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    c = CODECS.get(key)
    if c is None:
        raise PolicyError(f"unknown codec {name!r} (known: {', '.join(sorted(CODECS))})")
    return c


@dataclass(frozen=True, slots=True)
class EModelInput:
    """G.107 Table 1 parameters; defaults are the standard's default values."""

    slr: float = 8.0
    rlr: float = 2.0
    stmr: float = 15.0
    lstr: float = 18.0
    ds: float = 3.0
    dr: float = 3.0
    telr: float = 65.0
    wepl: float = 110.0
    t: float = 0.0  # mean one-way delay of the echo path (ms)
    tr: float = 0.0  # round-trip delay in a 4-wire loop (ms)
    ta: float = 0.0  # absolute delay, mouth to ear (ms)
    qdu: float = 1.0
    ie: float = 0.0
    bpl: float = 4.3
    ppl: float = 0.0  # packet loss probability, percent
    burst_r: float = 1.0
    nc: float = -70.0
    nfor: float = -64.0
    ps: float = 35.0
    pr: float = 35.0
    a: float = 0.0


@dataclass(frozen=True, slots=True)
class EModelResult:
    r: float
    mos: float
    ro: float
    is_: float
    id_: float
    idte: float
    idle: float
    idd: float
    ie_eff: float
    a: float

    def as_dict(self) -> dict[str, float]:
        d = asdict(self)
        d["is"] = d.pop("is_")
        d["id"] = d.pop("id_")
        return {k: round(v, 4) for k, v in d.items()}


def _lg(x: float) -> float:
    return math.log10(x)


def compute(p: EModelInput) -> EModelResult:
    """Evaluate the E-model for one set of parameters."""
    olr = p.slr + p.rlr
    # §3.3 Ro: noise sources summed as powers (eq. 3-3 … 3-8).
    nfo = p.nfor + p.rlr
    pre = p.pr + 10 * _lg(1 + 10 ** ((10 - p.lstr) / 10))
    nor = p.rlr - 121 + pre + 0.008 * (pre - 35) ** 2
    nos = p.ps - p.slr - p.ds - 100 + 0.004 * (p.ps - olr - p.ds - 14) ** 2
    no = 10 * _lg(10 ** (p.nc / 10) + 10 ** (nos / 10) + 10 ** (nor / 10) + 10 ** (nfo / 10))
    ro = 15 - 1.5 * (p.slr + no)
    # §3.4 Is = Iolr + Ist + Iq.
    xolr = olr + 0.2 * (64 + no - p.rlr)
    iolr = 20 * ((1 + (xolr / 8) ** 8) ** (1 / 8) - xolr / 8)
    stmro = -10 * _lg(10 ** (-p.stmr / 10) + math.exp(-p.t / 4) * 10 ** (-p.telr / 10))
    ist = (
        12 * (1 + ((stmro - 13) / 6) ** 8) ** (1 / 8)
        - 28 * (1 + ((stmro + 1) / 19.4) ** 35) ** (1 / 35)
        - 13 * (1 + ((stmro - 3) / 33) ** 13) ** (1 / 13)
        + 29
    )
    q = 37 - 15 * _lg(p.qdu)
    g = 1.07 + 0.258 * q + 0.0602 * q**2
    y = (ro - 100) / 15 + 46 / 8.4 - g / 9
    z = 46 / 30 - g / 40
    iq = 15 * _lg(1 + 10**y + 10**z)
    is_ = iolr + ist + iq
    # §3.5 Id = Idte + Idle + Idd.
    terv = p.telr - 40 * _lg((1 + p.t / 10) / (1 + p.t / 150)) + 6 * math.exp(-0.3 * p.t**2)
    if p.stmr < 9:
        terv += ist / 2  # eq. 3-23: TERVs for low sidetone
    roe = -1.5 * (no - p.rlr)
    re = 80 + 2.5 * (terv - 14)
    idte = ((roe - re) / 2 + math.sqrt((roe - re) ** 2 / 4 + 100) - 1) * (1 - math.exp(-p.t))
    if p.stmr > 20:  # eq. 3-25: Idtes for very high sidetone
        idte = math.sqrt(idte**2 + ist**2)
    rle = 10.5 * (p.wepl + 7) * (p.tr + 1) ** (-1 / 4)
    idle = (ro - rle) / 2 + math.sqrt((ro - rle) ** 2 / 4 + 169)
    if p.ta <= 100:
        idd = 0.0
    else:
        x = _lg(p.ta / 100) / _lg(2)
        idd = 25 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)
    id_ = idte + idle + idd
    # §3.6 effective equipment impairment with packet loss.
    ie_eff = p.ie + (95 - p.ie) * p.ppl / (p.ppl / p.burst_r + p.bpl)
    r = ro - is_ - id_ - ie_eff + p.a
    return EModelResult(r, mos_from_r(r), ro, is_, id_, idte, idle, idd, ie_eff, p.a)


def mos_from_r(r: float) -> float:
    """G.107 Annex B, eq. B-4 (held at 1.0 where the cubic dips just under it, R < 6.5)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return max(1.0, 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6)


def check_inputs(loss_pct: float, delay_ms: float, burst_r: float) -> None:
    """PolicyError naming the first out-of-range value (shared with the wideband model)."""
    if not 0 <= loss_pct <= 100 or math.isnan(loss_pct):
        raise PolicyError(f"loss {loss_pct} must be a percentage in [0, 100]")
    if not 0 <= delay_ms <= 10_000 or math.isnan(delay_ms):
        raise PolicyError(f"delay {delay_ms} ms must be in [0, 10000]")
    if not 1 <= burst_r <= 100 or math.isnan(burst_r):
        raise PolicyError(f"BurstR {burst_r} must be in [1, 100] (1 = random loss)")


def quick(codec_name: str, loss_pct: float, delay_ms: float, burst_r: float = 1.0) -> EModelResult:
    """The common case: a codec, packet loss, one-way mouth-to-ear delay and BurstR.

    T = Ta = delay and Tr = 2·delay (an echo-cancelled VoIP path), as the `mos` command
    documents. PolicyError on an unknown codec or an out-of-range value.
    """
    c = codec(codec_name)
    check_inputs(loss_pct, delay_ms, burst_r)
    return compute(
        EModelInput(t=delay_ms, ta=delay_ms, tr=2 * delay_ms, ie=c.ie, bpl=c.bpl, ppl=loss_pct,
                    burst_r=burst_r)
    )  # fmt: skip
