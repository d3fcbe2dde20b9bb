"""A sans-IO RTP session for one local source (RFC 3550 §6): what an endpoint needs besides
sending packets - receiver statistics per remote source, SR/RR + SDES compound reports at the
RFC 3550 interval, RTT from the reports the peer sends back, and BYE.

The caller owns the clocks: ``now`` is any monotonic time in seconds, ``ntp_now`` the 64-bit
NTP wall-clock time of the same instant (see :func:`callward.rtp.stats.ntp_from_unix`).
The randomisation of the report interval comes from an injected ``random.Random``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from callward.errors import MediaError
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.rtcp import (
    Bye,
    ReceiverReport,
    RtcpPacket,
    Sdes,
    SdesChunk,
    SdesItem,
    SenderReport,
    parse_rtcp,
    serialize_rtcp,
)
from callward.rtp.stats import ReceiverStats, rtt_from_report

__all__ = ["RtpSession", "rtcp_interval"]

#: RFC 3550 §6.2 / A.7 constants
RTCP_MIN_TIME = 5.0
COMPENSATION = 2.71828 - 1.5  # e - 3/2, §6.3.1
UDP_IP_OVERHEAD = 28  # IPv4 + UDP headers counted in avg_rtcp_size (§6.2)
MAX_SOURCES = 32


def rtcp_interval(
    *,
    members: int,
    senders: int,
    rtcp_bw: float,
    we_sent: bool,
    avg_rtcp_size: float,
    initial: bool,
    rng: random.Random,
    min_time: float = RTCP_MIN_TIME,
) -> float:
    """The randomised RTCP transmission interval of RFC 3550 Appendix A.7 (``rtcp_bw`` in
    octets per second, the 5 % of session bandwidth given to RTCP)."""
    if members < 1 or senders < 0 or rtcp_bw <= 0 or avg_rtcp_size <= 0:
        raise MediaError("bad RTCP interval parameters")
    t_min = min_time / 2 if initial else min_time
    n = members
    # senders share 25 % of the RTCP bandwidth when they are at most a quarter of members
    if 0 < senders <= members * 0.25:
        if we_sent:
            rtcp_bw *= 0.25
            n = senders
        else:
            rtcp_bw *= 0.75
            n = members - senders
    t = max(avg_rtcp_size * n / rtcp_bw, t_min)
    return t * (rng.random() + 0.5) / COMPENSATION


@dataclass(slots=True)
class _SentState:
    packets: int = 0
    octets: int = 0
    last_ts: int = 0
    last_time: float = 0.0
    sent_since_report: bool = False


class RtpSession:
    def __init__(
        self,
        ssrc: int,
        clock_rate: int,
        cname: str,
        *,
        session_bw_bps: float = 64000.0,
        rng: random.Random | None = None,
        start: float = 0.0,
    ) -> None:
        if not 0 <= ssrc <= 0xFFFFFFFF or clock_rate <= 0:
            raise MediaError("bad SSRC or clock rate")
        if not 0 < len(cname.encode("utf-8")) <= 255:
            raise MediaError("CNAME must be 1-255 bytes")
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.cname = cname
        self.rtcp_bw = session_bw_bps / 8 * 0.05  # §6.2: 5 % of the session bandwidth
        self.rng = rng or random.Random()
        self.sent = _SentState()
        self.sources: dict[int, ReceiverStats] = {}
        self.senders: set[int] = set()
        self.avg_rtcp_size = 100.0
        self.rtt_s: float | None = None
        self.initial = True
        self.next_report = start + self._interval()

    # -- sending ------------------------------------------------------------------------
    def record_sent(self, packet: RtpPacket, now: float) -> None:
        """Account an RTP packet we sent (for SR counts and the NTP/RTP mapping)."""
        self.sent.packets = (self.sent.packets + 1) & 0xFFFFFFFF
        self.sent.octets = (self.sent.octets + len(packet.payload)) & 0xFFFFFFFF
        self.sent.last_ts = packet.timestamp
        self.sent.last_time = now
        self.sent.sent_since_report = True

    # -- receiving ----------------------------------------------------------------------
    def receive_rtp(self, data: bytes, now: float) -> RtpPacket:
        pkt = parse_rtp(data)
        st = self.sources.get(pkt.ssrc)
        if st is None:
            if len(self.sources) >= MAX_SOURCES:
                raise MediaError("too many RTP sources in one session")
            st = self.sources[pkt.ssrc] = ReceiverStats(pkt.ssrc, self.clock_rate)
        if st.receive(pkt.sequence_number, pkt.timestamp, now):
            self.senders.add(pkt.ssrc)
        return pkt

    def receive_rtcp(self, data: bytes, now: float, ntp_now: int) -> tuple[RtcpPacket, ...]:
        packets = parse_rtcp(data)
        self.avg_rtcp_size += (len(data) + UDP_IP_OVERHEAD - self.avg_rtcp_size) / 16
        for pkt in packets:
            if isinstance(pkt, SenderReport):
                st = self.sources.get(pkt.ssrc)
                if st is None and len(self.sources) < MAX_SOURCES:
                    st = self.sources[pkt.ssrc] = ReceiverStats(pkt.ssrc, self.clock_rate)
                if st is not None:
                    st.on_sender_report(pkt, now)
            if isinstance(pkt, SenderReport | ReceiverReport):
                for block in pkt.reports:
                    if block.ssrc == self.ssrc:
                        rtt = rtt_from_report(block, ntp_now)
                        if rtt is not None:
                            self.rtt_s = rtt
            if isinstance(pkt, Bye):
                for ssrc in pkt.ssrcs:
                    self.sources.pop(ssrc, None)
                    self.senders.discard(ssrc)
        return packets

    # -- reports ------------------------------------------------------------------------
    @property
    def members(self) -> int:
        return 1 + len(self.sources)

    def _interval(self) -> float:
        we_sent = self.sent.sent_since_report
        senders = len(self.senders) + (1 if we_sent else 0)
        return rtcp_interval(
            members=self.members,
            senders=senders,
            rtcp_bw=self.rtcp_bw,
            we_sent=we_sent,
            avg_rtcp_size=self.avg_rtcp_size,
            initial=self.initial,
            rng=self.rng,
        )

    def rtcp_due(self, now: float) -> bool:
        return now >= self.next_report

    def build_rtcp(self, now: float, ntp_now: int) -> bytes:
        """The compound report (SR if we sent since the last one, else RR; then SDES CNAME),
        and schedule the next one."""
        blocks = tuple(st.report_block(now) for st in list(self.sources.values())[:31])
        first: RtcpPacket
        if self.sent.sent_since_report:
            # §6.4.1: the RTP timestamp is the NTP instant expressed in RTP units,
            # extrapolated from the last packet sent
            rtp_ts = (
                self.sent.last_ts + round((now - self.sent.last_time) * self.clock_rate)
            ) & 0xFFFFFFFF
            first = SenderReport(
                self.ssrc, ntp_now, rtp_ts, self.sent.packets, self.sent.octets, blocks
            )
        else:
            first = ReceiverReport(self.ssrc, blocks)
        sdes = Sdes((SdesChunk(self.ssrc, (SdesItem(1, self.cname.encode("utf-8")),)),))
        data = serialize_rtcp([first, sdes])
        self.avg_rtcp_size += (len(data) + UDP_IP_OVERHEAD - self.avg_rtcp_size) / 16
        self.initial = False
        self.next_report = now + self._interval()
        self.sent.sent_since_report = False
        return data

    def build_bye(self, reason: str = "") -> bytes:
        """Leaving the session (§6.6): an RR then BYE in one compound packet."""
        return serialize_rtcp(
            [ReceiverReport(self.ssrc), Bye((self.ssrc,), reason.encode("utf-8")[:255])]
        )
