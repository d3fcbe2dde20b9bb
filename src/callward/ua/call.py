"""One call leg of a user agent, sans-IO: call state, dialog state (RFC 3261 §12) and the
requests and responses the UA core builds (§8.1, §13.2.2.4, §15).

No sockets, no clock: :class:`~callward.ua.phone.Phone` feeds it messages and sends what it
builds. The state machine is a table (style.md §3) so an illegal transition raises instead of
silently corrupting a call.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from callward.errors import LocalProtocolError
from callward.sip.headers import parse_name_addr
from callward.sip.message import Headers, Request, Response, make_response
from callward.sip.uri import URI, SipURI, parse_uri

__all__ = [
    "CallLeg",
    "CallState",
    "LocalEndpoint",
    "new_branch",
    "new_tag",
    "next_hop",
]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
USER_AGENT = "callward"


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(10)  # §8.1.1.7 magic cookie


class CallState(enum.Enum):
    CALLING = "calling"  # UAC: INVITE sent, no provisional yet
    EARLY = "early"  # UAC: 1xx received
    INCOMING = "incoming"  # UAS: INVITE received, nothing sent yet but 100
    RINGING = "ringing"  # UAS: 1xx sent (early dialog)
    ANSWERED = "answered"  # UAS: 2xx sent, waiting for ACK (§13.3.1.4)
    CONFIRMED = "confirmed"  # dialog confirmed: 2xx + ACK
    TERMINATED = "terminated"


class CallInput(enum.Enum):
    PROVISIONAL = "1xx"
    ACCEPTED = "2xx"
    REJECTED = "3xx-6xx"
    ACK = "ACK"
    BYE = "BYE"
    CANCEL = "CANCEL"
    TIMEOUT = "timeout"


_S, _I = CallState, CallInput
TRANSITIONS: dict[CallState, dict[CallInput, CallState]] = {
    _S.CALLING: {
        _I.PROVISIONAL: _S.EARLY, _I.ACCEPTED: _S.CONFIRMED, _I.REJECTED: _S.TERMINATED,
        _I.TIMEOUT: _S.TERMINATED, _I.CANCEL: _S.CALLING,
    },
    _S.EARLY: {
        _I.PROVISIONAL: _S.EARLY, _I.ACCEPTED: _S.CONFIRMED, _I.REJECTED: _S.TERMINATED,
        _I.TIMEOUT: _S.TERMINATED, _I.CANCEL: _S.TERMINATED,
    },
    _S.INCOMING: {
        _I.PROVISIONAL: _S.RINGING, _I.ACCEPTED: _S.ANSWERED, _I.REJECTED: _S.TERMINATED,
        _I.CANCEL: _S.TERMINATED,
    },
    _S.RINGING: {
        _I.PROVISIONAL: _S.RINGING, _I.ACCEPTED: _S.ANSWERED, _I.REJECTED: _S.TERMINATED,
        _I.CANCEL: _S.TERMINATED,
    },
    _S.ANSWERED: {
        _I.ACK: _S.CONFIRMED, _I.BYE: _S.TERMINATED, _I.TIMEOUT: _S.TERMINATED,
        _I.ACCEPTED: _S.ANSWERED,
    },
    _S.CONFIRMED: {_I.ACK: _S.CONFIRMED, _I.ACCEPTED: _S.CONFIRMED, _I.BYE: _S.TERMINATED},
    _S.TERMINATED: {_I.ACK: _S.TERMINATED, _I.BYE: _S.TERMINATED, _I.ACCEPTED: _S.TERMINATED},
}  # fmt: skip
del _S, _I


@dataclass(frozen=True, slots=True)
class LocalEndpoint:
    """Who we are on the wire: AOR user/domain, and the transport address in Via/Contact."""

    user: str
    domain: str
    host: str
    port: int
    transport: str = "udp"  # udp | tcp | tls | ws | wss
    display: str | None = None

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact(self) -> str:
        t = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"<sip:{self.user}@{self.host}:{self.port}{t}>"

    def via(self, branch: str) -> str:
        # RFC 3581 rport: ask the peer to answer to the source port (NAT-friendly, §18.2.2).
        return f"SIP/2.0/{self.transport.upper()} {self.host}:{self.port};branch={branch};rport"

    def from_header(self, tag: str, uri: str | None = None) -> str:
        name = f'"{self.display}" ' if self.display else ""
        return f"{name}<{uri or self.aor}>;tag={tag}"


def next_hop(uri: URI, default_port: int = 5060) -> tuple[str, int]:
    """(host, port) to send to for a SIP URI without DNS: numeric hosts and names the system
    resolver knows (RFC 3263 NAPTR/SRV is the edge's job, sip/dns.py)."""
    if not isinstance(uri, SipURI):
        raise LocalProtocolError(f"cannot route to non-SIP URI {uri}")
    host = uri.param("maddr") or uri.host
    port = uri.port or (5061 if uri.scheme == "sips" else default_port)
    return host.strip("[]"), port


@dataclass(slots=True)
class CallLeg:
    """Dialog and call state for one leg. ``outgoing`` legs are UAC (we sent the INVITE)."""

    local: LocalEndpoint
    call_id: str
    local_tag: str
    outgoing: bool
    remote_uri: str  # To (UAC) / From (UAS) URI text
    local_uri: str  # From (UAC) / To (UAS) URI text: our side of the dialog (§12.1)
    request_uri: URI  # initial Request-URI (UAC) or our Contact (UAS)
    state: CallState = CallState.CALLING
    remote_tag: str | None = None
    remote_target: URI | None = None  # Contact of the peer (§12.1)
    route_set: tuple[str, ...] = ()  # Route header values in order (§12.1.1 / §12.1.2)
    local_cseq: int = 1
    remote_cseq: int | None = None
    invite: Request | None = None  # our INVITE (UAC) or theirs (UAS)
    final: Response | None = None  # final response to the INVITE (sent or received)
    ack: Request | None = None  # our ACK for a 2xx, kept to answer 2xx retransmissions
    status: int = 0  # final status of the INVITE
    end_reason: str = ""
    local_sdp: bytes = b""
    remote_sdp: bytes = b""
    history: list[CallState] = field(default_factory=list)

    # ------------------------------------------------------------------ state
    def fire(self, event: CallInput) -> CallState:
        new = TRANSITIONS[self.state].get(event)
        if new is None:
            raise LocalProtocolError(f"call event {event.value} not allowed in {self.state.value}")
        if new is not self.state:
            self.history.append(self.state)
        self.state = new
        return new

    def _check(self, event: CallInput) -> None:
        if event not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"call event {event.value} not allowed in {self.state.value}")

    @property
    def dialog_id(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag) (§12)."""
        return self.call_id, self.local_tag, self.remote_tag or ""

    # ------------------------------------------------------------------ UAC
    @classmethod
    def outgoing_invite(
        cls,
        local: LocalEndpoint,
        target: str,
        sdp: bytes,
        *,
        routes: Iterable[str] = (),
        extra: Iterable[tuple[str, str]] = (),
    ) -> CallLeg:
        """A new UAC leg and its INVITE (§8.1.1, §13.2.1); ``routes`` is a preloaded route set
        (an outbound proxy, RFC 3261 §8.1.2)."""
        uri = parse_uri(target)
        leg = cls(local, secrets.token_hex(12), new_tag(), True, target, local.aor, uri)
        leg.route_set = tuple(routes)
        leg.local_sdp = sdp
        leg.invite = leg._request("INVITE", uri, f"<{target}>", sdp, extra)
        return leg

    def _request(
        self,
        method: str,
        uri: URI,
        to: str,
        body: bytes = b"",
        extra: Iterable[tuple[str, str]] = (),
        cseq: int | None = None,
    ) -> Request:
        items = [
            ("Via", self.local.via(new_branch())),
            ("Max-Forwards", "70"),
            ("From", self.local.from_header(self.local_tag, self.local_uri)),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.local_cseq if cseq is None else cseq} {method}"),
        ]
        items += [("Route", r) for r in self.route_set]
        if method in ("INVITE", "UPDATE"):
            items += [("Contact", self.local.contact), ("Allow", ALLOW)]
        items.append(("User-Agent", USER_AGENT))
        items += list(extra)
        if body:
            items.append(("Content-Type", "application/sdp"))
        items.append(("Content-Length", str(len(body))))
        return Request(Headers(items), body, method=method, uri=uri)

    def on_response(self, resp: Response) -> CallState:
        """Feed a response to our INVITE (from the transaction layer)."""
        if resp.status < 200:
            if resp.status > 100:
                state = self.fire(CallInput.PROVISIONAL)
                if resp.to.tag and self.remote_tag is None:
                    self._learn_dialog(resp)  # early dialog (§12.1.2)
                return state
            return self.state
        self._check(CallInput.ACCEPTED if resp.status < 300 else CallInput.REJECTED)
        self.final = resp
        self.status = resp.status
        if resp.status < 300:
            if self.state is CallState.CONFIRMED:
                return self.state  # a 2xx retransmission: the caller re-sends the ACK
            self._learn_dialog(resp)
            self.remote_sdp = resp.body
            return self.fire(CallInput.ACCEPTED)
        self.end_reason = f"rejected:{resp.status}"
        return self.fire(CallInput.REJECTED)

    def _learn_dialog(self, resp: Response) -> None:
        self.remote_tag = resp.to.tag
        if resp.contacts:
            self.remote_target = resp.contacts[0].uri
        # §12.1.2: the UAC's route set is the Record-Route list reversed.
        self.route_set = tuple(reversed(resp.headers.values("Record-Route"))) or self.route_set

    def make_ack(self) -> Request:
        """ACK for the 2xx (§13.2.2.4): its own transaction, same CSeq number, in-dialog."""
        if self.invite is None or self.remote_tag is None:
            raise LocalProtocolError("ACK needs a confirmed dialog")
        # §22.1 / §13.2.2.4: the ACK carries the INVITE's credentials.
        creds = [
            (n, v) for n, v in self.invite.headers if n in ("Authorization", "Proxy-Authorization")
        ]
        self.ack = self._request(
            "ACK", self._dialog_uri(), self._to_header(), extra=creds, cseq=self.invite.cseq.seq
        )
        return self.ack

    def timed_out(self, reason: str = "timeout") -> CallState:
        self.status = self.status or 408
        self.end_reason = reason
        return self.fire(CallInput.TIMEOUT)

    # ------------------------------------------------------------------ UAS
    @classmethod
    def incoming_invite(cls, local: LocalEndpoint, invite: Request) -> CallLeg:
        """A new UAS leg from an initial INVITE (§12.1.1)."""
        leg = cls(
            local,
            invite.call_id,
            new_tag(),
            False,
            str(invite.from_.uri),
            str(invite.to.uri),
            invite.uri,
            state=CallState.INCOMING,
        )
        leg.invite = invite
        leg.remote_tag = invite.from_.tag
        leg.remote_target = invite.contacts[0].uri if invite.contacts else None
        leg.route_set = tuple(invite.headers.values("Record-Route"))
        leg.remote_cseq = invite.cseq.seq
        leg.remote_sdp = invite.body
        return leg

    def make_response(self, status: int, body: bytes = b"") -> Response:
        """A response to the INVITE carrying our To tag (and Contact for 1xx-2xx, §12.1.1)."""
        if self.invite is None:
            raise LocalProtocolError("no INVITE to answer")
        extra: list[tuple[str, str]] = []
        if 100 < status < 300:
            extra += [("Contact", self.local.contact), ("Allow", ALLOW)]
        extra.append(("User-Agent", USER_AGENT))
        if body:
            extra.append(("Content-Type", "application/sdp"))
        resp = make_response(self.invite, status, to_tag=self.local_tag, extra=extra, body=body)
        if status >= 200:
            self._check(CallInput.ACCEPTED if status < 300 else CallInput.REJECTED)
            self.final = resp
            self.status = status
            if status < 300:
                self.local_sdp = body
                self.fire(CallInput.ACCEPTED)
            else:
                self.end_reason = f"rejected:{status}"
                self.fire(CallInput.REJECTED)
        elif status > 100 and self.state is CallState.INCOMING:
            self.fire(CallInput.PROVISIONAL)
        return resp

    def on_ack(self) -> CallState:
        return self.fire(CallInput.ACK)

    def on_cancel(self) -> CallState:
        self.end_reason = "cancel"
        self.status = 487
        return self.fire(CallInput.CANCEL)

    # ------------------------------------------------------------------ both
    def _to_header(self) -> str:
        return f"<{self.remote_uri}>;tag={self.remote_tag}"

    def _dialog_uri(self) -> URI:
        """§12.2.1.1: Request-URI is the remote target (loose routing only)."""
        return self.remote_target or self.request_uri

    def make_bye(self) -> Request:
        """BYE in the confirmed dialog (§15.1.1), with the next local CSeq."""
        if self.remote_tag is None:
            raise LocalProtocolError("BYE needs a dialog")
        self.local_cseq += 1
        return self._request("BYE", self._dialog_uri(), self._to_header())

    def on_bye(self, reason: str = "bye") -> CallState:
        self.end_reason = self.end_reason or reason
        return self.fire(CallInput.BYE)

    def bye_matches(self, req: Request) -> bool:
        """Does an in-dialog request belong to this leg? (§12.2.2: Call-ID + both tags.)"""
        return (
            req.call_id == self.call_id
            and req.to.tag == self.local_tag
            and (req.from_.tag or "") == (self.remote_tag or "")
        )

    def next_hop(self) -> tuple[str, int]:
        """Where in-dialog (and initial) requests go: the first Route, else the target."""
        if self.route_set:
            return next_hop(parse_name_addr(self.route_set[0]).uri)
        return next_hop(self._dialog_uri() if self.remote_tag else self.request_uri)
