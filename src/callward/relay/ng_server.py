"""The relay's ng control plane as an I/O-free core: commands in, replies, media routes,
events and timers out.

* :meth:`NgServer.receive_datagram` takes one control datagram; the reply (same cookie) is
  queued for :meth:`~NgServer.datagrams_to_send`. A retransmitted request (same peer and
  cookie, within ``reply_cache_s``) gets the cached reply: an offer never runs twice.
* Ports come from an injected :class:`PortPool` (the adapter binds the sockets); the
  :attr:`~NgServer.routes` table maps each bound port to ``(call, leg, is_rtcp_port)`` for
  the packet path, and each call's :class:`~callward.relay.media_core.MediaCore` relays.
* :meth:`~NgServer.get_timer` / :meth:`~NgServer.handle_timer` drive every call's stats and
  RTP timeout with one deadline heap (no per-call task, no polling).
* :meth:`~NgServer.next_event` yields the events to publish: MediaStats per leg, and with
  ``call_events`` (a relay driven by a proxy that publishes nothing itself, e.g. Kamailio)
  CallStarted/CallAnswered/CallEnded from the ng commands.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from callward.errors import CallwardError, MediaError, NgError
from callward.events import CallAnswered, CallEnded, CallStarted, Event
from callward.ng.bencode import BValue
from callward.ng.protocol import (
    NgCommand,
    NgRequest,
    error_reply,
    parse_message,
    parse_request,
    serialize_message,
)
from callward.relay.media_core import LegStats, MediaCore, MosEstimator, emodel_mos
from callward.relay.ng_calls import LegState, NgCall
from callward.relay.taps import MediaTap

__all__ = ["NgServer", "NgSettings", "PortPool"]

Address = tuple[str, int]


class PortPool(Protocol):
    """Binds an even RTP port and the RTCP port above it (RFC 3550 §11)."""

    def allocate(self) -> int: ...

    def release(self, port: int) -> None: ...


@dataclass(frozen=True, slots=True)
class NgSettings:
    address: str = "127.0.0.1"  # media address written into SDP
    node: str = "relay-1"
    tenant: str = "default"
    rtp_timeout_s: float = 30.0
    hold_timeout_s: float = 3600.0
    stats_interval_s: float = 5.0
    signal_timeout_s: float = 120.0  # offer never answered: free the ports
    max_calls: int = 10000
    reply_cache_s: float = 30.0
    call_events: bool = True


class NgServer:
    def __init__(
        self,
        settings: NgSettings,
        ports: PortPool,
        *,
        wall_offset: float = 0.0,
        mos_estimator: MosEstimator | None = emodel_mos,
    ) -> None:
        self.settings = settings
        self.ports = ports
        self.wall_offset = wall_offset
        self.mos_estimator = mos_estimator
        self.calls: dict[str, NgCall] = {}
        self.cores: dict[str, MediaCore] = {}
        #: ``tap_policy(call_id, epoch_now) -> taps``: the privacy layer decides whether a
        #: call is recorded or intercepted (consent, warrant) when its media starts
        self.tap_policy: Callable[[str, float], list[MediaTap]] | None = None
        #: ``rtcp_hook(call_id, leg, plain, peer, local, epoch_now)``: each RTCP packet a leg
        #: sends, with the relay address it arrived on (HEP export, quality.hep_collector)
        self.rtcp_hook: Callable[[str, int, bytes, Address, Address, float], None] | None = None
        #: bound port -> (call id, leg index, is the leg's separate RTCP port)
        self.routes: dict[int, tuple[str, int, bool]] = {}
        self._seq: Callable[[], int] = itertools.count(1).__next__
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[Event] = deque()
        self._timers: list[tuple[float, str]] = []
        self._cache: OrderedDict[tuple[Address, str], tuple[float, bytes]] = OrderedDict()
        self.errors = 0
        self.retransmissions = 0

    def _rtcp_tap(
        self, call: NgCall, hook: Callable[[str, int, bytes, Address, Address, float], None]
    ) -> Callable[[int, bytes, Address, bool, float], None]:
        def on_rtcp(leg: int, plain: bytes, peer: Address, rtcp_socket: bool, now: float) -> None:
            local = (self.settings.address, call.legs[leg].port + rtcp_socket)
            hook(call.call_id, leg, plain, peer, local, now + self.wall_offset)

        return on_rtcp

    # -- control datagrams ----------------------------------------------------------------
    def receive_datagram(self, data: bytes, peer: Address, now: float) -> None:
        try:
            msg = parse_message(data)
        except NgError as exc:
            self.errors += 1
            cookie = data.split(b" ", 1)[0][:64]
            if cookie and cookie.isascii() and b" " in data and cookie.decode().isprintable():
                self._out.append((serialize_message(cookie.decode(), error_reply(str(exc))), peer))
            return
        key = (peer, msg.cookie)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self.retransmissions += 1
            self._out.append((cached[1], peer))
            return
        try:
            reply = self.handle(parse_request(msg.body), now)
        except NgError as exc:
            self.errors += 1
            reply = error_reply(str(exc))
        wire = serialize_message(msg.cookie, reply)
        self._cache[key] = (now + self.settings.reply_cache_s, wire)
        while len(self._cache) > 50000 or (
            self._cache and next(iter(self._cache.values()))[0] <= now
        ):
            self._cache.popitem(last=False)
        self._out.append((wire, peer))

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- commands ---------------------------------------------------------------------------
    def handle(self, req: NgRequest, now: float) -> dict[str, BValue]:
        match req.command:
            case NgCommand.PING:
                return {"result": "pong"}
            case NgCommand.OFFER:
                return self._offer(req, now)
            case NgCommand.ANSWER:
                return self._answer(req, now)
            case NgCommand.DELETE:
                return self._delete(req, now)
            case NgCommand.QUERY:
                call = self.calls.get(req.call_id)
                if call is None:
                    raise NgError("Unknown call-id")
                return self._report(call, now)
            case NgCommand.LIST:
                return {
                    "result": "ok",
                    "calls": list[BValue](itertools.islice(self.calls, req.limit)),
                }
        raise NgError(f"unsupported command {req.command}")  # pragma: no cover

    def _offer(self, req: NgRequest, now: float) -> dict[str, BValue]:
        call = self.calls.get(req.call_id)
        fresh = call is None
        if call is None:
            if len(self.calls) >= self.settings.max_calls:
                raise NgError(f"relay is at its limit of {self.settings.max_calls} calls")
            call = self._new_call(req, now)
        call.last_signal = now
        try:
            sdp = call.offer(req.sdp, req.from_tag, req.to_tag, req.flags, req.label)
        except CallwardError as exc:
            if fresh:
                self._drop(call.call_id)
            raise NgError(str(exc)) from None
        if req.via_branch:
            call.via_branch = req.via_branch
        if fresh:
            self._arm(call.call_id, now + self.settings.signal_timeout_s)
            if self.settings.call_events:
                self._events.append(
                    CallStarted(
                        ts=now + self.wall_offset, node=self.settings.node, seq=self._seq(),
                        tenant=self.settings.tenant, call_id=call.call_id, leg="a",
                    )
                )  # fmt: skip
        return {"result": "ok", "sdp": sdp}

    def _new_call(self, req: NgRequest, now: float) -> NgCall:
        ports: list[int] = []
        try:
            for _ in range(2):
                ports.append(self.ports.allocate())
        except (OSError, CallwardError):
            for p in ports:
                self.ports.release(p)
            raise NgError("Ran out of ports") from None
        call = NgCall(
            req.call_id,
            self.settings.address,
            (LegState(ports[0], tag=req.from_tag), LegState(ports[1])),
            created=now,
            last_signal=now,
        )
        self.calls[req.call_id] = call
        return call

    def _answer(self, req: NgRequest, now: float) -> dict[str, BValue]:
        call = self.calls.get(req.call_id)
        if call is None:
            raise NgError("Unknown call-id")
        call.last_signal = now
        first = not call.answered
        try:
            sdp = call.answer(req.sdp, req.from_tag, req.to_tag, req.flags)
            a, b = call.leg_configs()
        except CallwardError as exc:
            raise NgError(str(exc)) from None
        core = self.cores.get(call.call_id)
        if core is None:
            core = MediaCore(
                call.call_id, a, b, now,
                node=self.settings.node, tenant=self.settings.tenant,
                rtp_timeout_s=self.settings.rtp_timeout_s,
                hold_timeout_s=self.settings.hold_timeout_s,
                stats_interval_s=self.settings.stats_interval_s,
                wall_offset=self.wall_offset, seq=self._seq,
                codecs=call.legs[0].codecs, mos_estimator=self.mos_estimator,
            )  # fmt: skip
            self.cores[call.call_id] = core
            if self.rtcp_hook is not None:
                core.on_rtcp = self._rtcp_tap(call, self.rtcp_hook)
            if self.tap_policy is not None:
                core.taps = list(self.tap_policy(call.call_id, now + self.wall_offset))
                for tap in core.taps:  # a tap that plays into the media (announcement)
                    overlay = getattr(tap, "overlay", None)
                    if callable(overlay):
                        core.overlay = overlay
            for leg, state in enumerate(call.legs):
                self.routes[state.port] = (call.call_id, leg, False)
                self.routes[state.port + 1] = (call.call_id, leg, True)
        else:
            core.update_leg(0, a)
            core.update_leg(1, b)
            core.codecs = dict(call.legs[0].codecs)
        core.set_hold(call.on_hold, now)
        self._arm(call.call_id, core.get_timer())
        if first and self.settings.call_events:
            self._events.append(
                CallAnswered(
                    ts=now + self.wall_offset, node=self.settings.node, seq=self._seq(),
                    tenant=self.settings.tenant, call_id=call.call_id, leg="a",
                )
            )  # fmt: skip
        return {"result": "ok", "sdp": sdp}

    def _delete(self, req: NgRequest, now: float) -> dict[str, BValue]:
        call = self.calls.get(req.call_id)
        if call is None:
            raise NgError("Unknown call-id")
        reply = self._report(call, now)
        self._end(call.call_id, "bye" if call.answered else "cancel", now)
        return reply

    # -- life cycle -------------------------------------------------------------------------
    def end_all(self, reason: str, now: float) -> None:
        """Shutdown: every call ends with its final stats."""
        for call_id in list(self.calls):
            self._end(call_id, reason, now)

    def _arm(self, call_id: str, when: float | None) -> None:
        if when is not None:
            heapq.heappush(self._timers, (when, call_id))

    def _end(self, call_id: str, reason: str, now: float) -> None:
        call = self.calls.get(call_id)
        core = self.cores.get(call_id)
        if core is not None:
            core.close(reason, now)
            self._collect(core, keep_end=self.settings.call_events)
        elif call is not None and self.settings.call_events:
            self._events.append(
                CallEnded(
                    ts=now + self.wall_offset, node=self.settings.node, seq=self._seq(),
                    tenant=self.settings.tenant, call_id=call_id, leg="a",
                    status=487 if reason == "cancel" else 408, reason=reason,
                )
            )  # fmt: skip
        self._drop(call_id)

    def _drop(self, call_id: str) -> None:
        call = self.calls.pop(call_id, None)
        self.cores.pop(call_id, None)
        if call is None:
            return
        for state in call.legs:
            self.routes.pop(state.port, None)
            self.routes.pop(state.port + 1, None)
            self.ports.release(state.port)

    def _collect(self, core: MediaCore, *, keep_end: bool = True) -> None:
        while (ev := core.next_event()) is not None:
            if isinstance(ev, CallEnded) and not keep_end and ev.reason != "rtp-timeout":
                continue
            self._events.append(ev)

    def get_timer(self) -> float | None:
        timers = self._timers
        while timers and timers[0][1] not in self.calls:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        due: set[str] = set()
        while timers and timers[0][0] <= now:
            due.add(heapq.heappop(timers)[1])
        for call_id in due:
            call = self.calls.get(call_id)
            if call is None:
                continue
            core = self.cores.get(call_id)
            if core is None:  # offered, never answered
                if now - call.last_signal >= self.settings.signal_timeout_s:
                    self._end(call_id, "signal-timeout", now)
                else:
                    self._arm(call_id, call.last_signal + self.settings.signal_timeout_s)
                continue
            core.handle_timer(now)
            self._collect(core)
            if core.ended:
                self._drop(call_id)
            else:
                self._arm(call_id, core.get_timer())

    # -- media (the adapter calls these for each packet) ---------------------------------------
    def core_for(self, port: int) -> tuple[MediaCore, int, bool] | None:
        route = self.routes.get(port)
        if route is None:
            return None
        core = self.cores.get(route[0])
        return None if core is None else (core, route[1], route[2])

    def port_of(self, call_id: str, leg: int) -> int:
        call = self.calls.get(call_id)
        if call is None:
            raise MediaError("no such call")
        return call.legs[leg].port

    # -- replies -----------------------------------------------------------------------------
    def _report(self, call: NgCall, now: float) -> dict[str, BValue]:
        core = self.cores.get(call.call_id)
        tags: dict[str, BValue] = {}
        totals = {"packets": 0, "bytes": 0, "errors": 0}
        for i, state in enumerate(call.legs):
            other = call.legs[1 - i]
            entry: dict[str, BValue] = {
                "tag": state.tag,
                "label": state.label,
                "in dialogue with": other.tag,
                "medias": [
                    {
                        "index": 1,
                        "type": "audio",
                        "protocol": state.proto,
                        "streams": [{"local port": state.port}, {"local port": state.port + 1}],
                    }
                ],
            }
            if core is not None:
                entry["stats"] = {**_bencodable(core.leg_stats(i)), "leg": "ab"[i]}
                c = core.counters[i]
                totals["packets"] += c.packets_in
                totals["bytes"] += c.bytes_in
                totals["errors"] += c.malformed + c.auth_failures + c.replays + c.foreign
            tags[state.tag or f"leg-{i}"] = entry
        return {
            "result": "ok",
            "node": self.settings.node,  # callward's own key: whose statistics these are
            "created": int(call.created + self.wall_offset),
            "last signal": int(call.last_signal + self.wall_offset),
            "recording": "yes" if call.record_call else "no",
            "tags": tags,
            "totals": {"RTP": dict[str, BValue](totals)},
        }


def _bencodable(s: LegStats) -> dict[str, BValue]:
    """ng has no floats: jitter/RTT in microseconds, MOS x 10 per playout model."""
    out: dict[str, BValue] = {
        "codec": s.codec,
        "ssrc": s.ssrc,
        "packets": s.packets,
        "bytes": s.bytes_in,
        "rtcp packets": s.rtcp_packets,
        "packets out": s.packets_out,
        "rtcp packets out": s.rtcp_packets_out,
        "bytes out": s.bytes_out,
        "lost": s.lost,
        "jitter_us": round(s.jitter_ms * 1000),
        "errors": s.errors,
        "MOS": {model: round(mos * 10) for model, mos in s.mos},
    }
    if s.rtt_ms is not None:
        out["rtt_us"] = round(s.rtt_ms * 1000)
    return out
