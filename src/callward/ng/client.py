"""A sans-IO ng client: what Kamailio's ``rtpengine`` module does, as a protocol core.

One :class:`NgClient` talks to one media relay (callward's or rtpengine). It frames requests
with a fresh cookie, retransmits the *same* bytes (same cookie) every ``timeout_s`` until
``attempts`` are used up - the relay answers a retransmission from its reply cache, so a lost
reply never runs an offer twice - matches replies by cookie and source address, and reports
:class:`NgReply` or :class:`NgTimeout` events. No sockets, no clock: the adapter
(``callward.ng.transport``) feeds datagrams and time.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass

from callward.errors import LocalProtocolError, NgError
from callward.ng.bencode import BValue
from callward.ng.protocol import NgRequest, parse_message, request_body, serialize_message

__all__ = ["NgClient", "NgEvent", "NgReply", "NgTimeout"]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class NgReply:
    cookie: str
    request: NgRequest
    body: dict[str, BValue]
    rtt_s: float

    @property
    def ok(self) -> bool:
        return self.body.get("result") in ("ok", "pong")

    @property
    def error(self) -> str:
        reason = self.body.get("error-reason", "")
        return reason if isinstance(reason, str) else ""

    @property
    def sdp(self) -> str:
        sdp = self.body.get("sdp", "")
        return sdp if isinstance(sdp, str) else ""


@dataclass(frozen=True, slots=True)
class NgTimeout:
    cookie: str
    request: NgRequest


NgEvent = NgReply | NgTimeout


@dataclass(slots=True)
class _Pending:
    request: NgRequest
    wire: bytes
    first_sent: float
    deadline: float
    attempts_left: int


class NgClient:
    """Requests to one relay at ``server``. ``cookie_prefix`` should be random per process
    (two edges talking to one relay must never reuse each other's cookies)."""

    def __init__(
        self,
        server: Address,
        *,
        cookie_prefix: str,
        timeout_s: float = 1.0,
        attempts: int = 3,
        max_pending: int = 10000,
    ) -> None:
        if timeout_s <= 0 or not 1 <= attempts <= 10:
            raise LocalProtocolError("ng client: timeout must be > 0 and attempts 1-10")
        if not cookie_prefix or len(cookie_prefix) > 40 or " " in cookie_prefix:
            raise LocalProtocolError("ng client: cookie prefix must be 1-40 chars, no spaces")
        self.server = server
        self.prefix = cookie_prefix
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.max_pending = max_pending
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._timers: list[tuple[float, str]] = []
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[NgEvent] = deque()
        self.stray = 0  # replies we could not match (late, foreign, garbage)
        self.retransmissions = 0

    # -- requests --------------------------------------------------------------------------
    def send(self, request: NgRequest, now: float) -> str:
        if len(self._pending) >= self.max_pending:
            raise LocalProtocolError(f"ng client: {self.max_pending} requests already pending")
        cookie = f"{self.prefix}_{next(self._ids)}"
        wire = serialize_message(cookie, request_body(request))
        deadline = now + self.timeout_s
        self._pending[cookie] = _Pending(request, wire, now, deadline, self.attempts - 1)
        heapq.heappush(self._timers, (deadline, cookie))
        self._out.append((wire, self.server))
        return cookie

    def cancel(self, cookie: str) -> None:
        self._pending.pop(cookie, None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- the sans-IO vocabulary ----------------------------------------------------------------
    def receive_datagram(self, data: bytes, peer: Address, now: float) -> None:
        if peer != self.server:
            self.stray += 1
            return
        try:
            msg = parse_message(data)
        except NgError:
            self.stray += 1
            return
        pending = self._pending.pop(msg.cookie, None)
        if pending is None:  # late duplicate of a reply already delivered, or not ours
            self.stray += 1
            return
        self._events.append(
            NgReply(msg.cookie, pending.request, msg.body, now - pending.first_sent)
        )

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> NgEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        timers = self._timers
        while timers:
            deadline, cookie = timers[0]
            pending = self._pending.get(cookie)
            if pending is not None and pending.deadline == deadline:
                return deadline
            heapq.heappop(timers)  # answered or re-armed: a stale entry
        return None

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, cookie = heapq.heappop(timers)
            pending = self._pending.get(cookie)
            if pending is None or pending.deadline != deadline:
                continue
            if pending.attempts_left <= 0:
                del self._pending[cookie]
                self._events.append(NgTimeout(cookie, pending.request))
                continue
            pending.attempts_left -= 1
            pending.deadline = now + self.timeout_s
            heapq.heappush(timers, (pending.deadline, cookie))
            self._out.append((pending.wire, self.server))
            self.retransmissions += 1
