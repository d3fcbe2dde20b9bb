"""The phone's media plane (RFC 3550, RFC 3711): one RTP/SRTP endpoint per audio stream that
sends and receives real voice and RTCP, as a thin asyncio adapter over sans-IO cores.

- Send: :meth:`RtpEndpoint.send_voice` paces PCM through :class:`~callward.media.voice.
  VoiceSender` (Opus with bitrate/FEC/DTX, or G.711 with VAD + RFC 3389 comfort noise) at the
  negotiated ptime; DTX frames are simply not sent, talkspurts start with the marker bit.
- Receive: every packet is SRTP-checked, counted (RFC 3550 Appendix A statistics per source)
  and decoded by :class:`~callward.media.voice.VoiceReceiver` (Opus FEC recovery of single
  losses, PLC, CN); :meth:`RtpEndpoint.playout` runs the adaptive jitter buffer over what
  arrived and reports late loss and buffer delay.
- RTCP: :class:`~callward.rtp.session.RtpSession` schedules SR/RR + SDES at RFC 3550's
  randomised interval (5 s minimum, §6.2), sent as SRTCP when the stream is secured, on the RTP
  port with rtcp-mux (RFC 5761) or from/to port + 1. Reports about our stream feed the Opus
  rate controller, whose bitrate/FEC decisions are applied to the encoder at once; a ptime or
  codec change needs a new offer/answer, which is handed to ``on_renegotiate`` (the call-level
  hook a signalling layer answers with a re-INVITE or UPDATE).

With an :class:`~callward.ua.impairment.ImpairmentShim` the sender drops and delays packets
like a lossy radio link. :meth:`RtpEndpoint.send_audio` (a repeated frame, G.711 silence by
default) remains for peers and tests that only need packets flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from callward.errors import MediaError
from callward.media.rate_control import LinkReport, OpusRateController, RateDecision
from callward.media.voice import VoiceReceiver, VoiceSender, VoiceSettings
from callward.rtp.jitter_buffer import AdaptiveBuffer, PlayoutResult
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.rtcp import ReceiverReport, SenderReport
from callward.rtp.session import RtpSession
from callward.rtp.srtp import SrtpContext, SrtpKeying
from callward.rtp.stats import ReceiverStats, ntp_from_unix
from callward.ua.impairment import ImpairmentShim

__all__ = ["RtpCounters", "RtpEndpoint"]

_PTIME = 0.020  # 20 ms of 8 kHz audio per packet (RFC 3551 §4.5 default)
_SAMPLES = 160
_CLOCK = 8000  # G.711 RTP clock rate (RFC 3551 §4.5.14)
_MAX_LOG = 10_000  # per-packet timing kept for delay figures (bounded: 200 s of audio)
_MAX_SOURCES = 32  # remote SSRCs tracked per endpoint (rtp/session.py has the same bound)


@dataclass(slots=True)
class RtpCounters:
    packets_sent: int = 0  # handed to the network by the sender (before any impairment)
    packets_received: int = 0
    bytes_sent: int = 0  # UDP payload bytes (the SRTP packet when secured)
    bytes_received: int = 0
    invalid: int = 0  # not RTP, or SRTP that failed authentication / replay check
    dropped: int = 0  # dropped by the sender's impairment shim
    rtcp_sent: int = 0
    rtcp_bytes_sent: int = 0  # UDP payload bytes of (S)RTCP compound packets
    rtcp_received: int = 0
    rtcp_invalid: int = 0
    renegotiations: int = 0  # ptime/codec changes handed to on_renegotiate


def _is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: on a multiplexed port, RTCP packet types 192-223 (SR 200 .. XR 207)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, owner: RtpEndpoint, rtcp: bool = False) -> None:
        self.owner = owner
        self.rtcp = rtcp

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # RFC 7983 demultiplexing: DTLS / STUN on the media port go to whoever claimed them.
        demux = self.owner.demux
        if demux is not None and demux(data, (str(addr[0]), int(addr[1]))):
            return
        now = asyncio.get_running_loop().time()
        if self.rtcp or (self.owner.rtcp_mux and _is_rtcp(data)):
            self.owner._receive_rtcp(data, now)
        else:
            self.owner._receive(data, now)


class RtpEndpoint:
    """One UDP port for one audio stream."""

    def __init__(self) -> None:
        self.counters = RtpCounters()
        self.local_addr: tuple[str, int] = ("", 0)
        self._sock: asyncio.DatagramTransport | None = None
        self.ssrc = secrets.randbits(32)
        self.stats: dict[int, ReceiverStats] = {}  # per remote SSRC (RFC 3550 A.1-A.8)
        self.sent_at: dict[int, float] = {}  # our seq -> loop time it was due (before shim)
        self.arrivals: list[tuple[int, int, float]] = []  # (ssrc, seq, loop time)
        self.impairment: ImpairmentShim | None = None
        # where the shim's "lost" packets go instead of the peer (a port nobody reads): the
        # sender still pays for them on the wire, and a capture sees them
        self.loss_sink: tuple[str, int] | None = None
        self.timestamps: list[int] = []  # RTP timestamp of each entry of ``arrivals``
        self._tx: SrtpContext | None = None
        self._rx: SrtpContext | None = None
        self._later: set[asyncio.TimerHandle] = set()
        # Claims non-RTP datagrams (DTLS-SRTP handshake, ICE/STUN): True = consumed.
        self.demux: Callable[[bytes, tuple[str, int]], bool] | None = None
        self._rtcp_sock: asyncio.DatagramTransport | None = None
        # set by start(): the negotiated stream
        self.rtcp_mux = False
        self.remote_rtp: tuple[str, int] | None = None
        self.remote_rtcp: tuple[str, int] | None = None
        self.settings: VoiceSettings | None = None
        self.session: RtpSession | None = None
        self.sender: VoiceSender | None = None
        self.receiver: VoiceReceiver | None = None
        self.rate_controller: OpusRateController | None = None
        self.decisions: list[RateDecision] = []
        self.on_renegotiate: Callable[[VoiceSettings], None] | None = None
        self.metered = False  # tell the rate controller bytes are paid for (ptime 40)
        # every RTCP report about our stream: (fraction lost 0..1, RTT s or None)
        self.on_link_report: Callable[[float, float | None], None] | None = None
        self.voice_ms = 0  # audio encoded by send_voice so far (sent or suppressed), ms
        self._rtcp_task: asyncio.Task[None] | None = None
        self._seq = secrets.randbits(16)
        self._ts0 = secrets.randbits(32)

    @classmethod
    async def open(cls, host: str = "127.0.0.1", *, rtcp_port: bool = True) -> RtpEndpoint:
        """Bind the RTP port and, with ``rtcp_port``, the next port for RTCP (RFC 3550 §11:
        an even RTP port and RTCP on the odd one above it) for peers without rtcp-mux."""
        self = cls()
        loop = asyncio.get_running_loop()
        for _ in range(20 if rtcp_port else 1):
            sock, _ = await loop.create_datagram_endpoint(
                lambda: _Proto(self), local_addr=(host, 0)
            )
            port = int(sock.get_extra_info("sockname")[1])
            if not rtcp_port:
                break
            if port % 2 == 0 and port < 65535:
                try:
                    rtcp, _ = await loop.create_datagram_endpoint(
                        lambda: _Proto(self, rtcp=True), local_addr=(host, port + 1)
                    )
                except OSError:
                    rtcp = None
                if rtcp is not None:
                    self._rtcp_sock = rtcp
                    break
            sock.close()
        else:
            raise MediaError("could not bind an RTP/RTCP port pair")
        self._sock = sock
        name = sock.get_extra_info("sockname")
        self.local_addr = (str(name[0]), int(name[1]))
        return self

    def secure(self, send: SrtpKeying, receive: SrtpKeying) -> None:
        """Protect what we send with ``send`` and accept only SRTP authenticated with
        ``receive`` (RFC 3711 §3.3-3.4); the keys come from the two ``a=crypto`` lines."""
        self._tx = SrtpContext(send, inbound=False)
        self._rx = SrtpContext(receive, inbound=True)

    @property
    def secured(self) -> bool:
        return self._tx is not None

    def start(
        self,
        remote: tuple[str, int],
        settings: VoiceSettings,
        *,
        remote_rtcp: tuple[str, int] | None = None,
        rtcp_mux: bool = False,
        rate_control: bool = True,
        session_bw_bps: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Begin the negotiated stream: where to send, what codec/ptime, where RTCP goes
        (``remote_rtcp`` or, with ``rtcp_mux``, the RTP address); starts the RTCP timer.
        The CNAME is random per endpoint (RFC 7022): it says nothing about the user."""
        loop = asyncio.get_running_loop()
        self.remote_rtp = remote
        self.rtcp_mux = rtcp_mux
        self.remote_rtcp = remote if rtcp_mux else (remote_rtcp or (remote[0], remote[1] + 1))
        self.settings = settings
        self.sender = VoiceSender(settings)
        self.receiver = VoiceReceiver(settings)
        if rate_control and settings.codec == "opus":
            lo = min(8000, settings.bitrate)
            self.rate_controller = OpusRateController(
                min_bitrate=lo, max_bitrate=max(settings.bitrate, 8000),
                start_bitrate=settings.bitrate, hold_reports=2,
            )  # fmt: skip
            # the controller starts from what was negotiated, not from its own defaults
            start = self.rate_controller.current
            self.rate_controller.current = replace(
                start, ptime_ms=settings.ptime_ms, fec=settings.fec
            )
        bw = session_bw_bps or 2 * _stream_bps(settings)
        self.session = RtpSession(
            self.ssrc, settings.clock_rate, secrets.token_hex(8), session_bw_bps=bw,
            rng=rng or random.Random(), start=loop.time(),
        )  # fmt: skip
        # the session's sources share the ReceiverStats objects but not the dict: an RTCP
        # BYE removes a source from the session (§6.6), our statistics of it stay
        self.session.sources.update(self.stats)
        self._rtcp_task = loop.create_task(self._rtcp_loop())

    def change(self, settings: VoiceSettings) -> None:
        """Send with new negotiated settings from the next packet on (a re-INVITE changed the
        ptime or codec): a new encoder and decoder; RTP timestamps and sequence numbers carry
        on where the old encoder stopped (RFC 3550 §5.1), the next packet has the marker."""
        if self.sender is None or self.settings is None:
            raise MediaError("RTP endpoint is not started")
        old = self.settings
        self._ts0 = (self._ts0 + self.sender.packet_times * old.timestamp_step) & 0xFFFFFFFF
        self.sender = VoiceSender(settings)
        if settings.codec != old.codec:
            self.receiver = VoiceReceiver(settings)
        self.settings = settings
        self.change_controller_ptime(settings.ptime_ms)

    def change_controller_ptime(self, ptime_ms: int) -> None:
        """Tell the rate controller which ptime is in use (after a renegotiation, or when a
        request for another one was declined)."""
        if self.rate_controller is not None:
            now = self.rate_controller.current
            self.rate_controller.current = replace(now, ptime_ms=ptime_ms)

    def _receive(self, data: bytes, now: float) -> None:
        try:
            plain = self._rx.unprotect(data) if self._rx is not None else data
            pkt = parse_rtp(plain)
        except MediaError:
            self.counters.invalid += 1
            return
        self.counters.packets_received += 1
        self.counters.bytes_received += len(data)
        stats = self.stats.get(pkt.ssrc)
        if stats is None:
            if len(self.stats) >= _MAX_SOURCES:
                self.counters.invalid += 1
                return
            known = self.session.sources.get(pkt.ssrc) if self.session else None
            clock = self.settings.clock_rate if self.settings else _CLOCK
            stats = self.stats[pkt.ssrc] = known or ReceiverStats(pkt.ssrc, clock)
            if self.session is not None and len(self.session.sources) < _MAX_SOURCES:
                self.session.sources[pkt.ssrc] = stats
        if stats.receive(pkt.sequence_number, pkt.timestamp, now) and self.session:
            self.session.senders.add(pkt.ssrc)
        if self.receiver is not None:
            self.receiver.receive(pkt.sequence_number, pkt.payload_type, pkt.payload)
        if len(self.arrivals) < _MAX_LOG:
            self.arrivals.append((pkt.ssrc, pkt.sequence_number, now))
            self.timestamps.append(pkt.timestamp)

    def _receive_rtcp(self, data: bytes, now: float) -> None:
        if self.session is None:
            return
        try:
            plain = self._rx.unprotect_rtcp(data) if self._rx is not None else data
            packets = self.session.receive_rtcp(plain, now, ntp_from_unix(time.time()))
        except MediaError:
            self.counters.rtcp_invalid += 1
            return
        self.counters.rtcp_received += 1
        for pkt in packets:
            if isinstance(pkt, SenderReport | ReceiverReport):
                for block in pkt.reports:
                    if block.ssrc == self.ssrc:
                        self._on_report(block.fraction_lost)

    def _on_report(self, fraction_lost: int) -> None:
        """A receiver report about our stream: let the rate controller decide, apply
        bitrate/FEC/expected loss to the encoder now, hand ptime changes to the call."""
        rtt = self.session.rtt_s if self.session else None
        if self.on_link_report is not None:
            self.on_link_report(fraction_lost / 256.0, rtt)
        if self.rate_controller is None or self.sender is None or self.settings is None:
            return
        report = LinkReport.from_rtcp(fraction_lost, rtt, self.metered)
        decision = self.rate_controller.on_report(report)
        if not decision.changed:
            return
        self.decisions.append(decision)
        loss = decision.packet_loss_perc or self.settings.expected_loss_pct
        new = replace(
            self.settings, bitrate=decision.bitrate, fec=decision.fec, expected_loss_pct=loss
        )
        self.sender.apply(new)
        self.settings = new
        if decision.ptime_ms != new.ptime_ms and self.on_renegotiate is not None:
            self.counters.renegotiations += 1
            self.on_renegotiate(replace(new, ptime_ms=decision.ptime_ms))

    async def _rtcp_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self.session is not None:
            await asyncio.sleep(max(0.0, self.session.next_report - loop.time()))
            if self.session is None:
                return
            self._send_rtcp(self.session.build_rtcp(loop.time(), ntp_from_unix(time.time())))

    def _send_rtcp(self, data: bytes) -> None:
        if self._tx is not None:
            data = self._tx.protect_rtcp(data)
        dest = self.remote_rtcp
        sock = self._sock if self.rtcp_mux or self._rtcp_sock is None else self._rtcp_sock
        if dest is None or sock is None:
            return
        self.counters.rtcp_sent += 1
        self.counters.rtcp_bytes_sent += len(data)
        sock.sendto(data, dest)

    def playout(self, ssrc: int, buffer: AdaptiveBuffer | None = None) -> PlayoutResult:
        """What the adaptive jitter buffer made of the packets from ``ssrc``: late loss and
        buffer delay (RFC 3550 timestamps, arrival on our clock)."""
        idx = [i for i, a in enumerate(self.arrivals) if a[0] == ssrc]
        clock = self.settings.clock_rate if self.settings else _CLOCK
        return (buffer or AdaptiveBuffer()).run(
            [self.arrivals[i][2] for i in idx], [self.timestamps[i] for i in idx], clock
        )

    def _sendto(self, data: bytes, dest: tuple[str, int]) -> None:
        if self._sock is not None:
            self._sock.sendto(data, dest)

    async def send_audio(
        self,
        dest: tuple[str, int],
        packets: int,
        payload_type: int = 0,
        payload: bytes | None = None,
    ) -> None:
        """Send ``packets`` paced 20 ms packets: ``payload`` (one encoded 20 ms frame, repeated)
        or G.711 silence (0xFF is μ-law zero, 0xD5 A-law zero). With an impairment shim, some
        packets are dropped and the others leave after an extra delay (``loop.call_later``);
        wait ``jitter`` longer before closing so the last ones still go out."""
        if self._sock is None:
            raise MediaError("RTP endpoint is closed")
        silence = payload or (b"\xff" if payload_type == 0 else b"\xd5") * _SAMPLES
        seq = secrets.randbits(16)
        ts = secrets.randbits(32)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(packets):
            pkt = RtpPacket(
                payload_type,
                (seq + i) & 0xFFFF,
                (ts + i * _SAMPLES) & 0xFFFFFFFF,
                self.ssrc,
                silence,
                marker=i == 0,
            )
            data = bytes(pkt)
            if self._tx is not None:
                data = self._tx.protect(data)
            # What the sender pays for: every packet it transmits, lost later or not.
            self.counters.packets_sent += 1
            self.counters.bytes_sent += len(data)
            if len(self.sent_at) < _MAX_LOG:
                self.sent_at[pkt.sequence_number] = loop.time()
            delay = 0.0 if self.impairment is None else self.impairment.decide()
            if delay is None:
                self.counters.dropped += 1
            elif delay <= 0.0:
                self._sock.sendto(data, dest)
            else:
                handle = loop.call_later(delay, self._sendto, data, dest)
                self._later.add(handle)
            await asyncio.sleep(max(0.0, start + (i + 1) * _PTIME - loop.time()))

    def _transmit(self, pkt: RtpPacket, due: float) -> None:
        data = bytes(pkt)
        if self._tx is not None:
            data = self._tx.protect(data)
        self.counters.packets_sent += 1
        self.counters.bytes_sent += len(data)
        if len(self.sent_at) < _MAX_LOG:
            self.sent_at[pkt.sequence_number] = due
        if self.session is not None:
            self.session.record_sent(pkt, due)
        dest = self.remote_rtp
        assert dest is not None and self._sock is not None
        delay = 0.0 if self.impairment is None else self.impairment.decide()
        if delay is None:
            self.counters.dropped += 1
            if self.loss_sink is not None:
                self._sock.sendto(data, self.loss_sink)
        elif delay <= 0.0:
            self._sock.sendto(data, dest)
        else:
            handle = asyncio.get_running_loop().call_later(delay, self._sendto, data, dest)
            self._later.add(handle)

    async def send_voice(self, pcm: npt.NDArray[np.int16] | Iterable[npt.NDArray[np.int16]]) -> int:
        """Encode and send ``pcm`` (int16 at the settings' sample rate: one array, or blocks of
        any length from an iterator, for calls of unknown length) in real time, one packet per
        ptime; returns the packets sent. Needs :meth:`start`. Cancelling it stops the stream
        between packets."""
        if self._sock is None or self.sender is None or self.settings is None:
            raise MediaError("RTP endpoint is closed or not started")
        blocks = iter([pcm]) if isinstance(pcm, np.ndarray) else iter(pcm)
        buf: npt.NDArray[np.int16] = np.zeros(0, dtype=np.int16)
        offset = 0
        loop = asyncio.get_running_loop()
        due: float | None = None
        sent = 0
        while True:
            s = self.settings
            n = s.frame_samples
            while len(buf) - offset < n:
                block = next(blocks, None)
                if block is None:
                    return sent
                buf, offset = np.concatenate((buf[offset:], block)), 0
            if due is None:
                due = loop.time()  # the clock starts with the first frame in hand
            for vp in self.sender.encode(buf[offset : offset + n]):
                ts = (self._ts0 + vp.index * s.timestamp_step) & 0xFFFFFFFF
                self._seq = (self._seq + 1) & 0xFFFF
                pkt = RtpPacket(vp.payload_type, self._seq, ts, self.ssrc, vp.payload,
                                marker=vp.marker)  # fmt: skip
                self._transmit(pkt, due)
                sent += 1
            offset += n
            self.voice_ms += s.ptime_ms
            due += s.ptime_ms / 1000
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def stop(self) -> None:
        """End the stream: stop the RTCP timer and send an RTCP BYE (RFC 3550 §6.6)."""
        task, self._rtcp_task = self._rtcp_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.session is not None and self._sock is not None:
            self._send_rtcp(self.session.build_bye())
        self.session = None

    def close(self) -> None:
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
            self._rtcp_task = None
        if self._rtcp_sock is not None:
            self._rtcp_sock.close()
            self._rtcp_sock = None
        for handle in self._later:
            handle.cancel()
        self._later.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _stream_bps(settings: VoiceSettings) -> float:
    """Nominal bit rate of one direction on the wire (IPv4/UDP/RTP, SRTP tag), the session
    bandwidth RTCP's 5 % share is computed from (RFC 3550 §6.2)."""
    pps = 1000 / settings.ptime_ms
    payload = settings.bitrate / 8 / pps if settings.codec == "opus" else settings.frame_samples
    return (payload + 20 + 8 + 12 + 10) * 8 * pps
