"""The asyncio media relay for one call whose legs are configured directly (``callward relay``
without ``--ng``, lab set-ups, the DTMF/rate-control features): sockets and a watchdog around
the same I/O-free packet path as the ng daemon, :class:`~callward.relay.media_core.MediaCore`.

Per packet (in the core):

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
    open_media_pair,
    open_media_socket,
)
from callward.relay.media_core import MediaCore
from callward.relay.session_features import DtmfAndRateMixin
from callward.relay.taps import MediaTap
from callward.rtp.packet import parse_rtp
from callward.rtp.srtp import SrtpKeying

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
class _Sockets:
    """A leg's asyncio transports (RTP, and RTCP on port + 1 without rtcp-mux)."""

    transport: asyncio.DatagramTransport | None = None
    sock: socket.socket | None = None
    rtcp_transport: asyncio.DatagramTransport | None = None


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
        self._seq = seq or itertools.count(1).__next__
        self.core = MediaCore(
            call_id, a, b, 0.0, node=node, tenant=tenant, seq=self._seq,
            rtp_timeout_s=rtp_timeout_s, hold_timeout_s=hold_timeout_s,
            stats_interval_s=stats_interval_s,
        )  # fmt: skip
        self.legs = self.core.legs
        self.counters = self.core.counters
        self.sockets = (_Sockets(), _Sockets())
        self.bus = bus
        self.node = node
        self.tenant = tenant
        self.rtp_timeout_s = rtp_timeout_s
        self.stats_interval_s = stats_interval_s
        self.dscp = dscp
        self.clock = clock
        self.taps: list[MediaTap] = self.core.taps
        self.ended = asyncio.Event()
        self.end_reason = ""
        self._watchdog: asyncio.Task[None] | None = None
        self._loop_time: Callable[[], float] = time.monotonic
        self.on_hold = False
        self.hold_timeout_s = hold_timeout_s
        #: called with (INFO leg name, digit, duration ms) when a digit must go out by SIP INFO
        self.on_dtmf: Callable[[str, str, float], None] | None = None
        self._dtmf: list[DtmfDirection | None] = [None, None]
        self._sent_at = self.core.sent_at  # loop time of the last RTP sent to each leg
        self._last_rtp = self.core.last_rtp  # its seq, timestamp, SSRC octets
        self._build_dtmf()
        self.core.transform = [
            functools.partial(self._convert, 0),
            functools.partial(self._convert, 1),
        ]
        self.core.on_report = self._on_report
        self.rate: list[OpusRateController | None] = [
            OpusRateController() if leg.config.rate_control else None for leg in self.legs
        ]
        self._pending: set[asyncio.Task[None]] = set()

    # -- set-up ---------------------------------------------------------------------------
    @property
    def tap_errors(self) -> int:
        return self.core.tap_errors

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop_time = loop.time
        self.core.wall_offset = self.clock() - loop.time()
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
            socks = self.sockets[i]
            socks.transport, socks.sock = transport, sock
            if rtcp_sock is not None:
                rtcp_transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(_LegProtocol, self, i, True), sock=rtcp_sock
                )
                socks.rtcp_transport = rtcp_transport
        now = loop.time()
        for c in self.counters:
            c.last_rx = now
        self._watchdog = asyncio.create_task(self._watch())

    def local_address(self, leg: str) -> Address:
        transport = self.sockets[self._index(leg)].transport
        if transport is None:
            raise MediaError("relay session not started")
        host, port = transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def local_rtcp_address(self, leg: str) -> Address:
        """Where the leg receives RTCP: the RTP address with rtcp-mux, else the + 1 socket."""
        i = self._index(leg)
        socks = self.sockets[i]
        transport = socks.transport if self.legs[i].config.rtcp_mux else socks.rtcp_transport
        if transport is None:
            raise MediaError("relay session not started")
        host, port = transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def socket(self, leg: str) -> socket.socket:
        """The leg's media socket (e.g. to read its DSCP back)."""
        sock = self.sockets[self._index(leg)].sock
        if sock is None:
            raise MediaError("relay session not started")
        return sock

    def add_tap(self, tap: MediaTap) -> None:
        self.taps.append(tap)

    def rekey(self, leg: str, *, rx: SrtpKeying, tx: SrtpKeying) -> None:
        """New SDES keys for one leg (re-INVITE, RFC 4568 §7.1.4); the other leg is untouched."""
        self.legs[self._index(leg)].key(rx, tx)

    def set_hold(self, on_hold: bool) -> None:
        """Signalling put the call on hold (a=sendonly/inactive, RFC 3264 §8.4): silence is
        then expected, so the RTP timeout becomes ``hold_timeout_s`` until resumed."""
        self.on_hold = on_hold
        now = self._loop_time()
        for c in self.counters:  # the silence clock restarts at each change
            c.last_rx = max(c.last_rx, now)

    def _send_plain(self, j: int, plain: bytes) -> None:
        """Protect for leg ``j`` and send to its peer (RTP only)."""
        self.core.send_plain(j, plain, self._loop_time())
        self._flush()

    def update_remote(self, leg: str, remote: Address) -> None:
        """A re-INVITE moved the peer (handover): forget the latch, use the new SDP address."""
        i = self._index(leg)
        self.core.update_leg(i, dataclasses.replace(self.legs[i].config, remote=remote))

    # -- data path --------------------------------------------------------------------------
    def _on_datagram(
        self, i: int, data: bytes, addr: Address, *, via_rtcp_port: bool = False
    ) -> None:
        self.core.receive_datagram(i, data, addr, self._loop_time(), rtcp_socket=via_rtcp_port)
        self._flush()

    def _flush(self) -> None:
        for out in self.core.datagrams_to_send():
            socks = self.sockets[out.leg]
            transport = socks.rtcp_transport if out.rtcp_socket else socks.transport
            if transport is None:
                self.counters[1 - out.leg].no_destination += 1
                continue
            transport.sendto(out.data, out.dest)

    def _convert(self, i: int, plain: bytes) -> list[bytes]:
        """DTMF interworking between the legs' negotiated methods (relay.dtmf_path)."""
        conv = self._dtmf[i]
        if conv is None:
            return [plain]
        return [bytes(p) for p in conv.process(parse_rtp(plain))]

    def _on_report(self, i: int, fraction_lost: int) -> None:
        if self.rate[i] is not None:
            self._adapt(i, fraction_lost)

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
        return self.core.stats_events(self._loop_time())

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
        for socks in self.sockets:
            if socks.transport is not None:
                socks.transport.close()
            if socks.rtcp_transport is not None:
                socks.rtcp_transport.close()
        for tap in self.taps:
            try:
                tap.on_close(self.call_id)
            except Exception:
                self.core.tap_errors += 1

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
