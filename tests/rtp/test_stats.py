"""Receiver statistics against values worked out by hand from RFC 3550 A.1/A.3/A.8 and §6.4.1."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import MediaError
from callward.rtp.rtcp import ReportBlock, SenderReport
from callward.rtp.stats import ReceiverStats, ntp_from_unix, rtt_from_report


def feed(stats: ReceiverStats, seqs: list[int]) -> list[bool]:
    return [stats.receive(s, (s * 160) % 2**32, s * 0.02) for s in seqs]


def test_probation_loss_and_fraction() -> None:
    st_ = ReceiverStats(1, 8000)
    ok = feed(st_, [1, 2, 3, 5, 6, 8, 9, 10])
    # A.1: the first packet only starts probation; the second validates and becomes base_seq.
    assert ok == [False, True, True, True, True, True, True, True]
    assert st_.base_seq == 2 and st_.received == 7
    assert st_.expected == 9  # 2..10
    assert st_.cumulative_lost == 2  # 4 and 7
    rb = st_.report_block(now_s=1.0)
    assert rb.fraction_lost == (2 * 256) // 9 == 56
    assert rb.highest_seq == 10 and rb.lsr == 0 and rb.dlsr == 0
    # next interval: 11..20 all received -> fraction 0
    feed(st_, list(range(11, 21)))
    assert st_.report_block(now_s=2.0).fraction_lost == 0


def test_wraparound_extends_sequence() -> None:
    st_ = ReceiverStats(1, 8000)
    seqs = [65533, 65534, 65535, 0, 1, 2]
    feed(st_, seqs)
    assert st_.cycles == 65536
    assert st_.extended_highest_seq == 65536 + 2
    assert st_.expected == 5 and st_.cumulative_lost == 0  # base 65534


def test_duplicates_make_loss_negative() -> None:
    st_ = ReceiverStats(1, 8000)
    feed(st_, [10, 11, 12, 12, 12, 13])
    assert st_.expected == 3 and st_.received == 5 and st_.cumulative_lost == -2
    assert st_.report_block(1.0).cumulative_lost == -2


def test_large_jump_needs_two_sequential_packets() -> None:
    st_ = ReceiverStats(1, 8000)
    feed(st_, [100, 101, 102])
    assert st_.receive(20000, 0, 1.0) is False  # jump > MAX_DROPOUT: held as bad_seq+1
    assert st_.receive(20001, 160, 1.02) is True  # sequential after the jump: re-sync
    assert st_.base_seq == 20001 and st_.received == 1


def test_jitter_closed_form() -> None:
    # Arrivals alternate +-2 ms around a perfect 20 ms cadence: |D| = 4 ms = 32 units at 8 kHz
    # for every pair. J_n = 32 * (1 - (15/16)^n) after n differences (A.8 recursion).
    st_ = ReceiverStats(1, 8000, probation=0)
    n = 40
    for i in range(n + 1):
        offset = 0.002 if i % 2 else -0.002
        st_.receive(i, i * 160, i * 0.020 + offset)
    assert st_.jitter == pytest.approx(32 * (1 - (15 / 16) ** n), rel=1e-9)
    assert st_.snapshot().jitter_ms == pytest.approx(st_.jitter / 8)
    assert st_.report_block(1.0).jitter == int(32 * (1 - (15 / 16) ** n))


def test_jitter_ignores_timestamp_wrap() -> None:
    st_ = ReceiverStats(1, 8000, probation=0)
    base = 2**32 - 320
    for i in range(6):
        st_.receive(i, (base + i * 160) % 2**32, i * 0.02)
    assert st_.jitter == pytest.approx(0.0, abs=1e-6)


def test_lsr_dlsr_and_rfc_rtt_example() -> None:
    st_ = ReceiverStats(1, 8000)
    ntp = 0xB7052000 << 16  # middle 32 bits = 0xB7052000
    st_.on_sender_report(SenderReport(1, ntp, 0, 0, 0), arrival_s=100.0)
    rb = st_.report_block(now_s=105.25)
    assert rb.lsr == 0xB7052000 and rb.dlsr == 0x00054000  # 5.25 s in 1/65536 s
    # RFC 3550 §6.4.1 figure 2: A = 0xb710:8000, DLSR 5.25 s, LSR 0xb705:2000 -> 6.125 s
    arrival_ntp = 0xB7108000 << 16
    assert rtt_from_report(rb, arrival_ntp) == pytest.approx(6.125)
    assert rtt_from_report(ReportBlock(1), arrival_ntp) is None


def test_ntp_from_unix() -> None:
    ntp = ntp_from_unix(0.5)
    assert ntp >> 32 == 2_208_988_800 and ntp & 0xFFFFFFFF == 1 << 31


def test_bad_arguments() -> None:
    with pytest.raises(MediaError):
        ReceiverStats(1, 0)
    with pytest.raises(MediaError):
        ReceiverStats(1, 8000).receive(70000, 0, 0.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 65535), max_size=80))
def test_invariants(seqs: list[int]) -> None:
    st_ = ReceiverStats(1, 8000)
    for i, s in enumerate(seqs):
        st_.receive(s, s * 160, i * 0.02)
    rb = st_.report_block(10.0)
    assert 0 <= rb.fraction_lost <= 255
    assert st_.expected >= 0 and st_.received >= 0
