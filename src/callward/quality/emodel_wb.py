"""ITU-T G.107.1 wideband E-model, and one entry point for every codec: :func:`mos_for`.

Wideband (50–7000 Hz) rating, G.107.1 §7:

- R_WB = Ro,WB − Is,WB − Id,WB − Ie,eff,WB + A with Ro,WB = 129 (§7.2) and the WB defaults
  Is,WB = 0 (§7.3) and A = 0;
- Ie,eff,WB = Ie,WB + (95 − Ie,WB)·Ppl / (Ppl/BurstR + Bpl) (§7.5, eq. 7-15; the constant stays
  95 as in G.107 eq. 7-29, it is not rescaled to 129);
- MOS from R_WB by G.107.1 Annex A: Rx = R_WB / 1.29, then the G.107 Annex B polynomial. This
  puts wideband and narrowband results on the same 1–4.5 MOS-CQE scale, which is what the data
  usage optimiser compares (an unimpaired WB call scores 4.5, G.711 scores 4.41);
- Id,WB: the G.107 delay impairments (Idte + Idle + Idd from T, Tr, Ta) scaled by 1.29, so a
  given delay costs the same MOS on both scales (our reading of G.107.1 §7.4, which carries the
  G.107 delay model over to the extended scale; see docs/architecture.md, "Wideband MOS").

Equipment impairment values and where they come from (docs/architecture.md, "Wideband MOS"):

- AMR-WB (G.722.2): ITU-T G.113 (09/2024) Appendix IV Table IV.1 (monotic, handset) Ie,WB per
  mode; Bpl from Table IV.4 where published (23.85, 23.05, 12.65 kbit/s), otherwise the
  G.107.1 default Bpl (4.3, labelled ``bpl_source: "default"``);
- G.722 64 kbit/s: Ie,WB 14 as quoted by a vendor planning guide (no Bpl published: default);
- Opus: ITU-T publishes no Ie,WB for Opus. We use the empirical wideband VBR values of the
  open dataset github.com/mohaoahmadi/Opus_Codec_Quality_Evaluation (11–13 kbit/s, random-loss
  Bpl), interpolated linearly in bitrate and held at the 13 kbit/s value above it (the
  ``source`` then says so: no published Ie,WB exists above 13 kbit/s); below
  11 kbit/s Opus codes narrowband audio and is rated with that dataset's NB VBR values on the
  narrowband G.107 scale. Every result carries ``source`` so a report shows this.

Narrowband codecs go through :mod:`callward.quality.emodel` (G.107) unchanged.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass

from callward.errors import PolicyError
from callward.quality import emodel

__all__ = [
    "RO_WB",
    "WB_CODECS",
    "MosEstimate",
    "WbCodec",
    "codec_ie",
    "codec_key",
    "compute_wb",
    "frame_ms",
    "is_wideband",
    "mos_for",
    "mos_from_r_wb",
    "wb_codec",
]

RO_WB = 129.0
DEFAULT_BPL = 4.3  # G.107 / G.107.1 default packet-loss robustness (no PLC, random loss)
_G113 = "ITU-T G.113 (09/2024) App. IV"
_OPUS_SRC = "empirical Opus dataset (mohaoahmadi/Opus_Codec_Quality_Evaluation), not ITU-T"


@dataclass(frozen=True, slots=True)
class WbCodec:
    """Ie,WB and Bpl of one wideband codec configuration, with their sources."""

    name: str
    kbps: float
    ie_wb: float
    bpl: float
    frame_ms: float
    source: str
    bpl_source: str


# AMR-WB modes (RFC 4867 mode 0..8) → Ie,WB (Table IV.1) and Bpl (Table IV.4) where published.
_AMR_WB = {
    6.6: (41.0, None), 8.85: (26.0, None), 12.65: (13.0, 4.3), 14.25: (10.0, None),
    15.85: (7.0, None), 18.25: (5.0, None), 19.85: (3.0, None), 23.05: (1.0, 4.6),
    23.85: (8.0, 4.9),
}  # fmt: skip
# Opus VBR: kbit/s → (Ie, Bpl random loss). WB values on the wideband scale, NB on the NB scale.
_OPUS_WB = ((11.0, 28.41, 23.94), (12.0, 23.30, 22.22), (13.0, 19.96, 19.50))
_OPUS_NB = ((6.0, 23.00, 24.56), (7.0, 21.26, 22.46), (8.0, 16.02, 20.26), (9.0, 11.74, 18.91))


def _amr_wb(kbps: float) -> WbCodec:
    modes = sorted(_AMR_WB)
    # The mode at or below the requested rate (a sender never exceeds its mode's rate).
    i = max(0, bisect.bisect_right(modes, kbps + 1e-9) - 1)
    mode = modes[i]
    ie, bpl = _AMR_WB[mode]
    if bpl is None:
        return WbCodec("amr-wb", mode, ie, DEFAULT_BPL, 20.0, f"{_G113} Table IV.1", "default")
    return WbCodec("amr-wb", mode, ie, bpl, 20.0, f"{_G113} Table IV.1",
                   f"{_G113} Table IV.4")  # fmt: skip


def _interp(table: tuple[tuple[float, float, float], ...], kbps: float) -> tuple[float, float]:
    xs = [t[0] for t in table]
    if kbps <= xs[0]:
        return table[0][1], table[0][2]
    if kbps >= xs[-1]:
        return table[-1][1], table[-1][2]
    j = bisect.bisect_right(xs, kbps)
    (x0, i0, b0), (x1, i1, b1) = table[j - 1], table[j]
    f = (kbps - x0) / (x1 - x0)
    return i0 + f * (i1 - i0), b0 + f * (b1 - b0)


# Above the dataset's last wideband row no published Ie,WB exists for Opus (ITU-T G.113 and its
# amendments list none; P.834/P.863-derived values in the literature are for fullband Opus on
# the G.107.2 scale, not G.107.1). The 13 kbit/s values are kept, and the source says so: the
# rating is conservative (an impairment of a lower rate) rather than an invented number.
_OPUS_HELD = " (held at its 13 kbit/s value: no published Ie,WB above 13 kbit/s)"


def _opus_wb(kbps: float) -> WbCodec:
    ie, bpl = _interp(_OPUS_WB, kbps)
    src = _OPUS_SRC + (_OPUS_HELD if kbps > _OPUS_WB[-1][0] else "")
    return WbCodec("opus", kbps, round(ie, 2), round(bpl, 2), 20.0, src, src)


WB_CODECS = ("amr-wb", "g722", "opus")
_ALIASES = {"amrwb": "amr-wb", "g.722.2": "amr-wb", "g7222": "amr-wb", "g.722": "g722",
            "g722.1": "g722"}  # fmt: skip
_DEFAULT_KBPS = {"amr-wb": 12.65, "g722": 64.0, "opus": 16.0}


def _key(name: str) -> str:
    k = name.strip().lower()
    return _ALIASES.get(k, k)


def is_wideband(name: str, bitrate_bps: float | None = None) -> bool:
    """Is this codec rated on the G.107.1 wideband scale (Opus below 11 kbit/s is NB)?"""
    k = _key(name)
    if k == "opus" and bitrate_bps is not None and bitrate_bps < 11_000:
        return False
    return k in WB_CODECS


def wb_codec(name: str, bitrate_bps: float | None = None) -> WbCodec:
    """The Ie,WB/Bpl entry for a wideband codec at a bit rate (bit/s); PolicyError if unknown."""
    k = _key(name)
    if k not in WB_CODECS:
        raise PolicyError(f"unknown wideband codec {name!r} (known: {', '.join(WB_CODECS)})")
    kbps = _DEFAULT_KBPS[k] if bitrate_bps is None else bitrate_bps / 1000.0
    if not 0 < kbps <= 512 or math.isnan(kbps):
        raise PolicyError(f"bit rate {bitrate_bps} must be in (0, 512000] bit/s")
    if k == "amr-wb":
        return _amr_wb(kbps)
    if k == "g722":
        src = "Mitel MX-ONE planning guide (Ie,wb of G.722 at 64 kbit/s)"
        return WbCodec("g722", 64.0, 14.0, DEFAULT_BPL, 20.0, src, "default")
    return _opus_wb(kbps)


def codec_key(name: str) -> str | None:
    """The E-model key of a codec name (narrowband or wideband), None when unrated."""
    try:
        return emodel.codec(name).name
    except PolicyError:
        k = _key(name)
        return k if k in WB_CODECS else None


def codec_ie(key: str, bitrate_bps: float | None = None) -> float:
    """The codec's own impairment on the R scale its results use (Ie,WB for wideband), which
    alert attribution compares with the network's share of Ie,eff."""
    if is_wideband(key, bitrate_bps):
        return wb_codec(key, bitrate_bps).ie_wb
    if _key(key) == "opus" and bitrate_bps is not None:
        return _interp(_OPUS_NB, bitrate_bps / 1000.0)[0]
    return emodel.codec(key).ie


def frame_ms(key: str) -> float:
    """Packetisation + algorithmic delay contribution analyze adds for this codec."""
    if _key(key) in WB_CODECS:
        return wb_codec(key).frame_ms
    return emodel.codec(key).frame_ms


def mos_from_r_wb(r_wb: float) -> float:
    """G.107.1 Annex A: Rx = R_WB/1.29 on the G.107 Annex B curve."""
    return emodel.mos_from_r(r_wb / 1.29)


@dataclass(frozen=True, slots=True)
class MosEstimate:
    """One E-model evaluation; ``scale`` says which R range ``r`` is on (nb: 0–100, wb: 0–129)."""

    codec: str
    kbps: float
    scale: str
    r: float
    mos: float
    ie: float
    bpl: float
    ie_eff: float
    id: float
    source: str
    bpl_source: str

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        for k in ("r", "mos", "ie", "bpl", "ie_eff", "id"):
            d[k] = round(d[k], 3)
        return d


def compute_wb(
    c: WbCodec, ppl: float, burst_r: float, t: float, ta: float, tr: float
) -> MosEstimate:
    """R_WB and MOS for a wideband codec entry, loss (%), BurstR and delays (ms, as G.107)."""
    ie_eff = c.ie_wb + (95.0 - c.ie_wb) * ppl / (ppl / burst_r + c.bpl)
    # Narrowband delay impairment on the default path, rescaled to the extended scale.
    nb = emodel.compute(emodel.EModelInput(t=t, ta=ta, tr=tr))
    id_wb = 1.29 * nb.id_
    r = RO_WB - id_wb - ie_eff
    return MosEstimate(c.name, c.kbps, "wb", r, mos_from_r_wb(r), c.ie_wb, c.bpl, ie_eff, id_wb,
                       c.source, c.bpl_source)  # fmt: skip


def mos_for(
    codec: str,
    bitrate: float | None = None,
    loss: float = 0.0,
    burst: float = 1.0,
    delay_ms: float = 0.0,
) -> MosEstimate:
    """MOS for any known codec: G.107.1 for wideband codecs, G.107 for narrowband ones.

    ``bitrate`` in bit/s (None: the codec's usual rate), ``loss`` in percent, ``burst`` is
    BurstR (1 = random loss), ``delay_ms`` the one-way mouth-to-ear delay (T = Ta = delay,
    Tr = 2·delay, an echo-cancelled VoIP path, as ``callward mos`` documents). Results of both
    scales are MOS-CQE on the same 1–4.5 range, so they can be compared and ranked.
    PolicyError on an unknown codec or an out-of-range value.
    """
    emodel.check_inputs(loss, delay_ms, burst)
    k = _key(codec)
    if k == "opus" and bitrate is not None and bitrate < 11_000:
        if bitrate <= 0 or math.isnan(bitrate):
            raise PolicyError(f"bit rate {bitrate} must be in (0, 512000] bit/s")
        ie, bpl = _interp(_OPUS_NB, bitrate / 1000.0)
        r = emodel.compute(
            emodel.EModelInput(t=delay_ms, ta=delay_ms, tr=2 * delay_ms, ie=ie, bpl=bpl,
                               ppl=loss, burst_r=burst)
        )  # fmt: skip
        return MosEstimate("opus", bitrate / 1000.0, "nb", r.r, r.mos, ie, bpl, r.ie_eff, r.id_,
                           _OPUS_SRC, _OPUS_SRC)  # fmt: skip
    if k in WB_CODECS:
        c = wb_codec(k, bitrate)
        return compute_wb(c, loss, burst, delay_ms, delay_ms, 2 * delay_ms)
    try:
        nb_codec = emodel.codec(codec)
    except PolicyError:
        known = ", ".join(sorted([*emodel.CODECS, *WB_CODECS]))
        raise PolicyError(f"unknown codec {codec!r} (known: {known})") from None
    r = emodel.quick(nb_codec.name, loss, delay_ms, burst)
    return MosEstimate(nb_codec.name, 0.0, "nb", r.r, r.mos, nb_codec.ie, nb_codec.bpl, r.ie_eff,
                       r.id_, "ITU-T G.113 App. I", "ITU-T G.113 App. I")  # fmt: skip
