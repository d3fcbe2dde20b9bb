"""tshark (an independent dissector) decodes the RFC 4733 telephone-events that the relay
*generates* from in-band tones: event codes, E bit sent three times, durations and event
timestamps equal to the tones we put in, the start marker, and a gap-free RTP sequence
(tshark's own rtp,streams analysis counts no loss in the renumbered stream)."""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from callward.media.dtmf_inband import generate_dtmf
from callward.media.g711 import ulaw_encode
from callward.relay.leg import LegConfig
from callward.relay.session import MediaRelay
from callward.rtp.packet import RtpPacket
from peers import free_port, tshark_capture

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

if shutil.which("tshark") is None:  # pragma: no cover
    pytest.skip("why: tshark not installed", allow_module_level=True)


SPEC = [("9", 3000, 120), ("*", 8000, 200), ("B", 13000, 80)]  # digit, start sample, ms
BASE_TS = 1000


def tone_stream(frames: int) -> list[bytes]:
    t = np.arange(frames * 160) / 8000
    pcm = np.round(800 * np.sin(2 * np.pi * 400 * t)).astype(np.int16)
    for digit, start, ms in SPEC:
        tone = generate_dtmf(digit, tone_ms=ms, gap_ms=0)
        pcm[start : start + len(tone)] = tone
    return [
        bytes(RtpPacket(0, 7000 + k, BASE_TS + 160 * k, 0xFACE,
                        ulaw_encode(pcm[160 * k : 160 * (k + 1)])))
        for k in range(frames)
    ]  # fmt: skip


def test_tshark_decodes_events_generated_from_tones(tmp_path: Path) -> None:
    sink_port = free_port()
    pcap = tmp_path / "dtmf.pcap"

    async def run() -> None:
        relay = MediaRelay()
        s = await relay.create_session(
            "dtmf-tshark",
            LegConfig("a", trusted=True, remote=("127.0.0.1", sink_port), dtmf="rfc4733"),
            LegConfig("b", trusted=True, dtmf="inband"),
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as o:
            for wire in tone_stream(100):
                o.sendto(wire, s.local_address("b"))
                await asyncio.sleep(0.002)
        await asyncio.sleep(0.2)
        await relay.close_all()

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", sink_port))
        with tshark_capture(pcap, [sink_port]):
            asyncio.run(run())
    base = ["tshark", "-r", str(pcap), "-d", f"udp.port=={sink_port},rtp",
            "-d", "rtp.pt==101,rtpevent"]  # fmt: skip
    out = subprocess.run(
        [*base, "-T", "fields", "-E", "separator=|", "-e", "rtp.p_type", "-e", "rtp.seq",
         "-e", "rtp.marker", "-e", "rtp.timestamp", "-e", "rtpevent.event_id",
         "-e", "rtpevent.end_of_event", "-e", "rtpevent.duration"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    rows = [ln.split("|") for ln in out.splitlines() if ln.strip()]
    assert len(rows) > 100
    seqs = [int(r[1]) for r in rows]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    events = [r for r in rows if r[0] == "101"]
    by_ts: dict[int, list[list[str]]] = {}
    for r in events:
        by_ts.setdefault(int(r[3]), []).append(r)
    assert len(by_ts) == len(SPEC)
    codes = {"9": 9, "*": 10, "B": 13}
    for (ts, evs), (digit, start, ms) in zip(sorted(by_ts.items()), SPEC, strict=True):
        assert {int(r[4]) for r in evs} == {codes[digit]}
        assert abs(ts - (BASE_TS + start)) <= 25  # RFC 4733 §2.3.1: tone start in the stream
        assert sum(r[2] in ("1", "True") for r in evs) == 3  # start sent three times
        ends = [int(r[6]) for r in evs if r[5] in ("1", "True")]
        assert len(ends) == 3 and len(set(ends)) == 1  # §2.5.1.4: end sent three times
        assert abs(ends[0] - ms * 8) <= 48  # within 6 ms of the tone we sent
        durations = [int(r[6]) for r in evs]
        assert durations == sorted(durations)  # updates only grow
    streams = subprocess.run(
        [*base, "-q", "-z", "rtp,streams"], capture_output=True, text=True, timeout=60,
        check=True,
    ).stdout  # fmt: skip
    line = next(ln for ln in streams.splitlines() if "0x0000face" in ln.lower())
    m = re.search(r"(\d+)\s+(-?\d+)\s+\(([-\d.]+)%\)", line)
    assert m and int(m.group(1)) == len(rows) and int(m.group(2)) == 0, line
