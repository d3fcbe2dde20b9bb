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

from callward.errors import LocalProtocolError, RemoteProtocolError
from callward.sip.dialog import Dialog, DialogId, DialogState, new_tag
from callward.sip.headers import parse_name_addr
from callward.sip.message import Headers, Request, Response, make_response
from callward.sip.transaction import new_branch
from callward.sip.uri import URI, SipURI, parse_uri

__all__ = [
    "CallLeg",
    "CallState",
    "LocalEndpoint",
    "new_branch",
    "new_tag",
    "next_hop",
]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"
USER_AGENT = "callward"


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
    """Call state for one leg, with its dialog (:class:`~callward.sip.dialog.Dialog`: route set,
    remote target, CSeq spaces). ``outgoing`` legs are UAC (we sent the INVITE)."""

    local: LocalEndpoint
    call_id: str
    local_tag: str
    outgoing: bool
    remote_uri: str  # To (UAC) / From (UAS) URI text
    local_uri: str  # From (UAC) / To (UAS) URI text: our side of the dialog (§12.1)
    request_uri: URI  # initial Request-URI (UAC) or the one we were reached at (UAS)
    state: CallState = CallState.CALLING
    dialog: Dialog | None = None
    preloaded: tuple[str, ...] = ()  # UAC: Route set before a dialog exists (§8.1.2)
    local_cseq: int = 1  # UAC: CSeq of the current INVITE (grows with a digest retry)
    invite: Request | None = None  # our INVITE (UAC) or theirs (UAS)
    final: Response | None = None  # final response to the INVITE (sent or received)
    ack: Request | None = None  # our ACK for a 2xx, kept to answer 2xx retransmissions
    status: int = 0  # final status of the INVITE
    end_reason: str = ""
    local_sdp: bytes = b""
    remote_sdp: bytes = b""
    sdp_version: int = 1  # our o= version: +1 for every new offer or answer (RFC 3264 §8)
    we_offered: bool | None = None  # who made the offer of the current exchange (None: UAC)
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
    def remote_tag(self) -> str | None:
        return None if self.dialog is None else self.dialog.id.remote_tag

    @property
    def remote_target(self) -> URI | None:
        return None if self.dialog is None else self.dialog.remote_target

    @property
    def route_set(self) -> tuple[str, ...]:
        if self.dialog is None:
            return self.preloaded
        return tuple(str(r) for r in self.dialog.route_set)

    def _via(self) -> str:
        """Our Via sent-by with rport (RFC 3581); Dialog adds the branch."""
        return f"SIP/2.0/{self.local.transport.upper()} {self.local.host}:{self.local.port};rport"

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
        leg.preloaded = tuple(routes)
        leg.local_sdp = sdp
        leg.invite = leg._initial("INVITE", uri, f"<{target}>", sdp, extra)
        return leg

    def _initial(
        self,
        method: str,
        uri: URI,
        to: str,
        body: bytes = b"",
        extra: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """An out-of-dialog request (§8.1.1)."""
        items = [
            ("Via", self.local.via(new_branch())),
            ("Max-Forwards", "70"),
            ("From", self.local.from_header(self.local_tag, self.local_uri)),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.local_cseq} {method}"),
        ]
        items += [("Route", r) for r in self.preloaded]
        items += [("Contact", self.local.contact), ("Allow", ALLOW), ("User-Agent", USER_AGENT)]
        items += list(extra)
        if body:
            items.append(("Content-Type", "application/sdp"))
        items.append(("Content-Length", str(len(body))))
        return Request(Headers(items), body, method=method, uri=uri)

    def _uac_dialog(self, resp: Response) -> None:
        """Create (§12.1.2) or update the dialog from a 1xx-with-tag or 2xx to our INVITE."""
        assert self.invite is not None
        if self.dialog is not None and resp.to.tag == self.dialog.id.remote_tag:
            self.dialog.receive_response(self.invite, resp)
            return
        if self.dialog is not None:
            return  # a second early dialog (forking): keep the first one
        try:
            self.dialog = Dialog.uac(self.invite, resp)
        except RemoteProtocolError:
            # A 2xx without Contact breaks §12.1.1, but it still needs an ACK: target the
            # Request-URI as Dialog does for a Contact-less 1xx.
            self.dialog = Dialog(
                id=DialogId(self.call_id, self.local_tag, resp.to.tag or ""),
                state=DialogState.CONFIRMED,
                local_uri=parse_name_addr(f"<{self.local_uri}>"),
                remote_uri=parse_name_addr(f"<{self.remote_uri}>"),
                remote_target=self.invite.uri,
                route_set=tuple(reversed(resp.record_routes)),
                local_seq=self.invite.cseq.seq,
                remote_seq=None,
                is_uac=True,
            )

    def on_response(self, resp: Response) -> CallState:
        """Feed a response to our INVITE (from the transaction layer)."""
        if resp.status < 200:
            if resp.status > 100:
                state = self.fire(CallInput.PROVISIONAL)
                if resp.to.tag:
                    self._uac_dialog(resp)  # early dialog (§12.1.2)
                return state
            return self.state
        self._check(CallInput.ACCEPTED if resp.status < 300 else CallInput.REJECTED)
        self.final = resp
        self.status = resp.status
        if resp.status < 300:
            if self.state is CallState.CONFIRMED:
                return self.state  # a 2xx retransmission: the caller re-sends the ACK
            self._uac_dialog(resp)
            self.remote_sdp = resp.body
            return self.fire(CallInput.ACCEPTED)
        if self.dialog is not None:
            self.dialog.receive_response(self.invite or Request(Headers()), resp)
        self.end_reason = self.end_reason or f"rejected:{resp.status}"  # "cancel" stays
        return self.fire(CallInput.REJECTED)

    def make_ack(self) -> Request:
        """ACK for the 2xx (§13.2.2.4): its own transaction, same CSeq number, in-dialog,
        carrying the INVITE's credentials (§22.1)."""
        if self.invite is None or self.dialog is None:
            raise LocalProtocolError("ACK needs a confirmed dialog")
        creds = [
            (n, v) for n, v in self.invite.headers if n in ("Authorization", "Proxy-Authorization")
        ]
        self.ack = self.dialog.create_request(
            "ACK",
            via=self._via(),
            cseq=self.invite.cseq.seq,
            extra=[*creds, ("User-Agent", USER_AGENT)],
        )
        return self.ack

    def timed_out(self, reason: str = "timeout") -> CallState:
        self.status = self.status or 408
        self.end_reason = reason
        return self.fire(CallInput.TIMEOUT)

    # ------------------------------------------------------------------ UAS
    @classmethod
    def incoming_invite(cls, local: LocalEndpoint, invite: Request) -> CallLeg:
        """A new UAS leg from an initial INVITE; its dialog is created with our first 1xx/2xx
        (§12.1.1). Raises RemoteProtocolError (400) when the INVITE cannot form a dialog."""
        if not invite.contacts or invite.from_.tag is None:
            raise RemoteProtocolError(
                "INVITE without Contact or From tag cannot create a dialog (§12.1.1)",
                status_hint=400,
            )
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
        leg.remote_sdp = invite.body
        return leg

    def make_response(
        self, status: int, body: bytes = b"", extra_headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        """A response to the INVITE carrying our To tag (and Contact for 1xx-2xx, §12.1.1)."""
        if self.invite is None:
            raise LocalProtocolError("no INVITE to answer")
        extra: list[tuple[str, str]] = list(extra_headers)
        if 100 < status < 300:
            extra += [("Contact", self.local.contact), ("Allow", ALLOW)]
        extra.append(("User-Agent", USER_AGENT))
        if body:
            extra.append(("Content-Type", "application/sdp"))
        if status >= 200:
            self._check(CallInput.ACCEPTED if status < 300 else CallInput.REJECTED)
        resp = make_response(self.invite, status, to_tag=self.local_tag, extra=extra, body=body)
        if 100 < status < 300 and self.dialog is None:
            self.dialog = Dialog.uas(
                self.invite,
                self.local_tag,
                local_target=parse_name_addr(self.local.contact).uri,
                early=status < 200,
            )
        if status >= 200:
            self.final = resp
            self.status = status
            if status < 300:
                if self.dialog is not None and self.dialog.state is DialogState.EARLY:
                    self.dialog.confirm()
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
    def make_reinvite(self, sdp: bytes) -> Request:
        """A re-INVITE (§14.1) carrying a new offer, with our (possibly new) Contact: the
        dialog's remote target follows it, so a moved phone stays reachable (§12.2.1.1)."""
        if self.dialog is None or self.state is not CallState.CONFIRMED:
            raise LocalProtocolError(f"re-INVITE needs a confirmed call, not {self.state.value}")
        # Our target may have moved (handover): the dialog's Contact follows (§12.2.1.1).
        self.dialog.local_target = parse_name_addr(self.local.contact).uri
        extra = [("Allow", ALLOW), ("User-Agent", USER_AGENT)]
        if sdp:
            extra.append(("Content-Type", "application/sdp"))
        return self.dialog.create_request("INVITE", via=self._via(), body=sdp, extra=extra)

    def make_in_dialog_ack(self, invite: Request) -> Request:
        """ACK for a 2xx to a re-INVITE (§13.2.2.4), same CSeq number."""
        if self.dialog is None:
            raise LocalProtocolError("ACK needs a dialog")
        return self.dialog.create_request(
            "ACK", via=self._via(), cseq=invite.cseq.seq, extra=[("User-Agent", USER_AGENT)]
        )

    def make_update(self, extra: Iterable[tuple[str, str]] = ()) -> Request:
        """A body-less UPDATE (RFC 3311) refreshing the session (RFC 4028 §9)."""
        if self.dialog is None or self.state is not CallState.CONFIRMED:
            raise LocalProtocolError(f"UPDATE needs a confirmed call, not {self.state.value}")
        self.dialog.local_target = parse_name_addr(self.local.contact).uri
        return self.dialog.create_request(
            "UPDATE", via=self._via(), extra=[*extra, ("User-Agent", USER_AGENT)]
        )

    def make_bye(self) -> Request:
        """BYE in the confirmed dialog (§15.1.1), with the next local CSeq."""
        if self.dialog is None:
            raise LocalProtocolError("BYE needs a dialog")
        return self.dialog.create_request(
            "BYE", via=self._via(), extra=[("User-Agent", USER_AGENT)]
        )

    def on_bye(self, reason: str = "bye") -> CallState:
        self.end_reason = self.end_reason or reason
        return self.fire(CallInput.BYE)

    def receive_in_dialog(self, req: Request) -> None:
        """Check an in-dialog request from the peer (§12.2.2): RemoteProtocolError with
        status_hint 481 (not this dialog) or 500 (CSeq out of order)."""
        if self.dialog is None:
            raise RemoteProtocolError("no dialog (§12.2.2)", status_hint=481)
        self.dialog.receive_request(req)

    def bye_matches(self, req: Request) -> bool:
        """Does an in-dialog request belong to this leg? (§12.2.2: Call-ID + both tags.)"""
        return self.dialog is not None and DialogId.for_uas(req) == self.dialog.id

    def next_hop(self) -> tuple[str, int]:
        """Where requests go: the first Route (loose or strict), else the Request-URI."""
        if self.dialog is None:
            if self.preloaded:
                return next_hop(parse_name_addr(self.preloaded[0]).uri)
            return next_hop(self.request_uri)
        ruri, routes = self.dialog.request_target()
        return next_hop(routes[0].uri if routes else ruri)
