"""Receiver-side RTP statistics exactly as RFC 3550 Appendix A specifies them: sequence number
validation and extended highest sequence (A.1), expected/lost/fraction lost (A.3),
interarrival jitter (A.8), and the LSR/DLSR round-trip computation (§6.4.1).

Sans-IO: arrival times are passed in (seconds on any monotonic clock); NTP times are passed in
as 64-bit integers (see :func:`ntp_from_unix`).
"""

from __future__ import annotations

from dataclasses import dataclass

from callward.errors import MediaError
from callward.rtp.rtcp import ReportBlock, SenderReport, ntp_middle32

__all__ = [
    "MAX_DROPOUT",
    "MAX_MISORDER",
    "MIN_SEQUENTIAL",
    "NTP_UNIX_OFFSET",
    "ReceiverSnapshot",
    "ReceiverStats",
    "ntp_from_unix",
    "rtt_from_report",
]

RTP_SEQ_MOD = 1 << 16
#: RFC 3550 A.1 constants.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_UNIX_OFFSET = 2_208_988_800


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point, RFC 3550 §4) for a Unix time in seconds."""
    whole = int(t)
    frac = int((t - whole) * (1 << 32)) & 0xFFFFFFFF
    return (((whole + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32) | frac


def rtt_from_report(block: ReportBlock, arrival_ntp: int) -> float | None:
    """Round-trip time in seconds seen by the *sender* when a report block about its stream
    arrives at ``arrival_ntp``: A - LSR - DLSR in 16.16 units (RFC 3550 §6.4.1).
    None when the receiver has not yet seen an SR (LSR = 0)."""
    if block.lsr == 0:
        return None
    a = ntp_middle32(arrival_ntp)
    rtt = (a - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt >= 1 << 31:  # clock steps or a DLSR beyond the arrival: nothing sensible to say
        return None
    return rtt / 65536.0


@dataclass(frozen=True, slots=True)
class ReceiverSnapshot:
    """Cumulative view of one source, for MediaStats events and quality analytics."""

    ssrc: int
    received: int
    expected: int
    cumulative_lost: int
    extended_highest_seq: int
    jitter: float  # RTP timestamp units (A.8)
    jitter_ms: float


class ReceiverStats:
    """Per-source receiver statistics (RFC 3550 A.1, A.3, A.8).

    Call :meth:`receive` for every RTP packet from the source, :meth:`on_sender_report` for
    every SR from it, and :meth:`report_block` when an RR/SR is due (that call also closes the
    interval used for ``fraction_lost``).
    """

    def __init__(self, ssrc: int, clock_rate: int, *, probation: int = MIN_SEQUENTIAL) -> None:
        if clock_rate <= 0:
            raise MediaError(f"clock rate {clock_rate} must be positive")
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._min_sequential = probation
        self.probation = probation
        self.max_seq = 0
        self.cycles = 0
        self.base_seq = 0
        self.bad_seq = RTP_SEQ_MOD + 1
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0
        self.jitter = 0.0
        self._started = False
        self._last_arrival = 0.0
        self._last_ts = 0
        self._have_transit = False
        self._lsr = 0
        self._lsr_arrival: float | None = None

    # -- A.1 ---------------------------------------------------------------------------
    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0
        self._have_transit = False

    def _update_seq(self, seq: int) -> bool:
        udelta = (seq - self.max_seq) % RTP_SEQ_MOD
        if self.probation:
            # A.1: a source is valid only after MIN_SEQUENTIAL packets in sequence.
            if seq == (self.max_seq + 1) % RTP_SEQ_MOD:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = self._min_sequential - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:  # in order with a permissible gap; wrapped
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            # a very large jump: believe it only if the next packet follows it (A.1)
            if seq == self.bad_seq:
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & (RTP_SEQ_MOD - 1)
                return False
        # else: duplicate or reordered packet, counted as received
        self.received += 1
        return True

    def receive(self, seq: int, rtp_ts: int, arrival_s: float) -> bool:
        """Account one packet; return False when A.1 says it is not (yet) valid."""
        if not 0 <= seq < RTP_SEQ_MOD or not 0 <= rtp_ts <= 0xFFFFFFFF:
            raise MediaError("RTP sequence number / timestamp out of range")
        if not self._started:
            # A.1: "init_seq(s, seq); s->max_seq = seq - 1; s->probation = MIN_SEQUENTIAL"
            self._started = True
            self._init_seq(seq)
            self.max_seq = (seq - 1) % RTP_SEQ_MOD
            self.probation = self._min_sequential
            if self.probation == 0:
                self.max_seq = seq
                self.received = 1
                self._jitter_update(rtp_ts, arrival_s)
                return True
        ok = self._update_seq(seq)
        if ok:
            self._jitter_update(rtp_ts, arrival_s)
        return ok

    # -- A.8 ---------------------------------------------------------------------------
    def _jitter_update(self, rtp_ts: int, arrival_s: float) -> None:
        if self._have_transit:
            # D(i-1,i) = (R_i - R_{i-1}) - (S_i - S_{i-1}), in timestamp units (§6.4.1); the
            # timestamp difference is taken mod 2^32 so wraparound does not look like jitter.
            dts = (rtp_ts - self._last_ts) % (1 << 32)
            if dts >= 1 << 31:
                dts -= 1 << 32
            d = abs((arrival_s - self._last_arrival) * self.clock_rate - dts)
            self.jitter += (d - self.jitter) / 16.0
        self._have_transit = True
        self._last_arrival = arrival_s
        self._last_ts = rtp_ts

    # -- A.3 ---------------------------------------------------------------------------
    @property
    def extended_highest_seq(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if self.probation or not self._started:
            return 0
        return self.extended_highest_seq - self.base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        """Expected minus received; clamped to the signed 24-bit report field (A.3)."""
        lost = self.expected - self.received
        return max(-(1 << 23), min((1 << 23) - 1, lost))

    def snapshot(self) -> ReceiverSnapshot:
        return ReceiverSnapshot(
            ssrc=self.ssrc,
            received=self.received,
            expected=self.expected,
            cumulative_lost=self.cumulative_lost,
            extended_highest_seq=self.extended_highest_seq & 0xFFFFFFFF,
            jitter=self.jitter,
            jitter_ms=self.jitter * 1000.0 / self.clock_rate,
        )

    def on_sender_report(self, sr: SenderReport, arrival_s: float) -> None:
        """Remember the SR's NTP time (LSR) and when it arrived, for DLSR (§6.4.1)."""
        self._lsr = ntp_middle32(sr.ntp_timestamp)
        self._lsr_arrival = arrival_s

    def report_block(self, now_s: float) -> ReportBlock:
        """A reception report block for this source; closes the fraction-lost interval."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = (lost_interval << 8) // expected_interval
        if self._lsr_arrival is None:
            lsr = dlsr = 0
        else:
            lsr = self._lsr
            dlsr = int((now_s - self._lsr_arrival) * 65536) & 0xFFFFFFFF
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=min(fraction, 255),
            cumulative_lost=self.cumulative_lost,
            highest_seq=self.extended_highest_seq & 0xFFFFFFFF,
            jitter=int(self.jitter) & 0xFFFFFFFF,
            lsr=lsr,
            dlsr=dlsr,
        )
