"""A digit survives every conversion chain: tones -> RFC 4733 -> INFO -> RFC 4733 -> tones,
with timestamps and durations checked against what was generated."""

from __future__ import annotations

import numpy as np
import pytest

from callward.media.dtmf_inband import detect_dtmf, generate_dtmf
from callward.relay.dtmf_interworking import (
    InbandToRfc4733,
    Rfc4733ToInfo,
    digit_to_tones,
    info_to_rfc4733,
)
from callward.rtp.dtmf import DtmfRelayBody, TelephoneEventReceiver


def test_full_chain() -> None:
    pcm = generate_dtmf("5#", tone_ms=120, gap_ms=80, lead_ms=40)
    inband = InbandToRfc4733(base_timestamp=1000)
    pkts = []
    for i in range(0, len(pcm), 160):
        pkts += inband.feed(pcm[i : i + 160])
    pkts += inband.flush()
    starts = sorted({p.timestamp for p in pkts})
    # tone 1 starts at 40 ms = sample 320; tone 2 at 40+120+80 = 240 ms = sample 1920
    assert starts[0] == pytest.approx(1000 + 320, abs=24)
    assert starts[1] == pytest.approx(1000 + 1920, abs=24)
    to_info = Rfc4733ToInfo()
    bodies = [b for p in pkts for b in to_info.receive(p.timestamp, bytes(p.event))]
    assert [b.digit for b in bodies] == ["5", "#"]
    assert all(abs(b.duration_ms - 120) <= 4 for b in bodies)
    # INFO -> RFC 4733 -> receiver
    rx = TelephoneEventReceiver()
    events = []
    for i, body in enumerate(bodies):
        for p in info_to_rfc4733(DtmfRelayBody.parse(bytes(body)), start_timestamp=8000 * i):
            events += rx.receive(p.timestamp, bytes(p.event))
    ended = [e for e in events if e.ended]
    assert [e.digit for e in ended] == ["5", "#"]
    # RFC 4733 -> tones -> detector
    tones = np.concatenate([digit_to_tones(e.digit, e.duration_ms) for e in ended])
    found = detect_dtmf(np.concatenate([np.zeros(100, dtype=np.int16), tones]))
    assert [d.digit for d in found] == ["5", "#"]
    assert all(abs(d.duration_ms - 120) <= 8 for d in found)


def test_info_waits_for_end() -> None:
    conv = Rfc4733ToInfo()
    pkts = info_to_rfc4733(DtmfRelayBody("9", 100), start_timestamp=0)
    non_end = [p for p in pkts if not p.event.end]
    assert [b for p in non_end for b in conv.receive(p.timestamp, bytes(p.event))] == []
    assert conv.expire() == [DtmfRelayBody("9", 50)]  # only what the updates reported
