"""The asyncio media relay: anchors the RTP/RTCP of a call between two legs.

Per packet, in :meth:`RelaySession._on_datagram`:

1. demultiplex RTP/RTCP on the one port (rtcp-mux, RFC 5761 §4);
2. on an SRTP leg, authenticate and decrypt with that leg's inbound context; failures are
   counted (auth / replay) and the packet dropped, so a forged packet can never move the
   latch or reach the other side;
3. latch: the first verified packet fixes where the leg's peer really is (symmetric RTP,
   RFC 4961 - what gets media through NAT). Later a verified packet from a new address moves
   the latch (NAT rebinding, handover). On a trusted plain-RTP leg nothing can be verified,
   so a new address is only accepted for the SSRC already latched;
4. update RFC 3550 receiver statistics, hand the plain packet to the taps;
5. re-protect with the *other* leg's outbound context (its own keys: SRTP<->SRTP re-keying,
   or plain toward a trusted leg) and send it to that leg's latched/SDP address.

DTMF (``relay.dtmf_path``): when the two legs negotiated different DTMF methods
(``LegConfig.dtmf``), RTP goes through a :class:`DtmfDirection` between steps 4 and 5, which
converts telephone-events <-> in-band tones, reports digits for an INFO leg through
:attr:`RelaySession.on_dtmf`, and :meth:`RelaySession.inject_digit` plays a digit received by
INFO into a media leg.

Opus rate control: on a leg with ``rate_control`` the peer's RTCP reception reports (what it
loses of what we send it, and the RTT) drive an :class:`OpusRateController`; every change of
bitrate/FEC/ptime is published as a :class:`~callward.events.MediaAdaptation`.

A watchdog publishes a :class:`~callward.events.MediaStats` per leg every
``stats_interval_s`` and ends the call with ``CallEnded(reason="rtp-timeout")`` when neither
leg has sent anything for ``rtp_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from callward.errors import MediaError
from callward.events import CallEnded, EventBus, MediaStats
from callward.media.rate_control import OpusRateController
from callward.relay.dtmf_path import DtmfDirection
from callward.relay.leg import (
    DSCP_EF,
    LegConfig,
    LegCounters,
    open_media_pair,
    open_media_socket,
)
from callward.relay.session_features import DtmfAndRateMixin
from callward.relay.taps import MediaTap
from callward.rtp.packet import is_rtcp, parse_rtp
from callward.rtp.rtcp import ReceiverReport, SenderReport, ntp_middle32, parse_rtcp
from callward.rtp.srtp import SrtpContext, SrtpError, SrtpKeying

__all__ = ["MediaRelay", "RelaySession"]

Address = tuple[str, int]


class _LegProtocol(asyncio.DatagramProtocol):
    def __init__(self, session: RelaySession, index: int, rtcp_port: bool = False) -> None:
        self.session = session
        self.index = index
        self.rtcp_port = rtcp_port

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.session._on_datagram(
            self.index, data, (str(addr[0]), int(str(addr[1]))), via_rtcp_port=self.rtcp_port
        )

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable etc.
        self.session.counters[self.index].no_destination += 1


@dataclass
class _Leg:
    config: LegConfig
    transport: asyncio.DatagramTransport | None = None
    sock: socket.socket | None = None
    rx: SrtpContext | None = None
    tx: SrtpContext | None = None
    latched: Address | None = None
    latched_ssrc: int | None = None
    # the separate RTCP socket of a leg without rtcp-mux
    rtcp_transport: asyncio.DatagramTransport | None = None
    rtcp_latched: Address | None = None
    rtcp_latched_ssrc: int | None = None

    @property
    def destination(self) -> Address | None:
        return self.latched or self.config.remote

    @property
    def rtcp_destination(self) -> Address | None:
        if self.config.rtcp_mux:
            return self.destination
        if self.rtcp_latched is not None:
            return self.rtcp_latched
        if self.config.remote_rtcp is None and self.latched is not None:
            return self.latched[0], self.latched[1] + 1
        return self.config.rtcp_destination


class RelaySession(DtmfAndRateMixin):
    """One call's relay. Build with :meth:`MediaRelay.create_session`."""

    def __init__(
        self,
        call_id: str,
        a: LegConfig,
        b: LegConfig,
        *,
        bus: EventBus | None = None,
        node: str = "relay-1",
        tenant: str = "default",
        rtp_timeout_s: float = 30.0,
        stats_interval_s: float = 5.0,
        dscp: int = DSCP_EF,
        clock: Callable[[], float] = time.time,
        seq: Callable[[], int] | None = None,
        port_range: tuple[int, int] = (20000, 29999),
        hold_timeout_s: float = 3600.0,
    ) -> None:
        self.call_id = call_id
        self.port_range = port_range
        self.legs = (_Leg(a), _Leg(b))
        self.counters = (LegCounters(), LegCounters())
        self.bus = bus
        self.node = node
        self.tenant = tenant
        self.rtp_timeout_s = rtp_timeout_s
        self.stats_interval_s = stats_interval_s
        self.dscp = dscp
        self.clock = clock
        self._seq = seq or itertools.count(1).__next__
        self.taps: list[MediaTap] = []
        self.tap_errors = 0
        self.ended = asyncio.Event()
        self.end_reason = ""
        self._watchdog: asyncio.Task[None] | None = None
        self._loop_time: Callable[[], float] = time.monotonic
        self.on_hold = False
        self.hold_timeout_s = hold_timeout_s
        for leg in self.legs:
            self._key(leg, leg.config.srtp_rx, leg.config.srtp_tx)
        #: called with (INFO leg name, digit, duration ms) when a digit must go out by SIP INFO
        self.on_dtmf: Callable[[str, str, float], None] | None = None
        self._dtmf: list[DtmfDirection | None] = [None, None]
        self._sent_at: list[float | None] = [None, None]  # loop time of the last RTP sent
        self._last_rtp: list[bytes | None] = [None, None]  # its seq, timestamp, SSRC octets
        self._build_dtmf()
        self.rate: list[OpusRateController | None] = [
            OpusRateController() if leg.config.rate_control else None for leg in self.legs
        ]
        self._pending: set[asyncio.Task[None]] = set()

    # -- set-up ---------------------------------------------------------------------------
    @staticmethod
    def _key(leg: _Leg, rx: SrtpKeying | None, tx: SrtpKeying | None) -> None:
        leg.rx = None if rx is None else SrtpContext(rx, inbound=True)
        leg.tx = None if tx is None else SrtpContext(tx, inbound=False)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop_time = loop.time
        for i, leg in enumerate(self.legs):
            cfg = leg.config
            rtcp_sock = None
            if cfg.rtcp_mux:
                sock = open_media_socket(cfg.bind_host, cfg.bind_port, self.dscp)
            elif cfg.bind_port:
                sock = open_media_socket(cfg.bind_host, cfg.bind_port, self.dscp)
                try:
                    rtcp_sock = open_media_socket(cfg.bind_host, cfg.bind_port + 1, self.dscp)
                except OSError:
                    sock.close()
                    raise
            else:
                sock, rtcp_sock = open_media_pair(cfg.bind_host, *self.port_range, self.dscp)
            transport, _ = await loop.create_datagram_endpoint(
                functools.partial(_LegProtocol, self, i), sock=sock
            )
            leg.transport = transport
            leg.sock = sock
            if rtcp_sock is not None:
                rtcp_transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(_LegProtocol, self, i, True), sock=rtcp_sock
                )
                leg.rtcp_transport = rtcp_transport
        now = loop.time()
        for c in self.counters:
            c.last_rx = now
        self._watchdog = asyncio.create_task(self._watch())

    def local_address(self, leg: str) -> Address:
        transport = self.legs[self._index(leg)].transport
        if transport is None:
            raise MediaError("relay session not started")
        host, port = transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def local_rtcp_address(self, leg: str) -> Address:
        """Where the leg receives RTCP: the RTP address with rtcp-mux, else the + 1 socket."""
        target = self.legs[self._index(leg)]
        transport = target.transport if target.config.rtcp_mux else target.rtcp_transport
        if transport is None:
            raise MediaError("relay session not started")
        host, port = transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def socket(self, leg: str) -> socket.socket:
        """The leg's media socket (e.g. to read its DSCP back)."""
        sock = self.legs[self._index(leg)].sock
        if sock is None:
            raise MediaError("relay session not started")
        return sock

    def add_tap(self, tap: MediaTap) -> None:
        self.taps.append(tap)

    def rekey(self, leg: str, *, rx: SrtpKeying, tx: SrtpKeying) -> None:
        """New SDES keys for one leg (re-INVITE, RFC 4568 §7.1.4); the other leg is untouched."""
        self._key(self.legs[self._index(leg)], rx, tx)

    def set_hold(self, on_hold: bool) -> None:
        """Signalling put the call on hold (a=sendonly/inactive, RFC 3264 §8.4): silence is
        then expected, so the RTP timeout becomes ``hold_timeout_s`` until resumed."""
        self.on_hold = on_hold
        now = self._loop_time()
        for c in self.counters:  # the silence clock restarts at each change
            c.last_rx = max(c.last_rx, now)

    def _send_plain(self, j: int, plain: bytes) -> None:
        """Protect for leg ``j`` and send to its peer (RTP only)."""
        target = self.legs[j]
        dest, transport = target.destination, target.transport
        oc = self.counters[j]
        if dest is None or transport is None:
            self.counters[1 - j].no_destination += 1
            return
        out = plain
        if target.tx is not None:
            try:
                out = target.tx.protect(plain)
            except MediaError:
                self.counters[1 - j].malformed += 1
                return
        transport.sendto(out, dest)
        self._sent_at[j] = self._loop_time()
        oc.packets_out += 1
        oc.bytes_out += len(out)

    def update_remote(self, leg: str, remote: Address) -> None:
        """A re-INVITE moved the peer (handover): forget the latch, use the new SDP address."""
        target = self.legs[self._index(leg)]
        target.latched = None
        target.latched_ssrc = None
        target.config = dataclasses.replace(target.config, remote=remote)

    # -- data path --------------------------------------------------------------------------
    def _on_datagram(
        self, i: int, data: bytes, addr: Address, *, via_rtcp_port: bool = False
    ) -> None:
        leg, other = self.legs[i], self.legs[1 - i]
        counters = self.counters[i]
        rtcp = via_rtcp_port or is_rtcp(data)
        if len(data) < (8 if rtcp else 12) or data[0] >> 6 != 2:
            counters.malformed += 1  # STUN keep-alives and junk land here
            return
        plain = data
        if leg.rx is not None:
            try:
                plain = leg.rx.unprotect_rtcp(data) if rtcp else leg.rx.unprotect(data)
            except SrtpError as exc:
                if exc.reason == "auth":
                    counters.auth_failures += 1
                elif exc.reason == "replay":
                    counters.replays += 1
                else:
                    counters.malformed += 1
                return
            except MediaError:
                counters.malformed += 1
                return
        ssrc = int.from_bytes(plain[4:8] if rtcp else plain[8:12], "big")
        if via_rtcp_port:
            if leg.rtcp_latched != addr:
                if not self._may_latch_rtcp(leg, addr, ssrc, verified=leg.rx is not None):
                    counters.foreign += 1
                    return
                leg.rtcp_latched = addr
                leg.rtcp_latched_ssrc = ssrc
        elif leg.latched != addr:
            if not self._may_latch(leg, addr, ssrc, verified=leg.rx is not None):
                counters.foreign += 1
                return
            leg.latched = addr
            leg.latched_ssrc = ssrc
        loop_now = self._loop_time()
        counters.last_rx = loop_now
        counters.packets_in += 1
        counters.bytes_in += len(data)
        if rtcp:
            counters.rtcp_in += 1
            self._note_rtcp(i, plain, loop_now)
        else:
            counters.note_rtp(plain, loop_now, leg.config.clock_rate)
        if self.taps:
            now = self.clock()
            for tap in self.taps:
                try:
                    tap.on_packet(self.call_id, leg.config.name, plain, rtcp=rtcp, now=now)
                except Exception:  # a tap must never break media
                    self.tap_errors += 1
        conv = None if rtcp else self._dtmf[i]
        if conv is not None:
            try:
                outs = conv.process(parse_rtp(plain))
            except MediaError:
                counters.malformed += 1
                return
            for pkt in outs:
                self._send_plain(1 - i, bytes(pkt))
            return
        if rtcp and not other.config.rtcp_mux:
            dest, out_transport = other.rtcp_destination, other.rtcp_transport
        else:
            dest, out_transport = other.destination, other.transport
        if dest is None or out_transport is None:
            counters.no_destination += 1
            return
        out = plain
        if other.tx is not None:
            try:
                out = other.tx.protect_rtcp(plain) if rtcp else other.tx.protect(plain)
            except MediaError:
                counters.malformed += 1
                return
        out_transport.sendto(out, dest)
        if not rtcp:
            self._sent_at[1 - i] = loop_now
            self._last_rtp[1 - i] = plain[2:12]
        oc = self.counters[1 - i]
        oc.packets_out += 1
        oc.bytes_out += len(out)

    def _note_rtcp(self, i: int, plain: bytes, now: float) -> None:
        """Per-leg RTT without clock sync (RFC 3550 §6.4.1 applied at the relay): remember
        when each SR passed through; when the far peer's report block echoes that SR's LSR,
        RTT(relay <-> that peer) = (now - time the SR passed) - DLSR."""
        try:
            packets = parse_rtcp(plain)
        except MediaError:
            return
        mine, other = self.counters[i], self.counters[1 - i]
        for pkt in packets:
            if isinstance(pkt, SenderReport):
                if len(mine.sr_seen) >= 64:  # bounded
                    mine.sr_seen.pop(next(iter(mine.sr_seen)))
                mine.sr_seen[(pkt.ssrc, ntp_middle32(pkt.ntp_timestamp))] = now
            if isinstance(pkt, SenderReport | ReceiverReport):
                for block in pkt.reports:
                    passed = other.sr_seen.get((block.ssrc, block.lsr))
                    if block.lsr and passed is not None:
                        rtt = (now - passed) - block.dlsr / 65536.0
                        if rtt >= 0:
                            mine.rtt_ms = rtt * 1000.0
                if pkt.reports and self.rate[i] is not None:
                    # the peer of leg i reports what it loses of the stream we send it
                    self._adapt(i, pkt.reports[0].fraction_lost)

    @staticmethod
    def _may_latch_rtcp(leg: _Leg, addr: Address, ssrc: int, *, verified: bool) -> bool:
        # RTCP sockets follow the same rule as RTP: first packet, then only verified packets
        # or the SSRC already followed may move the latch
        if not leg.config.latch:
            return addr == leg.config.rtcp_destination
        return leg.rtcp_latched is None or verified or ssrc == leg.rtcp_latched_ssrc

    @staticmethod
    def _may_latch(leg: _Leg, addr: Address, ssrc: int, *, verified: bool) -> bool:
        if not leg.config.latch:  # fixed SDP address only
            return leg.config.remote is not None and addr == leg.config.remote
        if leg.latched is None:
            return True
        # moving an existing latch: only for authenticated packets, or on a trusted plain
        # leg for the SSRC we already follow (NAT rebinding keeps the SSRC)
        return verified or ssrc == leg.latched_ssrc

    # -- watchdog, events ---------------------------------------------------------------------
    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        next_stats = loop.time() + self.stats_interval_s
        tick = min(0.25, self.rtp_timeout_s / 4, self.stats_interval_s / 2)
        try:
            while not self.ended.is_set():
                await asyncio.sleep(tick)
                now = loop.time()
                if now >= next_stats:
                    next_stats = now + self.stats_interval_s
                    await self.publish_stats()
                idle = now - max(c.last_rx for c in self.counters)
                limit = self.hold_timeout_s if self.on_hold else self.rtp_timeout_s
                if idle >= limit:
                    await self._end("rtp-timeout")
        except asyncio.CancelledError:
            pass

    def stats_events(self) -> list[MediaStats]:
        events = []
        for leg, c in zip(self.legs, self.counters, strict=True):
            st = c.main_stats()
            snap = None if st is None else st.snapshot()
            events.append(
                MediaStats(
                    ts=self.clock(),
                    node=self.node,
                    seq=self._seq(),
                    tenant=self.tenant,
                    call_id=self.call_id,
                    leg=leg.config.name,
                    ssrc=0 if snap is None else snap.ssrc,
                    codec="" if c.payload_type is None else f"PT{c.payload_type}",
                    packets=c.packets_in - c.rtcp_in,
                    lost=0 if snap is None else snap.cumulative_lost,
                    jitter_ms=0.0 if snap is None else round(snap.jitter_ms, 3),
                    rtt_ms=None if c.rtt_ms is None else round(c.rtt_ms, 3),
                    bytes_sent=c.bytes_out,
                    bytes_received=c.bytes_in,
                )
            )
        return events

    async def publish_stats(self) -> None:
        if self.bus is None:
            return
        for ev in self.stats_events():
            await self.bus.publish(ev)

    async def _end(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        if self.bus is not None:
            await self.publish_stats()
            await self.bus.publish(
                CallEnded(
                    ts=self.clock(),
                    node=self.node,
                    seq=self._seq(),
                    tenant=self.tenant,
                    call_id=self.call_id,
                    leg="a",
                    status=200,
                    reason=reason,
                )
            )
        self._close_transports()

    def _close_transports(self) -> None:
        for leg in self.legs:
            if leg.transport is not None:
                leg.transport.close()
            if leg.rtcp_transport is not None:
                leg.rtcp_transport.close()
        for tap in self.taps:
            try:
                tap.on_close(self.call_id)
            except Exception:
                self.tap_errors += 1

    async def close(self, reason: str = "bye") -> None:
        """End the call from signalling (BYE/CANCEL): final stats + CallEnded, free ports."""
        await self._end(reason)
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog


class MediaRelay:
    """Owns the sessions of one relay node."""

    def __init__(
        self,
        *,
        bus: EventBus | None = None,
        node: str = "relay-1",
        rtp_timeout_s: float = 30.0,
        stats_interval_s: float = 5.0,
        dscp: int = DSCP_EF,
        port_range: tuple[int, int] = (20000, 29999),
    ) -> None:
        self.bus = bus
        self.port_range = port_range
        self.node = node
        self.rtp_timeout_s = rtp_timeout_s
        self.stats_interval_s = stats_interval_s
        self.dscp = dscp
        self.sessions: dict[str, RelaySession] = {}
        self._reapers: set[asyncio.Task[None]] = set()
        self._seq = itertools.count(1).__next__

    async def create_session(
        self, call_id: str, a: LegConfig, b: LegConfig, *, tenant: str = "default"
    ) -> RelaySession:
        if call_id in self.sessions:
            raise MediaError(f"relay session for call {call_id!r} already exists")
        session = RelaySession(
            call_id,
            a,
            b,
            bus=self.bus,
            node=self.node,
            tenant=tenant,
            rtp_timeout_s=self.rtp_timeout_s,
            stats_interval_s=self.stats_interval_s,
            dscp=self.dscp,
            seq=self._seq,
            port_range=self.port_range,
        )
        await session.start()
        self.sessions[call_id] = session
        # a session that ends on its own (RTP timeout) frees its slot
        task = asyncio.create_task(self._reap(call_id, session))
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)
        return session

    async def _reap(self, call_id: str, session: RelaySession) -> None:
        await session.ended.wait()
        if self.sessions.get(call_id) is session:
            del self.sessions[call_id]

    async def close(self, call_id: str, reason: str = "bye") -> None:
        session = self.sessions.pop(call_id, None)
        if session is not None:
            await session.close(reason)

    async def close_all(self) -> None:
        for call_id in list(self.sessions):
            await self.close(call_id, "shutdown")
        for task in list(self._reapers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
