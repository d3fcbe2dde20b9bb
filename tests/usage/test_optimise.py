"""The optimiser against a brute-force reference with a model whose answer is known by hand,
and the real E-models' choices checked for the properties the issue asks for."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from callward.cli import app
from callward.errors import ConfigError
from callward.usage import MediaChoice, plan_call
from callward.usage.mos import MosEstimate, MosQuery, estimate, mouth_to_ear, residual_loss
from callward.usage.optimise import Network, Setting, candidates, optimise


def toy(q: MosQuery) -> MosEstimate:
    """MOS rises with bitrate up to 16 kb/s, FEC removes the loss penalty, 60 ms costs 0.1."""
    mos = 3.0 + min(q.bitrate, 16000) / 16000 - (0 if q.fec else 0.05 * q.loss_pct)
    return MosEstimate(mos - (0.1 if q.ptime_ms == 60 else 0.0), "toy")


def test_cheapest_setting_meeting_the_target_by_brute_force() -> None:
    net = Network(loss_pct=2, rtt_ms=80, voice_activity=0.5)
    best = optimise(net, 3.85, mos_fn=toy)
    # reference: every candidate priced by the planner, filtered by the toy model by hand
    ok = []
    for s in candidates():
        q = MosQuery(s.codec, s.bitrate, s.ptime_ms, s.fec, 2, 0)
        if toy(q).mos >= 3.85:
            c = MediaChoice(s.codec, s.ptime_ms, s.bitrate if s.codec == "opus" else None,
                            voice_activity=0.5, fec=s.fec)  # fmt: skip
            ok.append((plan_call(c).bytes_per_minute, s))
    cheapest = min(ok, key=lambda x: x[0])
    assert best.meets_target and best.best.setting == cheapest[1]
    assert best.best.bytes_per_minute == pytest.approx(cheapest[0])


def test_unmetered_prefers_quality_and_unreachable_target_is_reported() -> None:
    net = Network(loss_pct=2, metered=False)
    best = optimise(net, 3.5, mos_fn=toy)
    assert best.best.mos == max(toy(MosQuery(s.codec, s.bitrate, s.ptime_ms, s.fec, 2, 0)).mos
                                for s in candidates())  # fmt: skip
    high = optimise(net, 4.4, mos_fn=toy)
    assert not high.meets_target and high.best.mos < 4.4


def test_fec_residual_loss_and_delay_budget() -> None:
    # random loss: a frame is lost only if the next packet is lost too (p^2)
    assert residual_loss(1.0, 1.0, True) == pytest.approx(0.01)
    assert residual_loss(1.0, 1.0, False) == 1.0
    # bursty loss (BurstR 4): after a loss the next is lost with 1 - 0.99 / 4
    assert residual_loss(1.0, 4.0, True) == pytest.approx(1.0 * (1 - 0.99 / 4))
    # 60 ms RTT/2 + 20 ms ptime + 6.5 look-ahead + buffer max(2 x 20, 20 + 20 with FEC)
    assert mouth_to_ear("opus", 20, True, 120, 20) == pytest.approx(60 + 20 + 6.5 + 40)
    assert mouth_to_ear("pcmu", 60, False, 0, 10) == pytest.approx(60 + 20)


def test_real_models_choose_opus_with_fec_under_loss() -> None:
    best = optimise(Network(loss_pct=1, rtt_ms=120, jitter_ms=20), 4.0)
    s = best.best.setting
    assert best.meets_target and best.best.mos >= 4.0
    assert s.codec == "opus" and s.fec  # FEC is cheaper than more bitrate against 1 % loss
    g711 = plan_call(MediaChoice("pcmu", voice_activity=0.5)).bytes_per_minute
    assert best.best.bytes_per_minute < g711 / 2
    assert estimate(MosQuery("speex", 8000, 20, False, 0, 0)) is None


def test_bad_network_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Network(loss_pct=80)
    with pytest.raises(ConfigError):
        optimise(Network(), 7.0)
    with pytest.raises(ConfigError):
        optimise(Network(), 4.0, settings=[Setting("speex", 8000, 20, False)])


def test_cli_optimise_json() -> None:
    runner = CliRunner()
    args = ["plan", "--optimise", "--loss", "1", "--rtt", "120", "--min-mos", "4.0", "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["meets_target"] and doc["choice"]["mos"] >= 4.0
    assert {"codec", "bitrate", "ptime_ms", "fec"} <= set(doc["choice"])
    res = runner.invoke(app, ["plan", "--optimise", "--loss", "20", "--min-mos", "4.4"])
    assert res.exit_code == 1 and "no setting reaches" in res.stdout
    res = runner.invoke(app, ["plan", "--optimise", "--loss", "-1"])
    assert res.exit_code == 2
