"""`callward analyze` and `callward mos`: output shape, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callward.cli import app
from callward.quality.synth import RtpSpec, merge, rtp_frames, sip_call, write_pcap

T0 = 1_700_000_000.0
runner = CliRunner()


def test_mos_json_default_g711() -> None:
    res = runner.invoke(app, ["mos", "--codec", "g711", "--json"])
    assert res.exit_code == 0
    d = json.loads(res.stdout)
    assert d["r"] == pytest.approx(93.2, abs=0.05) and d["mos"] == pytest.approx(4.41, abs=0.005)
    assert {"ro", "is", "id", "ie_eff", "idd"} <= set(d)


def test_mos_loss_by_hand() -> None:
    # G.729A, 2 % random loss, no delay: Ie,eff = 11 + 84·2/(2 + 19) = 19.0
    res = runner.invoke(app, ["mos", "--codec", "g729a", "--loss", "2", "--json"])
    assert json.loads(res.stdout)["ie_eff"] == pytest.approx(19.0, abs=1e-3)


@pytest.mark.parametrize(
    "args",
    [["--codec", "nonesuch"], ["--loss", "150"], ["--delay", "-1"], ["--burst", "0.2"],
     ["--loss", "nan"]],
)  # fmt: skip
def test_mos_bad_input_exits_2_one_line(args) -> None:
    res = runner.invoke(app, ["mos", *args])
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("callward: ")


def test_analyze_json_and_plot(tmp_path: Path) -> None:
    p = tmp_path / "s.pcap"
    write_pcap(p, merge(rtp_frames(RtpSpec(count=300, loss=0.05, jitter_ms=30))))
    png = tmp_path / "q.png"
    res = runner.invoke(app, ["analyze", str(p), "--json", "--plot", str(png)])
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    s = d["streams"][0]
    for k in ("ssrc", "src", "dst", "payload_type", "packets", "expected", "lost",
              "max_delta_ms", "max_jitter_ms", "mean_jitter_ms"):  # fmt: skip
        assert k in s
    assert set(s["mos"]) == {"network", "fixed50", "fixed200", "adaptive"}
    assert s["expected"] - s["packets"] == s["lost"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analyze_exit_1_on_problem(tmp_path: Path) -> None:
    p = tmp_path / "f.pcap"
    write_pcap(p, sip_call("x@y", T0, "192.0.2.1", "192.0.2.2", ("192.0.2.1", 4000), None,
                           final_status=503))  # fmt: skip
    res = runner.invoke(app, ["analyze", str(p), "--json"])
    assert res.exit_code == 1
    assert json.loads(res.stdout)["calls"][0]["problems"][0]["kind"] == "call_failed"


def test_analyze_unreadable_exit_2(tmp_path: Path) -> None:
    p = tmp_path / "junk.pcap"
    p.write_bytes(b"this is not a capture")
    res = runner.invoke(app, ["analyze", str(p)])
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "junk.pcap" in res.stderr
    res = runner.invoke(app, ["analyze", str(tmp_path / "missing.pcap")])
    assert res.exit_code == 2


def test_analyze_low_mos_stream_raises_alert_exit_1(tmp_path: Path) -> None:
    # 15 % random loss on G.711: Ie,eff ≈ 95·15/(15 + 25.1) ≈ 35.5 → MOS well under 3.1.
    p = tmp_path / "bad.pcap"
    write_pcap(p, rtp_frames(RtpSpec(count=600, loss=0.15, seed=3)))
    res = runner.invoke(app, ["analyze", str(p), "--json"])
    assert res.exit_code == 1
    alert = json.loads(res.stdout)["streams"][0]["alert"]
    assert alert["level"] == "critical" and alert["cause"] == "loss"


def test_plot_series_by_hand(tmp_path: Path) -> None:
    from callward.quality.analysis import collect, stream_reports
    from callward.quality.plot import png_bytes, windowed_series

    # 5 s of 20 ms packets, packets 60..69 (the 2nd second's 10 first) lost.
    p = tmp_path / "w.pcap"
    write_pcap(p, rtp_frames(RtpSpec(count=250, bursts=[(60, 10)])))
    s = stream_reports(collect(p))[0]
    x, _jit, loss, mos = windowed_series(s, 1.0)
    assert len(x) == 5
    # window 1 holds seq 50..99 minus 10 lost: expected 50 → 20 %; the others 0 %
    assert loss[1] == pytest.approx(10 * 100 / 50) and loss[0] == loss[2] == 0
    assert mos[1] < mos[0]
    assert png_bytes([s])[:4] == b"\x89PNG"


def test_analyze_tenant_thresholds_from_config(tmp_path: Path) -> None:
    # 3 % random loss on G.711 with PLC: MOS ≈ 4.0 — fine by default, an alert for a tenant
    # whose warn threshold is 4.3.
    p = tmp_path / "m.pcap"
    write_pcap(p, rtp_frames(RtpSpec(count=800, loss=0.03, seed=7)))
    cfg = tmp_path / "callward.yaml"
    cfg.write_text("quality:\n  tenants:\n    gold: {mos_warn: 4.3, mos_critical: 2.0}\n")
    assert runner.invoke(app, ["analyze", str(p), "--json", "--config", str(cfg)]).exit_code == 0
    res = runner.invoke(
        app, ["analyze", str(p), "--json", "--config", str(cfg), "--tenant", "gold"]
    )
    assert res.exit_code == 1
    assert json.loads(res.stdout)["streams"][0]["alert"]["level"] == "warn"
    bad = tmp_path / "bad.yaml"
    bad.write_text("quality: {mos_warn: high}\n")
    res = runner.invoke(app, ["analyze", str(p), "--config", str(bad)])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1


def test_redacted_summary_has_no_addresses_or_uris(tmp_path: Path) -> None:
    from callward.quality.report import analyze_capture, redacted_summary

    p = tmp_path / "c.pcap"
    sip = sip_call("secret-call@x", T0, "192.0.2.1", "192.0.2.2", ("192.0.2.1", 4000),
                   ("192.0.2.2", 4002), bye_after_s=2.1)  # fmt: skip
    rtp = rtp_frames(RtpSpec(src="192.0.2.1", sport=4000, dst="192.0.2.2", dport=4002,
                             start=T0 + 1.05, count=50))  # fmt: skip
    write_pcap(p, merge(sip, rtp))
    text = json.dumps(redacted_summary(analyze_capture(p)))
    assert "192.0.2" not in text and "sip:" not in text and "secret-call" not in text
    assert '"problems": ["one_way_audio"]' in text
