"""The relay's packet path for one call as an I/O-free core (no sockets, no clock).

Vocabulary (style.md §1): :meth:`MediaCore.receive_datagram` ``(leg, data, peer, now)``,
:meth:`~MediaCore.datagrams_to_send`, :meth:`~MediaCore.next_event`,
:meth:`~MediaCore.get_timer`, :meth:`~MediaCore.handle_timer`. The adapter
(``relay.ng_daemon``) owns the sockets: it hands every datagram read on a leg's socket to the
core and sends what the core queues, tagged with the leg and socket (RTP or the separate
RTCP port) it must leave from.

Per packet (RFC 3550, RFC 3711, RFC 4961, RFC 5761):

1. demultiplex RTP/RTCP (rtcp-mux, RFC 5761 §4) or trust the RTCP port it came in on;
2. on an SRTP leg, authenticate and decrypt with the leg's inbound context; failures are
   counted (auth / replay / other) and dropped before they can move the latch;
3. latch (symmetric RTP, RFC 4961): the first packet fixes where the peer really is; later a
   verified packet (SRTP), or on a plain leg a packet of the SSRC already followed (NAT
   rebinding keeps the SSRC), moves it;
4. receiver statistics (RFC 3550 A.1/A.3/A.8) per leg, bytes and packets both ways;
5. re-protect with the other leg's outbound context (SRTP<->RTP bridging, SRTP re-keying)
   and queue toward the other leg's latched (else SDP) address.

Timers: a :class:`~callward.events.MediaStats` per leg every ``stats_interval_s``, and the
call ends with ``CallEnded(reason="rtp-timeout")`` after ``rtp_timeout_s`` of silence on
both legs (``hold_timeout_s`` while the call is on hold, RFC 3264 §8.4).

MOS: :attr:`MediaCore.mos_estimator` (a :data:`MosEstimator`) rates each leg from its loss,
jitter and RTT; the default is the ITU-T G.107 E-model for a fixed playout buffer
(:func:`emodel_mos`). The quality package may plug a per-playout-model estimator in.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from callward.errors import CallwardError, MediaError
from callward.events import CallEnded, MediaStats
from callward.relay import fastpath
from callward.relay.leg import LegConfig, LegCounters
from callward.relay.taps import MediaTap
from callward.rtp.packet import is_rtcp
from callward.rtp.rtcp import ReceiverReport, SenderReport, ntp_middle32, parse_rtcp
from callward.rtp.srtp import SrtpContext, SrtpError, SrtpKeying

__all__ = ["LegStats", "MediaCore", "MosEstimator", "Output", "emodel_mos"]

Address = tuple[str, int]
#: (codec name, loss %, jitter ms, RTT ms or None) -> {playout model: MOS}
MosEstimator = Callable[[str, float, float, float | None], dict[str, float]]

#: SRTP replay window of relayed legs, in packets (RFC 3711 §3.3.2 asks for at least 64):
#: libsrtp's default, 2.56 s of 20 ms packets. A packet later than that is of no use to any
#: jitter buffer, and libsrtp shifts the whole window on every packet (1024 cost ~15 % of its
#: time per packet in benchmarks/relay_vs_rtpengine.py).
REPLAY_WINDOW = 128

#: RFC 3551 static payload types that the E-model knows.
STATIC_CODECS = {0: "PCMU", 8: "PCMA", 9: "G722", 18: "G729", 3: "GSM", 4: "G723"}


def emodel_mos(
    codec: str, loss_pct: float, jitter_ms: float, rtt_ms: float | None
) -> dict[str, float]:
    """G.107 MOS-CQE for a fixed playout buffer sized 2x the jitter (plus 20 ms packetisation
    and half the RTT as one-way delay); {} for codecs G.113 gives no Ie for."""
    from callward.quality.emodel import quick

    delay = 20.0 + 2.0 * jitter_ms + (rtt_ms / 2.0 if rtt_ms is not None else 20.0)
    try:
        return {"fixed": round(quick(codec, min(loss_pct, 100.0), min(delay, 10000.0)).mos, 2)}
    except CallwardError:
        return {}


@dataclass(frozen=True, slots=True)
class LegStats:
    """One leg's media statistics: received from its peer (``packets``, ``bytes_in``,
    ``lost``, ``jitter_ms``; RFC 3550 A.3/A.8) and sent to it (``packets_out``,
    ``bytes_out``); ``mos`` holds (playout model, MOS) pairs."""

    name: str
    ssrc: int
    codec: str
    packets: int
    rtcp_packets: int
    bytes_in: int
    packets_out: int  # RTP and RTCP
    rtcp_packets_out: int
    bytes_out: int
    lost: int
    jitter_ms: float
    rtt_ms: float | None
    mos: tuple[tuple[str, float], ...]
    errors: int

    @property
    def worst_mos(self) -> float | None:
        return min((m for _, m in self.mos), default=None)

    @property
    def headline_mos(self) -> float | None:
        """The MOS a MediaStats carries: the adaptive playout model when the estimator rates
        one (what a current receiver does), else the worst model given."""
        d = dict(self.mos)
        return d.get("adaptive", self.worst_mos)


class Output(NamedTuple):
    """A datagram to send from ``leg``'s RTP socket (``rtcp_socket`` False) or its RTCP one."""

    leg: int
    rtcp_socket: bool
    data: bytes
    dest: Address


@dataclass(slots=True)
class CoreLeg:
    config: LegConfig
    rx: SrtpContext | None = None
    tx: SrtpContext | None = None
    latched: Address | None = None
    latched_ssrc: int | None = None
    rtcp_latched: Address | None = None
    rtcp_latched_ssrc: int | None = None

    def key(self, rx: SrtpKeying | None, tx: SrtpKeying | None) -> None:
        w = REPLAY_WINDOW
        self.rx = None if rx is None else SrtpContext(rx, inbound=True, replay_window=w)
        self.tx = None if tx is None else SrtpContext(tx, inbound=False, replay_window=w)

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

    def may_latch(self, addr: Address, ssrc: int, *, rtcp: bool) -> bool:
        if not self.config.latch:  # fixed SDP address only
            fixed = self.config.rtcp_destination if rtcp else self.config.remote
            return fixed is not None and addr == fixed
        current, current_ssrc = (
            (self.rtcp_latched, self.rtcp_latched_ssrc)
            if rtcp
            else (self.latched, self.latched_ssrc)
        )
        # moving an existing latch: only for authenticated packets, or on a plain leg for
        # the SSRC already followed
        return current is None or self.rx is not None or ssrc == current_ssrc


class MediaCore:
    """One call's two legs. ``wall_offset`` turns the core's ``now`` into event time stamps
    (the adapter passes ``time.time() - loop.time()``)."""

    def __init__(
        self,
        call_id: str,
        a: LegConfig,
        b: LegConfig,
        now: float,
        *,
        node: str = "relay-1",
        tenant: str = "default",
        rtp_timeout_s: float = 30.0,
        hold_timeout_s: float = 3600.0,
        stats_interval_s: float = 5.0,
        wall_offset: float = 0.0,
        seq: Callable[[], int] | None = None,
        codecs: dict[int, str] | None = None,
        mos_estimator: MosEstimator | None = emodel_mos,
    ) -> None:
        if rtp_timeout_s <= 0 or stats_interval_s <= 0 or hold_timeout_s <= 0:
            raise MediaError("relay timeouts and the stats interval must be positive")
        self.call_id = call_id
        self.legs = (CoreLeg(a), CoreLeg(b))
        for leg in self.legs:
            leg.key(leg.config.srtp_rx, leg.config.srtp_tx)
        self.counters = (LegCounters(), LegCounters())
        self.node = node
        self.tenant = tenant
        self.rtp_timeout_s = rtp_timeout_s
        self.hold_timeout_s = hold_timeout_s
        self.stats_interval_s = stats_interval_s
        self.wall_offset = wall_offset
        self._seq = seq or itertools.count(1).__next__
        self.codecs = dict(codecs or {})
        self.mos_estimator = mos_estimator
        self.on_hold = False
        self.ended = False
        self.end_reason = ""
        self.created = now
        self._silence_from = now
        self._next_stats = now + stats_interval_s
        self._out: list[Output] = []
        self._events: deque[MediaStats | CallEnded] = deque()
        #: optional per-direction packet transform (DTMF interworking): plain RTP in from leg
        #: i -> the plain packets to send to the other leg (None = forward unchanged)
        self.transform: list[Callable[[bytes], list[bytes]] | None] = [None, None]
        #: recording / lawful-intercept taps (relay/taps.py, called with wall-clock ``now``),
        #: attached by the ng server only when the privacy layer's tap policy allows
        #: (consent, warrant); never decided here
        self.taps: list[MediaTap] = []
        self.tap_errors = 0
        #: ``overlay(j, plain, now) -> plain``: rewrites each RTP packet forwarded toward leg j
        #: (the privacy layer's recording announcement, attached with the taps)
        self.overlay: Callable[[int, bytes, float], bytes] | None = None
        #: ``on_report(leg, fraction_lost)``: a reception report from leg's peer about what
        #: we send it (Opus rate control listens here)
        self.on_report: Callable[[int, int], None] | None = None
        #: ``on_rtcp(leg, plain, peer, rtcp_socket, now)``: every RTCP packet received from a
        #: leg (after SRTCP), for HEP export to a Homer collector; must not raise
        self.on_rtcp: Callable[[int, bytes, Address, bool, float], None] | None = None
        self.sent_at: list[float | None] = [None, None]  # when RTP last went out to each leg
        self.last_rtp: list[bytes | None] = [None, None]  # its seq, timestamp, SSRC octets
        #: the C accelerator's per-leg state (relay/fastpath.py), when the adapter enables it
        self.fast: list[Any] | None = None

    def enable_fast(self) -> bool:
        """Let the adapter forward steady-state RTP with the C accelerator (if built)."""
        if self.fast is None and fastpath.ACCEL is not None:
            self.fast = [fastpath.ACCEL.FastLeg(), fastpath.ACCEL.FastLeg()]
        return self.fast is not None

    def fast_sync(self) -> None:
        """The accelerator's state back into this core, legs disarmed (before any read)."""
        if self.fast is not None:
            fastpath.sync(self)

    # -- control (from signalling) ---------------------------------------------------------
    def rekey(self, leg: int, rx: SrtpKeying | None, tx: SrtpKeying | None) -> None:
        """New SDES keys (re-INVITE, RFC 4568 §7.1.4), or SRTP switched on/off for a leg."""
        self.fast_sync()
        target = self.legs[leg]
        if (rx, tx) != (target.config.srtp_rx, target.config.srtp_tx):
            target.key(rx, tx)

    def update_leg(self, leg: int, config: LegConfig) -> None:
        """The leg's SDP changed (re-INVITE/UPDATE): new peer address forgets the latch."""
        self.fast_sync()
        target = self.legs[leg]
        old = target.config
        if config.remote != old.remote:
            target.latched = target.latched_ssrc = None
            target.rtcp_latched = target.rtcp_latched_ssrc = None
        if (config.srtp_rx, config.srtp_tx) != (old.srtp_rx, old.srtp_tx):
            target.key(config.srtp_rx, config.srtp_tx)
        target.config = config

    def set_hold(self, on_hold: bool, now: float) -> None:
        self.fast_sync()
        self.on_hold = on_hold
        self._silence_from = max(self._silence_from, now)

    # -- packet path -----------------------------------------------------------------------
    def receive_datagram(
        self, leg: int, data: bytes, peer: Address, now: float, *, rtcp_socket: bool = False
    ) -> None:
        if self.ended:
            return
        if self.fast is not None:
            fastpath.sync(self)
        src = self.legs[leg]
        counters = self.counters[leg]
        rtcp = rtcp_socket or is_rtcp(data)
        if len(data) < (8 if rtcp else 12) or data[0] >> 6 != 2:
            counters.malformed += 1  # STUN, keep-alives, junk
            return
        plain = data
        if src.rx is not None:
            try:
                plain = src.rx.unprotect_rtcp(data) if rtcp else src.rx.unprotect(data)
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
        if rtcp_socket:
            if src.rtcp_latched != peer:
                if not src.may_latch(peer, ssrc, rtcp=True):
                    counters.foreign += 1
                    return
                src.rtcp_latched, src.rtcp_latched_ssrc = peer, ssrc
        elif src.latched != peer:
            if not src.may_latch(peer, ssrc, rtcp=False):
                counters.foreign += 1
                return
            src.latched, src.latched_ssrc = peer, ssrc
        counters.last_rx = now
        counters.packets_in += 1
        counters.bytes_in += len(data)
        if rtcp:
            counters.rtcp_in += 1
            self._note_rtcp(leg, plain, now)
            if self.on_rtcp is not None:
                try:
                    self.on_rtcp(leg, plain, peer, rtcp_socket, now)
                except Exception:  # an export must never break media
                    self.tap_errors += 1
        else:
            counters.note_rtp(plain, now, src.config.clock_rate)
        if self.taps:
            for tap in self.taps:
                try:
                    tap.on_packet(
                        self.call_id, "ab"[leg], plain, rtcp=rtcp, now=now + self.wall_offset
                    )
                except Exception:  # a tap must never break media
                    self.tap_errors += 1
        j = 1 - leg
        transform = None if rtcp else self.transform[leg]
        if transform is not None:
            try:
                outs = transform(plain)
            except MediaError:
                counters.malformed += 1
                return
            for pkt in outs:
                self._forward(j, pkt, now, rtcp=False)
            return
        self._forward(j, plain, now, rtcp=rtcp)

    def send_plain(self, j: int, plain: bytes, now: float) -> None:
        """Queue a plain RTP packet of our own (an injected DTMF event) toward leg ``j``."""
        self.fast_sync()
        self._forward(j, plain, now, rtcp=False)

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
                if pkt.reports and self.on_report is not None:
                    # the peer of leg i reports what it loses of the stream we send it
                    self.on_report(i, pkt.reports[0].fraction_lost)

    def _forward(self, j: int, plain: bytes, now: float, *, rtcp: bool) -> None:
        dst = self.legs[j]
        separate = rtcp and not dst.config.rtcp_mux
        dest = dst.rtcp_destination if separate else dst.destination
        if dest is None:
            self.counters[1 - j].no_destination += 1
            return
        if self.overlay is not None and not rtcp:
            plain = self.overlay(j, plain, now)
        out = plain
        if dst.tx is not None:
            try:
                out = dst.tx.protect_rtcp(plain) if rtcp else dst.tx.protect(plain)
            except MediaError:
                self.counters[1 - j].malformed += 1
                return
        self._out.append(Output(j, separate, out, dest))
        oc = self.counters[j]
        if rtcp:
            oc.rtcp_out += 1
        else:
            self.sent_at[j] = now
            self.last_rtp[j] = plain[2:12]
        oc.packets_out += 1
        oc.bytes_out += len(out)

    def datagrams_to_send(self) -> list[Output]:
        out, self._out = self._out, []
        return out

    # -- events and timers ----------------------------------------------------------------
    def next_event(self) -> MediaStats | CallEnded | None:
        return self._events.popleft() if self._events else None

    def _idle_deadline(self) -> float:
        last = max(self._silence_from, *(c.last_rx for c in self.counters))
        return last + (self.hold_timeout_s if self.on_hold else self.rtp_timeout_s)

    def get_timer(self) -> float | None:
        if self.ended:
            return None
        self.fast_sync()
        return min(self._next_stats, self._idle_deadline())

    def handle_timer(self, now: float) -> None:
        if self.ended:
            return
        self.fast_sync()
        if now >= self._idle_deadline():
            self.close("rtp-timeout", now)
            return
        if now >= self._next_stats:
            self._next_stats = now + self.stats_interval_s
            self._events.extend(self.stats_events(now))

    def close(self, reason: str, now: float) -> None:
        """End the call (signalling delete, or the RTP timeout): final stats, CallEnded."""
        if self.ended:
            return
        self.fast_sync()
        self.ended = True
        self.end_reason = reason
        for tap in self.taps:
            try:
                tap.on_close(self.call_id)
            except Exception:
                self.tap_errors += 1
        self._events.extend(self.stats_events(now))
        self._events.append(
            CallEnded(
                ts=now + self.wall_offset,
                node=self.node,
                seq=self._seq(),
                tenant=self.tenant,
                call_id=self.call_id,
                leg="a",
                status=200,
                reason=reason,
            )
        )

    # -- statistics -------------------------------------------------------------------------
    def leg_stats(self, leg: int) -> LegStats:
        """What leg ``leg``'s peer sent us (packets, loss, jitter, MOS) and what we sent it."""
        self.fast_sync()
        c = self.counters[leg]
        st = c.main_stats()
        snap = None if st is None else st.snapshot()
        lost = 0 if snap is None else max(0, snap.cumulative_lost)
        expected = 0 if snap is None else snap.expected
        jitter = 0.0 if snap is None else round(snap.jitter_ms, 3)
        codec = ""
        pt = c.main_payload_type()
        if pt is not None:
            codec = self.codecs.get(pt) or STATIC_CODECS.get(pt, "")
        mos: dict[str, float] = {}
        if self.mos_estimator is not None and codec and expected:
            mos = self.mos_estimator(codec, 100.0 * lost / expected, jitter, c.rtt_ms)
        return LegStats(
            name=self.legs[leg].config.name,
            ssrc=0 if snap is None else snap.ssrc,
            codec=codec or ("" if pt is None else f"PT{pt}"),
            packets=c.packets_in - c.rtcp_in,
            rtcp_packets=c.rtcp_in,
            bytes_in=c.bytes_in,
            packets_out=c.packets_out,
            rtcp_packets_out=c.rtcp_out,
            bytes_out=c.bytes_out,
            lost=lost,
            jitter_ms=jitter,
            rtt_ms=None if c.rtt_ms is None else round(c.rtt_ms, 3),
            mos=tuple(sorted(mos.items())),
            errors=c.malformed + c.auth_failures + c.replays + c.foreign,
        )

    def stats_events(self, now: float) -> list[MediaStats]:
        events = []
        for i in (0, 1):
            s = self.leg_stats(i)
            events.append(
                MediaStats(
                    ts=now + self.wall_offset,
                    node=self.node,
                    seq=self._seq(),
                    tenant=self.tenant,
                    call_id=self.call_id,
                    leg=s.name,
                    ssrc=s.ssrc,
                    codec=s.codec,
                    packets=s.packets,
                    lost=s.lost,
                    jitter_ms=s.jitter_ms,
                    rtt_ms=s.rtt_ms,
                    mos=s.headline_mos,
                    bytes_sent=s.bytes_out,
                    bytes_received=s.bytes_in,
                )
            )
        return events
