"""SIP transactions, sans-IO (RFC 3261 §17 with the RFC 6026 fixes).

Four table-driven machines: INVITE / non-INVITE × client / server. Each is fed messages and
timer fires with an explicit ``now`` and hands back wire bytes (:meth:`datagrams_to_send`) and
typed events (:meth:`next_event`), the h11 / aioquic way::

    tx = ClientTransaction.create(invite, reliable=False)
    tx.send_request(now)             # Calling, Timer A and B armed
    sock.send(*tx.datagrams_to_send())
    loop.call_at(tx.get_timer(), ...) -> tx.handle_timer(now)
    tx.receive(response, now)        # -> ResponseReceived, ACK for 3xx-6xx, ...

Transitions live in ``{State: {Input: State}}`` tables. Inputs coming from our own TU (send a
response, send the request) that the table does not allow raise :class:`LocalProtocolError`;
inputs from the network that it does not allow are absorbed, because a peer may send anything
(a late 1xx after the final response, a duplicate ACK) and that must not kill the transaction.

Retransmission timers (A, E, G) only run over unreliable transports (§17.1.1.2); the "linger"
timers D, I, J, K are zero over reliable ones, so those transactions end at once.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from typing import Any, ClassVar

from callward.errors import LocalProtocolError, RemoteProtocolError
from callward.sip.message import Headers, Request, Response, make_response
from callward.sip.timers import TIMER_PRIORITY, Timer, TimerConfig
from callward.sip.transaction_events import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionEvent,
    TransactionKey,
    TransactionTerminated,
    TransactionTimeout,
    TransportFailed,
)

__all__ = [
    "MAGIC_COOKIE",
    "AckReceived",
    "ClientTransaction",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "StrayResponse",
    "TransactionEvent",
    "TransactionKey",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransportFailed",
    "TxState",
    "make_ack",
    "make_cancel",
    "new_branch",
]

MAGIC_COOKIE = "z9hG4bK"  # §8.1.1.7: branches of RFC 3261 elements start with it


def new_branch(token: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A globally unique branch with the magic cookie (§8.1.1.7); ``token`` is injectable so
    tests can make branches deterministic."""
    return MAGIC_COOKIE + token(12).hex()


# ---------------------------------------------------------------- states and inputs


class TxState(enum.Enum):
    INIT = "init"
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # RFC 6026
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class TxInput(enum.Enum):
    SEND_REQUEST = "send request"
    RECV_1XX = "receive 1xx"
    RECV_2XX = "receive 2xx"
    RECV_FINAL = "receive 300-699"
    RECV_REQUEST = "receive request"
    RECV_ACK = "receive ACK"
    SEND_1XX = "send 1xx"
    SEND_2XX = "send 2xx"
    SEND_FINAL = "send 300-699"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"


_TIMER_INPUT = {t: TxInput["TIMER_" + t.value] for t in Timer}
# Inputs our own code issues; the others come from the network or the clock.
_LOCAL_INPUTS = frozenset(
    {TxInput.SEND_REQUEST, TxInput.SEND_1XX, TxInput.SEND_2XX, TxInput.SEND_FINAL}
)

S, I = TxState, TxInput  # noqa: E741 - short names keep the tables readable

# RFC 3261 Figure 5 + RFC 6026 Figure 3.
INVITE_CLIENT_TABLE: dict[TxState, dict[TxInput, TxState]] = {
    S.INIT: {I.SEND_REQUEST: S.CALLING},
    S.CALLING: {
        I.TIMER_A: S.CALLING, I.TIMER_B: S.TERMINATED, I.TRANSPORT_ERROR: S.TERMINATED,
        I.RECV_1XX: S.PROCEEDING, I.RECV_2XX: S.ACCEPTED, I.RECV_FINAL: S.COMPLETED,
    },
    S.PROCEEDING: {I.RECV_1XX: S.PROCEEDING, I.RECV_2XX: S.ACCEPTED, I.RECV_FINAL: S.COMPLETED},
    S.ACCEPTED: {I.RECV_2XX: S.ACCEPTED, I.TIMER_M: S.TERMINATED},
    S.COMPLETED: {
        I.RECV_FINAL: S.COMPLETED, I.TIMER_D: S.TERMINATED, I.TRANSPORT_ERROR: S.TERMINATED,
    },
    S.TERMINATED: {},
}  # fmt: skip

# RFC 3261 Figure 6.
NON_INVITE_CLIENT_TABLE: dict[TxState, dict[TxInput, TxState]] = {
    S.INIT: {I.SEND_REQUEST: S.TRYING},
    S.TRYING: {
        I.TIMER_E: S.TRYING, I.TIMER_F: S.TERMINATED, I.TRANSPORT_ERROR: S.TERMINATED,
        I.RECV_1XX: S.PROCEEDING, I.RECV_2XX: S.COMPLETED, I.RECV_FINAL: S.COMPLETED,
    },
    S.PROCEEDING: {
        I.TIMER_E: S.PROCEEDING, I.TIMER_F: S.TERMINATED, I.TRANSPORT_ERROR: S.TERMINATED,
        I.RECV_1XX: S.PROCEEDING, I.RECV_2XX: S.COMPLETED, I.RECV_FINAL: S.COMPLETED,
    },
    S.COMPLETED: {I.TIMER_K: S.TERMINATED},
    S.TERMINATED: {},
}  # fmt: skip

# RFC 3261 Figure 7 + RFC 6026 Figure 5.
INVITE_SERVER_TABLE: dict[TxState, dict[TxInput, TxState]] = {
    S.INIT: {I.RECV_REQUEST: S.PROCEEDING},
    S.PROCEEDING: {
        I.RECV_REQUEST: S.PROCEEDING, I.SEND_1XX: S.PROCEEDING, I.SEND_2XX: S.ACCEPTED,
        I.SEND_FINAL: S.COMPLETED, I.TRANSPORT_ERROR: S.TERMINATED,
    },
    S.ACCEPTED: {
        I.SEND_2XX: S.ACCEPTED, I.RECV_ACK: S.ACCEPTED, I.RECV_REQUEST: S.ACCEPTED,
        I.TIMER_L: S.TERMINATED,
    },
    S.COMPLETED: {
        I.RECV_REQUEST: S.COMPLETED, I.RECV_ACK: S.CONFIRMED, I.TIMER_G: S.COMPLETED,
        I.TIMER_H: S.TERMINATED, I.TRANSPORT_ERROR: S.TERMINATED,
    },
    S.CONFIRMED: {I.RECV_ACK: S.CONFIRMED, I.TIMER_I: S.TERMINATED},
    S.TERMINATED: {},
}  # fmt: skip

# RFC 3261 Figure 8.
NON_INVITE_SERVER_TABLE: dict[TxState, dict[TxInput, TxState]] = {
    S.INIT: {I.RECV_REQUEST: S.TRYING},
    S.TRYING: {
        I.RECV_REQUEST: S.TRYING, I.SEND_1XX: S.PROCEEDING, I.SEND_2XX: S.COMPLETED,
        I.SEND_FINAL: S.COMPLETED,
    },
    S.PROCEEDING: {
        I.RECV_REQUEST: S.PROCEEDING, I.SEND_1XX: S.PROCEEDING, I.SEND_2XX: S.COMPLETED,
        I.SEND_FINAL: S.COMPLETED, I.TRANSPORT_ERROR: S.TERMINATED,
    },
    S.COMPLETED: {
        I.RECV_REQUEST: S.COMPLETED, I.TIMER_J: S.TERMINATED, I.TRANSPORT_ERROR: S.TERMINATED,
    },
    S.TERMINATED: {},
}  # fmt: skip

del S, I


def _response_input(status: int, *, sending: bool) -> TxInput:
    if not 100 <= status <= 699:
        error = LocalProtocolError if sending else RemoteProtocolError
        raise error(f"status {status} outside 100-699 (RFC 3261 §21)")
    if status < 200:
        return TxInput.SEND_1XX if sending else TxInput.RECV_1XX
    if status < 300:
        return TxInput.SEND_2XX if sending else TxInput.RECV_2XX
    return TxInput.SEND_FINAL if sending else TxInput.RECV_FINAL


# ---------------------------------------------------------------- common machinery


class _Transaction:
    """State, timers, outgoing bytes and events shared by the four machines."""

    TABLE: ClassVar[dict[TxState, dict[TxInput, TxState]]]

    def __init__(
        self,
        request: Request,
        key: TransactionKey,
        *,
        reliable: bool,
        timers: TimerConfig,
        peer: Any = None,
    ) -> None:
        self.request = request
        self.key = key
        self.reliable = reliable
        self.timers = timers
        self.peer = peer
        self.state = TxState.INIT
        self._deadlines: dict[Timer, float] = {}
        self._intervals: dict[Timer, float] = {}
        self._out: list[tuple[bytes, Request | Response]] = []
        # a list, not a deque: at most two events wait, and an edge keeps ~10^5 transactions
        # alive (a deque costs ~600 bytes empty, a list ~56)
        self._events: list[TransactionEvent] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key.method} {self.state.name}>"

    # -- outputs
    def datagrams_to_send(self) -> list[bytes]:
        """Wire bytes to send now, oldest first (request, retransmissions, ACK, responses)."""
        out = [data for data, _ in self._out]
        self._out.clear()
        return out

    def messages_to_send(self) -> list[tuple[bytes, Request | Response]]:
        """Like :meth:`datagrams_to_send` but with the message each datagram encodes."""
        out = list(self._out)
        self._out.clear()
        return out

    def next_event(self) -> TransactionEvent | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        """Earliest deadline, or None when nothing is armed."""
        return min(self._deadlines.values()) if self._deadlines else None

    @property
    def terminated(self) -> bool:
        return self.state is TxState.TERMINATED

    # -- inputs
    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now`` (timeouts before retransmissions at a tie)."""
        while self._deadlines:
            due = sorted(
                (d, TIMER_PRIORITY[t], t.value, t) for t, d in self._deadlines.items() if d <= now
            )
            if not due:
                return
            timer = due[0][3]
            del self._deadlines[timer]
            self._fire(timer, now)

    def transport_error(self, now: float) -> None:
        """The transport could not deliver our last message (§17.1.4, §17.2.4)."""
        if self._step(TxInput.TRANSPORT_ERROR) is not None:
            self._events.append(TransportFailed(self.key))
            self._terminate()

    # -- helpers for subclasses
    def _step(self, inp: TxInput) -> TxState | None:
        """Apply the table; returns the new state, or None if a network input is absorbed."""
        new = self.TABLE[self.state].get(inp)
        if new is None:
            if inp in _LOCAL_INPUTS:
                raise LocalProtocolError(
                    f"{type(self).__name__}: cannot {inp.value} in state {self.state.name}"
                    " (RFC 3261 §17)"
                )
            return None
        self.state = new
        return new

    def _queue(self, msg: Request | Response, data: bytes | None = None) -> bytes:
        data = bytes(msg) if data is None else data
        self._out.append((data, msg))
        return data

    def _arm(self, timer: Timer, now: float, duration: float | None = None) -> None:
        if duration is None:
            duration = self.timers.initial(timer, self.reliable)
        self._intervals[timer] = duration
        self._deadlines[timer] = now + duration

    def _disarm(self, *timers: Timer) -> None:
        for t in timers:
            self._deadlines.pop(t, None)

    def _linger(self, timer: Timer, now: float) -> None:
        """Arm a wait timer (D, I, J, K); zero on reliable transports ends the transaction now."""
        duration = self.timers.initial(timer, self.reliable)
        if duration <= 0:
            self._fire(timer, now)
        else:
            self._arm(timer, now, duration)

    def _terminate(self) -> None:
        self.state = TxState.TERMINATED
        self._deadlines.clear()
        self._events.append(TransactionTerminated(self.key))

    def _fire(self, timer: Timer, now: float) -> None:
        new = self._step(_TIMER_INPUT[timer])
        if new is None:
            return
        if timer in (Timer.B, Timer.F, Timer.H):
            self._events.append(TransactionTimeout(self.key, timer))
        if new is TxState.TERMINATED:
            self._terminate()
        else:
            self._retransmit(timer, now)

    def _retransmit(self, timer: Timer, now: float) -> None:
        raise NotImplementedError  # pragma: no cover


def client_key(request: Request) -> TransactionKey:
    """§17.1.3: a response matches a client transaction by top-Via branch and CSeq method."""
    return TransactionKey(request.top_via.branch or "", request.cseq.method)


# ---------------------------------------------------------------- client transactions


class ClientTransaction(_Transaction):
    """Base of the two client machines; :meth:`create` picks one by the request method."""

    _last_wire: bytes = b""

    @staticmethod
    def create(
        request: Request,
        *,
        reliable: bool = False,
        timers: TimerConfig | None = None,
        peer: Any = None,
    ) -> ClientTransaction:
        if request.method == "ACK":
            raise LocalProtocolError("ACK has no client transaction (RFC 3261 §17.1)")
        branch = request.top_via.branch
        if not branch or not branch.startswith(MAGIC_COOKIE):
            raise LocalProtocolError(
                "client transactions need a top Via branch with the magic cookie (§8.1.1.7)"
            )
        cls: type[ClientTransaction] = (
            InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        )
        return cls(
            request,
            client_key(request),
            reliable=reliable,
            timers=timers or TimerConfig(),
            peer=peer,
        )

    def send_request(self, now: float) -> None:
        """Hand the request to the transport and start the timers (§17.1.1.2, §17.1.2.2)."""
        self._step(TxInput.SEND_REQUEST)
        self._last_wire = self._queue(self.request)
        self._start(now)

    def receive(self, response: Response, now: float) -> None:
        if not isinstance(response, Response):
            raise LocalProtocolError("a client transaction only receives responses")
        inp = _response_input(response.status, sending=False)
        before = self.state
        new = self._step(inp)
        if new is None:
            return
        self._on_response(before, inp, response, now)

    def _start(self, now: float) -> None:
        raise NotImplementedError  # pragma: no cover

    def _on_response(self, before: TxState, inp: TxInput, resp: Response, now: float) -> None:
        raise NotImplementedError  # pragma: no cover


class InviteClientTransaction(ClientTransaction):
    """§17.1.1 + RFC 6026 §8.4: Calling → Proceeding → Accepted (2xx) / Completed (3xx-6xx)."""

    TABLE = INVITE_CLIENT_TABLE
    ack: Request | None = None

    def _start(self, now: float) -> None:
        if not self.reliable:
            self._arm(Timer.A, now)
        self._arm(Timer.B, now)

    def _on_response(self, before: TxState, inp: TxInput, resp: Response, now: float) -> None:
        if inp is TxInput.RECV_FINAL:
            if before is TxState.COMPLETED:
                # Retransmitted final response: resend the same ACK, not to the TU (§17.1.1.2).
                if self.ack is not None:
                    self._queue(self.ack, bytes(self.ack))
                return
            self._disarm(Timer.A, Timer.B)
            self.ack = make_ack(self.request, resp)
            self._queue(self.ack)
            self._events.append(ResponseReceived(resp, self.key))
            self._linger(Timer.D, now)
            return
        self._events.append(ResponseReceived(resp, self.key))
        if inp is TxInput.RECV_1XX:
            self._disarm(Timer.A, Timer.B)
        elif before is not TxState.ACCEPTED:  # first 2xx: RFC 6026 Accepted state, Timer M
            self._disarm(Timer.A, Timer.B)
            self._arm(Timer.M, now)

    def _retransmit(self, timer: Timer, now: float) -> None:
        if timer is Timer.A:
            self._queue(self.request, self._last_wire)
            self._arm(Timer.A, now, self.timers.next_interval(Timer.A, self._intervals[Timer.A]))


class NonInviteClientTransaction(ClientTransaction):
    """§17.1.2: Trying → Proceeding → Completed → Terminated, Timers E, F, K."""

    TABLE = NON_INVITE_CLIENT_TABLE

    def _start(self, now: float) -> None:
        if not self.reliable:
            self._arm(Timer.E, now)
        self._arm(Timer.F, now)

    def _on_response(self, before: TxState, inp: TxInput, resp: Response, now: float) -> None:
        self._events.append(ResponseReceived(resp, self.key))
        if inp is not TxInput.RECV_1XX:
            self._disarm(Timer.E, Timer.F)
            self._linger(Timer.K, now)

    def _retransmit(self, timer: Timer, now: float) -> None:
        if timer is Timer.E:
            self._queue(self.request, self._last_wire)
            interval = self.timers.next_interval(
                Timer.E, self._intervals[Timer.E], proceeding=self.state is TxState.PROCEEDING
            )
            self._arm(Timer.E, now, interval)


# ---------------------------------------------------------------- server transactions


class ServerTransaction(_Transaction):
    """Base of the two server machines. The first :meth:`receive` starts the machine and emits
    :class:`RequestReceived`; later ones are retransmissions (absorbed, or answered with the
    last response) or ACKs."""

    last_response: Response | None = None
    _last_wire: bytes = b""

    @staticmethod
    def create(
        request: Request,
        key: TransactionKey,
        *,
        reliable: bool = False,
        timers: TimerConfig | None = None,
        peer: Any = None,
        auto_trying: bool = True,
    ) -> ServerTransaction:
        if request.method == "ACK":
            raise LocalProtocolError("ACK never creates a server transaction (RFC 3261 §17.2.3)")
        timers = timers or TimerConfig()
        if request.method == "INVITE":
            itx = InviteServerTransaction(request, key, reliable=reliable, timers=timers, peer=peer)
            itx.auto_trying = auto_trying
            return itx
        return NonInviteServerTransaction(request, key, reliable=reliable, timers=timers, peer=peer)

    def receive(self, request: Request, now: float) -> None:
        if not isinstance(request, Request):
            raise LocalProtocolError("a server transaction only receives requests")
        inp = TxInput.RECV_ACK if request.method == "ACK" else TxInput.RECV_REQUEST
        before = self.state
        if self._step(inp) is None:
            return
        if before is TxState.INIT:
            self._events.append(RequestReceived(request, self.key, self.peer))
            self._on_start(now)
        elif inp is TxInput.RECV_ACK:
            self._on_ack(before, request, now)
        elif self.last_response is not None and before is not TxState.ACCEPTED:
            # §17.2.1 / §17.2.2: a retransmitted request gets the most recent response again;
            # in Accepted it is absorbed (RFC 6026 §8.7: the TU retransmits the 2xx).
            self._queue(self.last_response, self._last_wire)

    def send_response(self, response: Response, now: float) -> None:
        """The TU's response; raises LocalProtocolError when the state forbids it."""
        if response.cseq.method != self.request.method:
            raise LocalProtocolError(
                f"response CSeq method {response.cseq.method} does not match"
                f" {self.request.method} (RFC 3261 §8.2.6.2)"
            )
        inp = _response_input(response.status, sending=True)
        before = self.state
        self._step(inp)
        self.last_response = response
        self._last_wire = self._queue(response)
        self._on_response(before, inp, now)

    def _on_start(self, now: float) -> None:
        pass

    def _on_ack(self, before: TxState, ack: Request, now: float) -> None:
        pass

    def _on_response(self, before: TxState, inp: TxInput, now: float) -> None:
        raise NotImplementedError  # pragma: no cover


class InviteServerTransaction(ServerTransaction):
    """§17.2.1 + RFC 6026 §8.5-8.7: Proceeding → Accepted (2xx) / Completed → Confirmed."""

    TABLE = INVITE_SERVER_TABLE
    auto_trying: bool = True

    def _on_start(self, now: float) -> None:
        if self.auto_trying:
            # §17.2.1: send 100 Trying unless the TU answers within 200 ms; the adapter may
            # turn this off for a UAS that answers at once.
            trying = make_response(self.request, 100)
            self.last_response = trying
            self._last_wire = self._queue(trying)

    def _on_ack(self, before: TxState, ack: Request, now: float) -> None:
        if before is TxState.ACCEPTED:
            self._events.append(AckReceived(ack, self.key, self.peer))
        elif before is TxState.COMPLETED:
            self._disarm(Timer.G, Timer.H)
            self._linger(Timer.I, now)

    def _on_response(self, before: TxState, inp: TxInput, now: float) -> None:
        if inp is TxInput.SEND_2XX and before is TxState.PROCEEDING:
            self._arm(Timer.L, now)
        elif inp is TxInput.SEND_FINAL:
            if not self.reliable:
                self._arm(Timer.G, now)
            self._arm(Timer.H, now)

    def _retransmit(self, timer: Timer, now: float) -> None:
        if timer is Timer.G and self.last_response is not None:
            self._queue(self.last_response, self._last_wire)
            self._arm(Timer.G, now, self.timers.next_interval(Timer.G, self._intervals[Timer.G]))


class NonInviteServerTransaction(ServerTransaction):
    """§17.2.2: Trying → Proceeding → Completed (Timer J) → Terminated."""

    TABLE = NON_INVITE_SERVER_TABLE

    def _on_response(self, before: TxState, inp: TxInput, now: float) -> None:
        if inp is not TxInput.SEND_1XX:
            self._linger(Timer.J, now)

    def _retransmit(self, timer: Timer, now: float) -> None:
        pass  # J is the only timer and it terminates


# ---------------------------------------------------------------- ACK and CANCEL builders


def _copy(request: Request, names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(n, v) for n, v in request.headers if n in names]


def make_ack(invite: Request, response: Response) -> Request:
    """ACK for a 3xx-6xx response, built by the INVITE client transaction (§17.1.1.3):
    same Request-URI, Call-ID, From and CSeq number as the INVITE, To from the response
    (it carries the tag), only the INVITE's top Via, and the INVITE's Route headers."""
    items: list[tuple[str, str]] = [("Via", str(invite.top_via))]
    items += [("Max-Forwards", "70")]
    items += _copy(invite, ("From",))
    items += [("To", response.headers.get("To") or invite.headers.get("To") or "")]
    items += _copy(invite, ("Call-ID",))
    items += [("CSeq", f"{invite.cseq.seq} ACK")]
    items += _copy(invite, ("Route",))
    items += [("Content-Length", "0")]
    return Request(Headers(items), b"", method="ACK", uri=invite.uri)


def make_cancel(request: Request, *, reason: str | None = None) -> Request:
    """CANCEL for a pending request (§9.1): same Request-URI, Call-ID, From, To (tags
    included) and CSeq number, method CANCEL, the request's top Via (same branch, so it
    matches the server transaction being cancelled), the request's Route headers.
    ``reason`` adds a Reason header (RFC 3326), e.g. ``'SIP;cause=200;text="Call completed
    elsewhere"'``."""
    if request.method == "ACK":
        raise LocalProtocolError("ACK cannot be cancelled (RFC 3261 §9.1)")
    items: list[tuple[str, str]] = [("Via", str(request.top_via))]
    items += [("Max-Forwards", "70")]
    items += _copy(request, ("From", "To", "Call-ID"))
    items += [("CSeq", f"{request.cseq.seq} CANCEL")]
    items += _copy(request, ("Route",))
    if reason is not None:
        items.append(("Reason", reason))
    items += [("Content-Length", "0")]
    return Request(Headers(items), b"", method="CANCEL", uri=request.uri)
