"""E-model against values computed here by hand from the ITU-T G.107 (06/2015) equations."""

from __future__ import annotations

import math

import pytest

from callward.errors import PolicyError
from callward.quality.emodel import EModelInput, compute, mos_from_r, quick

# G.107 §3 default case, published: Ro = 94.77, Is = 1.41, R = 93.2, MOS = 4.41.
R_DEFAULT = 93.2


def test_default_case() -> None:
    r = compute(EModelInput())
    assert r.ro == pytest.approx(94.77, abs=0.005)
    assert r.is_ == pytest.approx(1.41, abs=0.005)
    assert r.r == pytest.approx(R_DEFAULT, abs=0.05)
    assert round(r.mos, 2) == 4.41


def test_mos_mapping_by_hand() -> None:
    # Annex B eq. B-4: 1 + 0.035R + R(R-60)(100-R)·7e-6
    assert mos_from_r(50) == pytest.approx(1 + 1.75 + 50 * -10 * 50 * 7e-6)  # 2.575
    assert mos_from_r(80) == pytest.approx(1 + 2.8 + 80 * 20 * 20 * 7e-6)  # 4.024
    assert mos_from_r(-5) == 1.0 and mos_from_r(120) == 4.5


def test_ie_eff_by_hand() -> None:
    base = compute(EModelInput()).r
    # G.711 with PLC (Ie 0, Bpl 25.1), 2 % random loss: Ie,eff = 95·2/(2 + 25.1) = 7.0111
    r = compute(EModelInput(bpl=25.1, ppl=2.0))
    assert r.ie_eff == pytest.approx(95 * 2 / 27.1)
    assert r.r == pytest.approx(base - 95 * 2 / 27.1)
    # G.729A (Ie 11, Bpl 19), 3 % loss, BurstR 2: 11 + 84·3/(1.5 + 19)
    r2 = compute(EModelInput(ie=11, bpl=19, ppl=3, burst_r=2))
    assert r2.ie_eff == pytest.approx(11 + 84 * 3 / 20.5)


def test_idd_by_hand() -> None:
    base = compute(EModelInput()).r
    # Ta = 400 ms: X = log2(4) = 2; Idd = 25[(1+X^6)^(1/6) − 3(1+(X/3)^6)^(1/6) + 2]
    x = 2.0
    idd = 25 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)
    r = compute(EModelInput(ta=400))
    assert r.idd == pytest.approx(idd)
    assert r.r == pytest.approx(base - idd)
    assert compute(EModelInput(ta=100)).idd == 0.0


def test_idle_by_hand() -> None:
    # Tr = 300 ms, WEPL 110: Rle = 10.5·117·301^(−1/4); Idle = (Ro−Rle)/2 + √((Ro−Rle)²/4 + 169)
    ro = compute(EModelInput()).ro
    rle = 10.5 * 117 * 301 ** (-0.25)
    idle = (ro - rle) / 2 + math.sqrt((ro - rle) ** 2 / 4 + 169)
    assert compute(EModelInput(tr=300)).idle == pytest.approx(idle)


def test_quick_codec_values() -> None:
    # G.729A at no loss and no delay: R = R_default − Ie(11)
    assert quick("g729a", 0, 0).r == pytest.approx(compute(EModelInput()).r - 11)
    # G.711 (PLC) at 1 % loss: Ie,eff = 95/(1 + 25.1)
    assert quick("pcmu", 1, 0).ie_eff == pytest.approx(95 / 26.1)
    # Delay lowers R monotonically
    assert quick("g711", 0, 300).r < quick("g711", 0, 150).r < quick("g711", 0, 0).r


@pytest.mark.parametrize(
    "args", [("opus", 0, 0, 1), ("g711", -1, 0, 1), ("g711", 101, 0, 1), ("g711", 0, -5, 1),
             ("g711", 0, 0, 0.5), ("g711", float("nan"), 0, 1)],
)  # fmt: skip
def test_quick_rejects(args) -> None:
    with pytest.raises(PolicyError):
        quick(*args)
