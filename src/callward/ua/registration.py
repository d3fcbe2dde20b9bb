"""The registration manager of a phone (RFC 3261 §10.2, RFC 5626 outbound), sans-IO.

It keeps one AOR registered over one or more *flows* (RFC 5626 §4.2: one ``reg-id`` per edge,
the same ``+sip.instance``) and decides *when* to send what; the asyncio adapter
(:mod:`callward.ua.registration_agent`) runs the transactions and feeds back their outcome::

    mgr = RegistrationManager(local, [edge_a, edge_b], domain="example.org", rng=rng)
    mgr.start(now)
    for out in mgr.requests_to_send(): ...          # REGISTER requests, with their flow
    mgr.receive_response(flow, response, now)       # (408/503 synthesized on timeout)
    mgr.get_timer() / mgr.handle_timer(now)         # refresh, retry and keep-alive deadlines
    mgr.next_event()                                # FlowUp, FlowDown, KeepAliveDue, ...

Behaviour, each tested with an injected clock (tests/ua/test_registration.py):

- refresh at a random 75-90 % of the granted expiry, so phones registered together drift apart;
  :meth:`RegistrationManager.refresh` while a REGISTER is in flight is coalesced (counted);
- the last digest challenge is reused with a growing ``nc`` (:mod:`callward.ua.credentials`), so
  a refresh is REGISTER + 200, not REGISTER + 401 + REGISTER + 200;
- failures back off exponentially with *full jitter* (AWS architecture blog, "Exponential
  Backoff And Jitter"): wait ``uniform(0, min(cap, base * 2**n))`` with RFC 5626 §4.5's base
  times (30 s when every flow is down, 90 s when another flow is up) and cap (1800 s);
- ``503`` with ``Retry-After`` waits at least that long (RFC 3261 §21.5.4); ``423`` retries at
  once with the registrar's ``Min-Expires`` (§10.2.8);
- offline (no network): nothing is sent, refreshes are buffered, and coming back online
  re-registers each flow after a jittered delay instead of all at once;
- an address change re-registers every flow from the new address (RFC 5626 §4.4.1);
- :meth:`RegistrationManager.stop` unregisters every bound flow (``Expires: 0``).
"""

from __future__ import annotations

import enum
import random
import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from callward.errors import ConfigError, LocalProtocolError
from callward.nat.keepalive import KeepAlivePolicy, KeepAliveSizer
from callward.sip.message import Headers, Request, Response
from callward.sip.transaction import new_branch
from callward.sip.uri import parse_uri
from callward.ua.call import USER_AGENT, LocalEndpoint, new_tag
from callward.ua.credentials import CredentialSource, NoCredentials

__all__ = [
    "FlowDown",
    "FlowState",
    "FlowUp",
    "KeepAliveDue",
    "OutgoingRegister",
    "RegistrationEvent",
    "RegistrationManager",
    "RetryPolicy",
    "Unregistered",
]

Address = tuple[str, int]


class FlowState(enum.Enum):
    IDLE = "idle"
    REGISTERING = "registering"  # a REGISTER is in flight (initial or refresh)
    REGISTERED = "registered"  # bound, waiting for the refresh time
    BACKOFF = "backoff"  # failed, waiting to retry
    UNREGISTERING = "unregistering"
    CLOSED = "closed"


class FlowInput(enum.Enum):
    SEND = "send"
    OK = "ok"
    FAIL = "fail"
    DUE = "due"
    STOP = "stop"
    DONE = "done"


_S, _I = FlowState, FlowInput
TRANSITIONS: dict[FlowState, dict[FlowInput, FlowState]] = {
    _S.IDLE: {_I.SEND: _S.REGISTERING, _I.FAIL: _S.BACKOFF, _I.STOP: _S.CLOSED},
    _S.REGISTERING: {_I.OK: _S.REGISTERED, _I.FAIL: _S.BACKOFF, _I.SEND: _S.REGISTERING,
                     _I.STOP: _S.UNREGISTERING},
    _S.REGISTERED: {_I.SEND: _S.REGISTERING, _I.FAIL: _S.BACKOFF, _I.STOP: _S.UNREGISTERING},
    _S.BACKOFF: {_I.SEND: _S.REGISTERING, _I.FAIL: _S.BACKOFF, _I.STOP: _S.CLOSED},
    _S.UNREGISTERING: {_I.DONE: _S.CLOSED, _I.OK: _S.UNREGISTERING, _I.FAIL: _S.UNREGISTERING,
                       _I.STOP: _S.UNREGISTERING},
    _S.CLOSED: {_I.STOP: _S.CLOSED, _I.DONE: _S.CLOSED, _I.OK: _S.CLOSED, _I.FAIL: _S.CLOSED},
}  # fmt: skip
del _S, _I


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff after a failed REGISTER (RFC 5626 §4.5 times, full jitter)."""

    base_all_down: float = 30.0
    base_some_up: float = 90.0
    cap: float = 1800.0
    resume_spread: float = 10.0  # coming back online: re-register within [0, spread)
    refresh_low: float = 0.75  # refresh at this ... fraction of the granted expiry
    refresh_high: float = 0.90  # ... up to this one
    max_retry_after: float = 3600.0  # a hostile Retry-After cannot park us for longer
    jitter: bool = True  # False: wait the whole window (only to show why jitter matters)

    def __post_init__(self) -> None:
        if not 0 < self.base_all_down <= self.cap and 0 < self.base_some_up <= self.cap:
            raise ConfigError("retry bases must be positive and at most the cap")
        if not 0 < self.refresh_low <= self.refresh_high < 1:
            raise ConfigError("refresh fractions must satisfy 0 < low <= high < 1")
        if self.resume_spread < 0 or self.max_retry_after <= 0:
            raise ConfigError("resume_spread and max_retry_after must be positive")


@dataclass(frozen=True, slots=True)
class OutgoingRegister:
    flow: int
    dest: Address
    request: Request


@dataclass(frozen=True, slots=True)
class FlowUp:
    flow: int
    expires: int  # granted seconds
    refreshed: bool  # False for the first success after being down


@dataclass(frozen=True, slots=True)
class FlowDown:
    flow: int
    status: int
    retry_in: float


@dataclass(frozen=True, slots=True)
class KeepAliveDue:
    flow: int
    method: str  # "crlf" | "stun"


@dataclass(frozen=True, slots=True)
class Unregistered:
    flow: int
    status: int


RegistrationEvent = FlowUp | FlowDown | KeepAliveDue | Unregistered


@dataclass(slots=True)
class _Flow:
    index: int
    edge: Address
    call_id: str
    tag: str
    cseq: int = 0
    state: FlowState = FlowState.IDLE
    deadline: float | None = None  # refresh / retry time
    ka_deadline: float | None = None
    bound_until: float = 0.0
    failures: int = 0
    answered: bool = False  # this attempt already answered a challenge
    expires: int = 0  # what we ask for in the current attempt
    in_flight: Request | None = None
    sizer: KeepAliveSizer | None = None
    history: list[FlowState] = field(default_factory=list)


class RegistrationManager:
    """See the module docstring."""

    def __init__(
        self,
        local: LocalEndpoint,
        edges: Sequence[Address],
        *,
        domain: str,
        expires: int = 600,
        instance: str | None = None,
        credentials: CredentialSource | None = None,
        retry: RetryPolicy | None = None,
        keepalive: KeepAlivePolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not edges:
            raise LocalProtocolError("a registration needs at least one edge")
        if not 0 < expires <= 2**31:
            raise LocalProtocolError(f"expires must be positive, not {expires}")
        self.local = local
        self.domain = domain
        self.expires = expires
        # RFC 5626 §4.1: one instance id for the device; reg-id per flow only with an instance.
        self.instance = instance
        self.credentials: CredentialSource = credentials or NoCredentials()
        self.retry = retry or RetryPolicy()
        self.keepalive = keepalive
        self.rng = rng or random.Random()
        self.flows = [
            _Flow(i, (e[0], e[1]), secrets.token_hex(12), new_tag()) for i, e in enumerate(edges)
        ]
        self.online = True
        self.stopping = False
        self.coalesced = 0
        self.sent = 0
        self._out: list[OutgoingRegister] = []
        self._events: deque[RegistrationEvent] = deque()

    # ------------------------------------------------------------------ state
    def _fire(self, flow: _Flow, event: FlowInput) -> None:
        new = TRANSITIONS[flow.state].get(event)
        if new is None:
            raise LocalProtocolError(
                f"registration event {event.value} not allowed in {flow.state.value}"
            )
        if new is not flow.state:
            flow.history.append(flow.state)
        flow.state = new

    def state(self, flow: int = 0) -> FlowState:
        return self.flows[flow].state

    def registered(self, now: float) -> list[int]:
        """Flows with a live binding, in preference order (flow 0 first)."""
        return [f.index for f in self.flows if f.bound_until > now]

    def active_flow(self, now: float) -> int | None:
        """Where calls go (RFC 5626 §4.3): the first flow with a binding; failover to the next."""
        up = self.registered(now)
        return up[0] if up else None

    # ------------------------------------------------------------------ requests
    def _request(self, flow: _Flow, expires: int) -> Request:
        flow.cseq += 1
        contact = f"{self.local.contact};expires={expires}"
        if self.instance is not None:
            contact += f';+sip.instance="<{self.instance}>";reg-id={flow.index + 1}'
        items = [
            ("Via", self.local.via(new_branch())),
            ("Max-Forwards", "70"),
            ("From", f"<{self.local.aor}>;tag={flow.tag}"),
            ("To", f"<{self.local.aor}>"),
            ("Call-ID", flow.call_id),
            ("CSeq", f"{flow.cseq} REGISTER"),
            ("Contact", contact),
            ("Expires", str(expires)),
        ]
        if self.instance is not None:
            items.append(("Supported", "outbound, path"))  # RFC 5626 §4.2.1
        items += [("User-Agent", USER_AGENT), ("Content-Length", "0")]
        return Request(Headers(items), method="REGISTER", uri=parse_uri(f"sip:{self.domain}"))

    def _send(self, flow: _Flow, expires: int, *, answering: Response | None = None) -> None:
        req = self._request(flow, expires)
        if answering is not None:
            answer = self.credentials.answer(req, answering)
            if answer is None:
                flow.cseq -= 1
                return
            extra = answer
        else:
            extra = self.credentials.preemptive(req)
        headers = req.headers
        for name, value in extra:
            headers = headers.append(name, value)
        req = req.replace(headers=headers)
        flow.in_flight = req
        flow.expires = expires
        flow.deadline = None
        if expires:
            self._fire(flow, FlowInput.SEND)
        self.sent += 1
        self._out.append(OutgoingRegister(flow.index, flow.edge, req))

    def requests_to_send(self) -> list[OutgoingRegister]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> RegistrationEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ inputs
    def start(self, now: float) -> None:
        """Register every flow (now when online, else as soon as we are)."""
        for flow in self.flows:
            if flow.state is FlowState.IDLE:
                if self.online:
                    self._begin(flow)
                else:
                    flow.deadline = None  # picked up by set_online(True)

    def _begin(self, flow: _Flow) -> None:
        flow.answered = False
        self._send(flow, self.expires)

    def refresh(self, now: float, flow: int | None = None) -> bool:
        """Ask for a refresh now (e.g. the app came to the foreground). Returns False when it
        was coalesced with one already in flight or buffered while offline."""
        started = False
        for f in self.flows if flow is None else [self.flows[flow]]:
            if f.state in (FlowState.REGISTERING, FlowState.UNREGISTERING, FlowState.CLOSED):
                self.coalesced += 1
                continue
            if not self.online:
                self.coalesced += 1
                f.deadline = None  # buffered: set_online(True) registers it
                continue
            self._begin(f)
            started = True
        return started

    def receive_response(
        self, flow_index: int, resp: Response, now: float, *, request: Request | None = None
    ) -> None:
        """The final response of the REGISTER in flight on ``flow_index`` (408/503 when the
        transaction timed out or the transport failed, §8.1.3.1). ``request`` is the REGISTER
        it answers: a late answer to an older one is ignored."""
        flow = self.flows[flow_index]
        if flow.in_flight is None or resp.status < 200:
            return
        sent = flow.in_flight
        if request is not None and request is not sent:
            return  # the answer to a REGISTER we have since replaced
        if flow.state is FlowState.UNREGISTERING:
            if resp.status in (401, 407) and not flow.answered:
                flow.answered = True
                self._send(flow, 0, answering=resp)
                if flow.in_flight is not sent:
                    return
            flow.in_flight = None
            flow.bound_until = 0.0
            flow.ka_deadline = None
            self._fire(flow, FlowInput.DONE)
            self._events.append(Unregistered(flow.index, resp.status))
            return
        if flow.state is not FlowState.REGISTERING:
            return
        if 200 <= resp.status < 300:
            self._on_ok(flow, resp, now)
            return
        if resp.status in (401, 407) and not flow.answered:
            flow.answered = True
            self._send(flow, flow.expires, answering=resp)
            if flow.in_flight is not sent:
                return
        if resp.status == 423:
            min_expires = _int_header(resp, "Min-Expires")
            if min_expires is not None and flow.expires < min_expires <= 2**31:
                self.expires = min_expires
                self._send(flow, min_expires)
                return
        flow.in_flight = None
        self._fail(flow, resp.status, now, retry_after=_retry_after(resp))

    def _on_ok(self, flow: _Flow, resp: Response, now: float) -> None:
        flow.in_flight = None
        granted = _granted(resp, self.local.contact, flow.expires)
        if granted <= 0:
            self._fail(flow, 500, now)  # the registrar dropped our binding
            return
        refreshed = flow.bound_until > now
        flow.bound_until = now + granted
        flow.failures = 0
        r = self.retry
        flow.deadline = now + granted * self.rng.uniform(r.refresh_low, r.refresh_high)
        self._fire(flow, FlowInput.OK)
        # RFC 5626 §4.4: keep-alives only on an outbound flow the registrar accepted
        # (``Require: outbound`` in its 2xx); a plain registrar may not answer them at all.
        if self.keepalive is not None and self.instance is not None and _outbound(resp):
            if flow.sizer is None:
                flow.sizer = KeepAliveSizer(self.keepalive)
            flow_timer = _int_header(resp, "Flow-Timer")  # RFC 5626 §5.4
            if flow_timer is not None:
                flow.sizer.set_flow_timer(float(flow_timer))
            if flow.ka_deadline is None:
                flow.ka_deadline = now + flow.sizer.next_delay(self.rng)
        self._events.append(FlowUp(flow.index, granted, refreshed))

    def _fail(
        self, flow: _Flow, status: int, now: float, *, retry_after: float | None = None
    ) -> None:
        flow.failures += 1
        others_up = any(f.bound_until > now for f in self.flows if f is not flow)
        r = self.retry
        base = r.base_some_up if others_up else r.base_all_down
        window = min(r.cap, base * 2 ** min(flow.failures - 1, 32))
        wait = self.rng.uniform(0.0, window) if r.jitter else window  # full jitter
        if retry_after is not None:
            floor = min(retry_after, r.max_retry_after)
            wait = floor + self.rng.uniform(0.0, min(window, floor * 0.5 + 1.0))
        flow.deadline = now + wait
        flow.ka_deadline = None
        self._fire(flow, FlowInput.FAIL)
        if flow.bound_until <= now:
            flow.bound_until = 0.0
        self._events.append(FlowDown(flow.index, status, wait))

    def flow_failed(self, flow_index: int, now: float) -> None:
        """The connection or NAT binding under a flow is gone (a keep-alive got no answer, the
        TCP connection closed): the binding is useless, so register again after a backoff."""
        flow = self.flows[flow_index]
        if flow.state in (FlowState.REGISTERED, FlowState.REGISTERING):
            flow.in_flight = None
            flow.bound_until = 0.0
            self._fail(flow, 0, now)

    def keepalive_result(
        self, flow_index: int, now: float, *, alive: bool, mapped: object | None = None
    ) -> None:
        """Outcome of the keep-alive announced by :class:`KeepAliveDue`. A lost binding (no
        pong, or a new STUN mapped address) means the edge can no longer reach us on it:
        re-register at once, which also tells the sizer to shorten the interval."""
        flow = self.flows[flow_index]
        if flow.sizer is None:
            return
        changed = mapped is not None and flow.sizer._mapped not in (None, mapped)
        flow.sizer.on_result(alive, mapped)
        if flow.state is not FlowState.REGISTERED:
            return
        if not alive:
            self.flow_failed(flow_index, now)
            return
        if changed and self.online:
            self._begin(flow)  # new binding: the registrar must learn it (§4.4.2)
            return
        flow.ka_deadline = now + flow.sizer.next_delay(self.rng)

    def set_online(self, online: bool, now: float) -> None:
        """The device lost or regained connectivity (airplane mode, no coverage)."""
        if online == self.online:
            return
        self.online = online
        if online:
            # The binding may not have survived the outage (a new cell, a new NAT): register
            # every flow again, each after a jittered delay so a crowd does not come back at once.
            for flow in self.flows:
                if flow.state in (FlowState.IDLE, FlowState.BACKOFF, FlowState.REGISTERED):
                    flow.deadline = now + self.rng.uniform(0.0, self.retry.resume_spread)
            return
        for flow in self.flows:
            flow.ka_deadline = None
            if flow.state is FlowState.REGISTERING:
                flow.in_flight = None
                self._fail(flow, 0, now)

    def address_changed(self, local: LocalEndpoint, now: float) -> None:
        """Our address changed (Wi-Fi <-> cellular, IPv4 <-> IPv6): every binding points at the
        old Contact, so re-register every flow from the new one (after a jitter of 0-1 s)."""
        self.local = local
        for flow in self.flows:
            flow.ka_deadline = None
            if flow.sizer is not None:
                flow.sizer._mapped = None
            if flow.state in (FlowState.CLOSED, FlowState.UNREGISTERING):
                continue
            flow.in_flight = None
            if self.online:
                self._begin(flow)

    def stop(self, now: float) -> None:
        """Clean shutdown: unregister every flow that has (or may have) a binding."""
        self.stopping = True
        for flow in self.flows:
            flow.deadline = None
            flow.ka_deadline = None
            if flow.state in (FlowState.REGISTERED, FlowState.REGISTERING) and self.online:
                self._fire(flow, FlowInput.STOP)
                flow.answered = False
                self._send(flow, 0)
            elif flow.state not in (FlowState.UNREGISTERING, FlowState.CLOSED):
                flow.state = FlowState.CLOSED
                flow.bound_until = 0.0

    @property
    def stopped(self) -> bool:
        return all(f.state is FlowState.CLOSED for f in self.flows)

    # ------------------------------------------------------------------ timers
    def get_timer(self) -> float | None:
        deadlines = [d for f in self.flows for d in (f.deadline, f.ka_deadline) if d is not None]
        if not self.online:
            deadlines = []
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if not self.online:
            return
        for flow in self.flows:
            if flow.deadline is not None and flow.deadline <= now:
                flow.deadline = None
                if flow.state in (FlowState.REGISTERED, FlowState.BACKOFF, FlowState.IDLE):
                    self._begin(flow)
            if flow.ka_deadline is not None and flow.ka_deadline <= now:
                flow.ka_deadline = None
                if flow.state is FlowState.REGISTERED and self.keepalive is not None:
                    self._events.append(KeepAliveDue(flow.index, self.keepalive.method))


def _outbound(resp: Response) -> bool:
    return any(
        t.strip().lower() == "outbound"
        for v in resp.headers.get_lines("Require")
        for t in v.split(",")
    )


def _int_header(resp: Response, name: str) -> int | None:
    value = (resp.headers.get(name) or "").strip()
    return int(value) if value.isdigit() and len(value) <= 10 else None


def _retry_after(resp: Response) -> float | None:
    """Retry-After seconds of a 503 (or 500/480/486/600, §20.33); comments ignored."""
    if resp.status not in (480, 486, 500, 503, 600, 603):
        return None
    value = (resp.headers.get("Retry-After") or "").split(";", 1)[0].split("(", 1)[0].strip()
    return float(value) if value.isdigit() and len(value) <= 10 else None


def _granted(resp: Response, our_contact: str, asked: int) -> int:
    """The expiry the registrar granted for our Contact (§10.2.4: the Contact's expires
    parameter, else the Expires header, else what we asked for)."""
    ours = our_contact.strip("<>").split(";", 1)[0]
    try:
        contacts = resp.contacts
    except Exception:  # a malformed Contact in a 2xx: fall back to the Expires header
        contacts = ()
    if contacts:
        for c in contacts:
            if str(c.uri).split(";", 1)[0] == ours:
                value = c.param("expires")
                if value is not None and value.isdigit():
                    return min(int(value), 2**31)
    return _expires(resp, asked)


def _expires(resp: Response, asked: int) -> int:
    value = (resp.headers.get("Expires") or "").strip()
    return min(int(value), 2**31) if value.isdigit() and len(value) <= 10 else asked
