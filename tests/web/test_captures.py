"""POST /api/v1/quality/analyze on captures written by the quality area's independent synthetic
writer, with impairments whose effect is computed here by hand."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callward.quality.synth import RtpSpec, rtp_frames, write_pcap


def _pcap(tmp_path: Path, **kw: object) -> bytes:
    path = tmp_path / "c.pcap"
    write_pcap(path, rtp_frames(RtpSpec(**kw)))  # type: ignore[arg-type]
    return path.read_bytes()


def test_loss_and_series_match_hand_counts(client: TestClient, tmp_path: Path) -> None:
    # 500 packets of 20 ms (50 per 1 s window); packets 110..129 dropped: all in window 2,
    # which then spans seq 100..149 with 30 received -> 20/50 = 40 % loss in that window.
    data = _pcap(tmp_path, count=500, bursts=[(110, 20)])
    r = client.post("/api/v1/quality/analyze", content=data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "10.0.0" not in r.text and "40000" not in r.text  # addresses and ports never leave
    (s,) = body["streams"]
    assert s["ssrc"] == "0x11223344" and s["packets"] == 480 and s["lost"] == 20
    assert s["loss_pct"] == pytest.approx(100 * 20 / 500)
    series = s["series"]
    assert series["t_s"][:3] == [0.0, 1.0, 2.0]
    assert series["loss_pct"][2] == pytest.approx(40.0)
    assert all(v == 0.0 for i, v in enumerate(series["loss_pct"]) if i != 2)
    # G.711 windows without loss score higher than the lossy one
    assert series["mos"][2] < min(m for i, m in enumerate(series["mos"]) if i != 2)
    assert body["plot_png_base64"] is None


def test_plot_png(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/api/v1/quality/analyze?plot=true&window_s=0.5", content=_pcap(tmp_path))
    png = base64.b64decode(r.json()["plot_png_base64"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert r.json()["streams"][0]["window_s"] == 0.5


@pytest.mark.parametrize("body", [b"", b"not a capture", bytes(64)])
def test_not_a_capture_is_422_one_line(client: TestClient, body: bytes) -> None:
    r = client.post("/api/v1/quality/analyze", content=body)
    assert r.status_code == 422
    assert "\n" not in r.json()["error"]


def test_too_large_is_413(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("callward.web.routes.captures.MAX_CAPTURE_BYTES", 1000)
    r = client.post("/api/v1/quality/analyze", content=_pcap(tmp_path, count=50))
    assert r.status_code == 413 and "MiB" in r.json()["error"]


def test_bad_window_is_422(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/api/v1/quality/analyze?window_s=0", content=_pcap(tmp_path, count=10))
    assert r.status_code == 422 and "window_s" in r.json()["error"]


_VALID: dict[str, bytes] = {}


def _valid_pcap() -> bytes:
    if not _VALID:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            _VALID["b"] = _pcap(Path(d), count=40)
    return _VALID["b"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.integers(0, 10_000),
)
def test_mutated_captures_are_200_or_422(
    client: TestClient, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(_valid_pcap())
    for pos, val in flips:
        data[pos % len(data)] = val
    r = client.post("/api/v1/quality/analyze", content=bytes(data[: max(cut, 24)]))
    assert r.status_code in (200, 422), r.text


def test_records_out_of_time_order_are_analysed(client: TestClient, tmp_path: Path) -> None:
    # A capture whose records are not in time order (found by the mutation test above:
    # quality.plot.windowed_series indexes windows from the first record). Swap two records'
    # timestamps far apart; the series must still cover the stream from its earliest packet.
    frames = rtp_frames(RtpSpec(count=200))
    frames[0], frames[150] = (
        type(frames[0])(frames[150].ts, frames[0].data),
        type(frames[0])(frames[0].ts, frames[150].data),
    )
    path = tmp_path / "shuffled.pcap"
    write_pcap(path, frames)
    r = client.post("/api/v1/quality/analyze?plot=true", content=path.read_bytes())
    assert r.status_code == 200, r.text
    s = r.json()["streams"][0]
    assert s["packets"] == 200 and s["series"]["t_s"][0] == 0.0
    assert len(s["series"]["t_s"]) == 4  # 200 x 20 ms = 4 s of one-second windows
