"""G.107.1 wideband E-model and `mos_for`: vectors worked by hand from the Recommendation's
equations (and cross-checked with an independent implementation's published vectors), the
source tables, the CLI and analyze on an Opus capture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from callward.cli import app
from callward.errors import PolicyError
from callward.quality import emodel
from callward.quality.emodel_wb import codec_ie, mos_for, mos_from_r_wb, wb_codec
from callward.quality.synth import RtpSpec, merge, rtp_frames, sip_call, write_pcap

runner = CliRunner()


@pytest.mark.parametrize(
    ("ie_wb", "want"),
    # Annex A: Rx = (129 − Ie,WB)/1.29 on the Annex B curve; e.g. Ie 13 → Rx 89.9225 →
    # 1 + 0.035·89.9225 + 89.9225·29.9225·10.0775·7e-6 = 4.3371.
    [(0.0, 4.5), (1.0, 4.4940), (8.0, 4.4206), (13.0, 4.3371), (41.0, 3.5123), (56.0, 2.9220)],
)
def test_annex_a_mapping_vectors(ie_wb: float, want: float) -> None:
    assert mos_from_r_wb(129.0 - ie_wb) == pytest.approx(want, abs=5e-4)


def test_amr_wb_table_iv1_and_loss_by_hand() -> None:
    c = wb_codec("amr-wb", 12_650)
    assert (c.kbps, c.ie_wb, c.bpl) == (12.65, 13.0, 4.3)
    assert "Table IV.1" in c.source and "Table IV.4" in c.bpl_source
    # Ie,eff,WB = 13 + (95 − 13)·2/(2/1 + 4.3) = 39.0317 (eq. 7-15 keeps the constant 95)
    m = mos_for("amr-wb", 12_650, loss=2.0)
    assert m.ie_eff == pytest.approx(13 + 82 * 2 / 6.3, abs=1e-9)
    # delay 0: Id,WB = 1.29·Id(G.107 defaults) = 1.29·0.1492 (Idle at Tr = 0, WEPL 110)
    nb = emodel.compute(emodel.EModelInput())
    assert m.r == pytest.approx(129 - m.ie_eff - 1.29 * nb.id_, abs=1e-9)
    # the published bit-rate inversion is kept: 23.85 (Ie 8) is worse than 23.05 (Ie 1)
    assert wb_codec("amr-wb", 23_850).ie_wb == 8 and wb_codec("amr-wb", 23_050).ie_wb == 1
    # a rate between modes takes the mode at or below it; unpublished Bpl is labelled
    assert wb_codec("amr-wb", 16_000).kbps == 15.85
    assert wb_codec("amr-wb", 16_000).bpl_source == "default"


def test_narrowband_codecs_are_exactly_g107() -> None:
    for codec, loss, delay, burst in [
        ("g711", 0, 0, 1),
        ("g729a", 2, 150, 1.5),
        ("pcma", 1, 80, 1),
    ]:
        m = mos_for(codec, loss=loss, delay_ms=delay, burst=burst)
        r = emodel.quick(codec, loss, delay, burst)
        assert (m.scale, m.r, m.mos) == ("nb", r.r, r.mos)


def test_opus_interpolates_and_is_labelled_non_itu() -> None:
    a, b, mid = (mos_for("opus", x) for x in (12_000, 13_000, 12_500))
    assert mid.ie == pytest.approx((a.ie + b.ie) / 2, abs=0.01)
    assert a.scale == "wb" and "not ITU-T" in a.source
    assert mos_for("opus", 32_000).ie == b.ie  # held at the highest tabulated rate
    low = mos_for("opus", 8_000)
    assert low.scale == "nb" and low.r == pytest.approx(
        emodel.compute(emodel.EModelInput(ie=16.02, bpl=20.26)).r, abs=1e-6
    )
    # loss and delay lower the score; a higher rate never scores lower within the WB table
    assert mos_for("opus", 16_000, loss=5, delay_ms=150).mos < mos_for("opus", 16_000).mos
    assert a.mos <= b.mos
    assert codec_ie("opus", 16_000) == b.ie


@given(
    codec=st.sampled_from(["g711", "g729a", "opus", "amr-wb", "g722"]),
    bitrate=st.one_of(st.none(), st.floats(6_000, 64_000)),
    loss=st.floats(0, 100),
    burst=st.floats(1, 100),
    delay=st.floats(0, 10_000),
)
def test_mos_for_is_total_and_bounded(codec, bitrate, loss, burst, delay) -> None:
    m = mos_for(codec, bitrate, loss, burst, delay)
    assert 1.0 <= m.mos <= 4.5 and math.isfinite(m.r)


@pytest.mark.parametrize(
    "kwargs",
    [{"codec": "speex"}, {"codec": "opus", "bitrate": -1}, {"codec": "opus", "loss": 101},
     {"codec": "amr-wb", "burst": 0.5}, {"codec": "g722", "delay_ms": float("nan")}],
)  # fmt: skip
def test_bad_input_is_a_policy_error(kwargs) -> None:
    with pytest.raises(PolicyError):
        mos_for(**kwargs)


def test_cli_mos_opus_bitrate() -> None:
    res = runner.invoke(app, ["mos", "--codec", "opus", "--bitrate", "16000", "--json"])
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["scale"] == "wb" and d["ro"] == 129.0 and d["codec"] == "opus"
    assert d["r"] == pytest.approx(129 - d["ie_eff"] - d["id"], abs=0.01)
    res = runner.invoke(app, ["mos", "--codec", "opus", "--bitrate", "inf"])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1


def test_analyze_rates_an_opus_stream_on_the_wideband_scale(tmp_path: Path) -> None:
    t0 = 1_700_000_000.0
    sip = sip_call("opus@x", t0 - 1.2, "10.0.0.1", "10.0.0.2", ("10.0.0.1", 40000),
                   ("10.0.0.2", 40002), pt=111, codec="opus", rate=48000,
                   bye_after_s=6.5)  # fmt: skip
    # 20 ms Opus frames of 40 bytes = 16 kbit/s, 48 kHz RTP clock (RFC 7587)
    rtp = rtp_frames(RtpSpec(pt=111, clock_rate=48000, payload_len=40, count=250, loss=0.02))
    p = tmp_path / "opus.pcap"
    write_pcap(p, merge(sip, rtp))
    res = runner.invoke(app, ["analyze", "--json", str(p)])
    s = json.loads(res.stdout)["streams"][0]
    assert s["codec"] == "opus" and s["bitrate_bps"] == pytest.approx(16_000, rel=0.02)
    net = s["mos"]["network"]
    want = mos_for("opus", s["bitrate_bps"], loss=net["loss_pct"], burst=net["burst_r"],
                   delay_ms=net["delay_ms"])  # fmt: skip
    assert want.scale == "wb" and net["r"] == pytest.approx(want.r, abs=0.01)
    assert net["mos"] == pytest.approx(want.mos, abs=1e-3)


def test_opus_above_the_dataset_is_held_and_says_so() -> None:
    # No published Ie,WB above 13 kbit/s: the 13 kbit/s values are kept and labelled.
    at13, at24 = wb_codec("opus", 13_000), wb_codec("opus", 24_000)
    assert (at24.ie_wb, at24.bpl) == (at13.ie_wb, at13.bpl) == (19.96, 19.5)
    assert "held at its 13 kbit/s value" in at24.source
    assert "held" not in at13.source and "held" not in wb_codec("opus", 12_500).source
