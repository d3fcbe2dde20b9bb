"""SIP dialogs, sans-IO (RFC 3261 §12, with the 2xx rules of §13.2.2.4 and §13.3.1.4).

A dialog is the peer-to-peer relationship that outlives transactions: identified by
Call-ID + local tag + remote tag, it holds the route set, the remote target and both CSeq
spaces. This module creates dialogs from the dialog-forming request/response, validates
in-dialog requests (out-of-order CSeq → 500) and builds in-dialog requests with loose or
strict routing (§12.2.1.1, §16.12.1.1).

States (table-driven like the transactions)::

    EARLY --2xx--> CONFIRMED --BYE--> TERMINATED
      |--3xx-6xx / BYE------------------^
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from callward.errors import LocalProtocolError, RemoteProtocolError
from callward.sip.headers import NameAddr
from callward.sip.message import Headers, Request, Response
from callward.sip.transaction import new_branch
from callward.sip.uri import URI, SipURI

__all__ = [
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogId",
    "DialogState",
    "new_tag",
]

# Methods whose requests and 2xx responses refresh the remote target (§12.2, RFC 3311, RFC 3265,
# RFC 3515 for REFER's in-dialog use).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


def new_tag() -> str:
    """A From/To tag with at least 32 bits of randomness (§19.3)."""
    return secrets.token_hex(6)


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogInput(enum.Enum):
    PROVISIONAL = "1xx with tag"
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"
    BYE = "BYE"
    GONE = "481/408 to an in-dialog request"


_TABLE: dict[DialogState, dict[DialogInput, DialogState]] = {
    DialogState.EARLY: {
        DialogInput.PROVISIONAL: DialogState.EARLY,
        DialogInput.SUCCESS: DialogState.CONFIRMED,
        DialogInput.FAILURE: DialogState.TERMINATED,
        DialogInput.BYE: DialogState.TERMINATED,
    },
    DialogState.CONFIRMED: {
        DialogInput.SUCCESS: DialogState.CONFIRMED,  # 2xx retransmission / re-INVITE answer
        DialogInput.FAILURE: DialogState.CONFIRMED,  # a failed re-INVITE keeps the dialog
        DialogInput.BYE: DialogState.TERMINATED,
        DialogInput.GONE: DialogState.TERMINATED,
    },
    DialogState.TERMINATED: {},
}


@dataclass(frozen=True, slots=True)
class DialogId:
    """§12: Call-ID, local tag, remote tag (as seen from this side)."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def for_uas(cls, request: Request) -> DialogId:
        """The id of the dialog an incoming request belongs to (To tag is ours, §12.2.2)."""
        return cls(request.call_id, request.to.tag or "", request.from_.tag or "")

    @classmethod
    def for_uac(cls, response: Response) -> DialogId:
        """The id of the dialog a response creates/belongs to (From tag is ours, §12.1.2)."""
        return cls(response.call_id, response.from_.tag or "", response.to.tag or "")


def _untagged(na: NameAddr) -> NameAddr:
    return NameAddr(na.uri, na.display, tuple(p for p in na.params if p[0].lower() != "tag"), True)


class Dialog:
    """One dialog. Build with :meth:`uac` (from our request and a 1xx-with-tag/2xx) or
    :meth:`uas` (from the request we answer); then :meth:`create_request`,
    :meth:`receive_request`, :meth:`receive_response`."""

    def __init__(
        self,
        *,
        id: DialogId,
        state: DialogState,
        local_uri: NameAddr,
        remote_uri: NameAddr,
        remote_target: URI,
        route_set: tuple[NameAddr, ...],
        local_seq: int | None,
        remote_seq: int | None,
        local_target: URI | None = None,
        secure: bool = False,
        is_uac: bool,
    ) -> None:
        self.id = id
        self.state = state
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.local_target = local_target
        self.secure = secure
        self.is_uac = is_uac

    def __repr__(self) -> str:
        return f"<Dialog {'UAC' if self.is_uac else 'UAS'} {self.state.name}>"

    # ------------------------------------------------------------ creation (§12.1)
    @classmethod
    def uac(
        cls,
        request: Request,
        response: Response,
        *,
        secure: bool = False,
    ) -> Dialog:
        """§12.1.2: from our dialog-creating request and a 1xx (with To tag) or 2xx response.
        The route set is the response's Record-Route in reverse; the remote target is its
        Contact."""
        status = response.status
        tag = response.to.tag
        if not 101 <= status < 300 or tag is None:
            raise RemoteProtocolError(
                f"a {status} response without To tag cannot create a dialog (§12.1.2)"
            )
        local_tag = request.from_.tag
        if local_tag is None:
            raise LocalProtocolError("our request has no From tag (§8.1.1.3)")
        contacts = response.contacts
        if not contacts and status >= 200:
            raise RemoteProtocolError(
                "2xx creating a dialog lacks Contact (§12.1.1)", status_hint=400
            )
        return cls(
            id=DialogId(request.call_id, local_tag, tag),
            state=DialogState.CONFIRMED if status >= 200 else DialogState.EARLY,
            local_uri=_untagged(request.from_),
            remote_uri=_untagged(request.to),
            remote_target=contacts[0].uri if contacts else request.uri,
            route_set=tuple(reversed(response.record_routes)),
            local_seq=request.cseq.seq,
            remote_seq=None,
            local_target=request.contacts[0].uri if request.contacts else None,
            secure=secure,
            is_uac=True,
        )

    @classmethod
    def uas(
        cls,
        request: Request,
        local_tag: str,
        *,
        local_target: URI | None = None,
        early: bool = False,
        secure: bool = False,
    ) -> Dialog:
        """§12.1.1: from the request we answer with a 1xx (``early``) or 2xx carrying
        ``local_tag``. Route set = Record-Route in order; remote target = Contact."""
        contacts = request.contacts
        if not contacts:
            raise RemoteProtocolError(
                "dialog-creating request lacks Contact (§8.1.1.8)", status_hint=400
            )
        remote_tag = request.from_.tag
        if remote_tag is None:
            raise RemoteProtocolError("request has no From tag (§8.1.1.3)", status_hint=400)
        return cls(
            id=DialogId(request.call_id, local_tag, remote_tag),
            state=DialogState.EARLY if early else DialogState.CONFIRMED,
            local_uri=_untagged(request.to),
            remote_uri=_untagged(request.from_),
            remote_target=contacts[0].uri,
            route_set=request.record_routes,
            local_seq=None,
            remote_seq=request.cseq.seq,
            local_target=local_target,
            secure=secure,
            is_uac=False,
        )

    # ------------------------------------------------------------ state
    def _step(self, inp: DialogInput) -> None:
        new = _TABLE[self.state].get(inp)
        if new is None:
            raise LocalProtocolError(f"dialog: {inp.value} not allowed in {self.state.name}")
        self.state = new

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    def receive_response(self, request: Request, response: Response) -> None:
        """Feed a response to a request we sent in (or to create) this dialog.

        2xx to INVITE on an early dialog confirms it and recomputes the route set
        (§13.2.2.4); a 2xx to a target-refresh request updates the remote target
        (§12.2.1.2); a failure on an early dialog terminates it (§12.3); 481/408 to an
        in-dialog request terminate it too (§12.2.1.2)."""
        status = response.status
        if self.terminated:
            return
        if status < 200:
            if self.state is DialogState.EARLY and response.to.tag == self.id.remote_tag:
                self._step(DialogInput.PROVISIONAL)
                self._refresh_target(response)
            return
        if status < 300:
            was_early = self.state is DialogState.EARLY
            self._step(DialogInput.SUCCESS)
            if was_early and self.is_uac:
                self.route_set = tuple(reversed(response.record_routes))
            if request.method in TARGET_REFRESH_METHODS:
                self._refresh_target(response)
            if request.method == "BYE":
                self._step(DialogInput.BYE)
            return
        if status in (481, 408) and self.state is DialogState.CONFIRMED:
            self._step(DialogInput.GONE)  # §12.2.1.2: the peer no longer knows the dialog
            return
        if self.state is DialogState.EARLY and request.method == "INVITE":
            self._step(DialogInput.FAILURE)

    def _refresh_target(self, msg: Request | Response) -> None:
        contacts = msg.contacts
        if contacts:
            self.remote_target = contacts[0].uri

    def receive_request(self, request: Request) -> None:
        """Validate an in-dialog request (§12.2.2) and update state.

        Raises RemoteProtocolError(status_hint=500) for a CSeq lower than the last one (out of
        order) and status_hint=481 when the request is not for this dialog."""
        if DialogId.for_uas(request) != self.id or self.terminated:
            raise RemoteProtocolError(
                "request does not match this dialog (§12.2.2)", status_hint=481
            )
        seq = request.cseq.seq
        method = request.method
        if method not in ("ACK", "CANCEL"):  # they reuse the INVITE's number (§13.2.2.4, §9.1)
            if self.remote_seq is not None and seq < self.remote_seq:
                raise RemoteProtocolError(
                    f"CSeq {seq} is lower than {self.remote_seq}: out of order (§12.2.2)",
                    status_hint=500,
                )
            self.remote_seq = seq
        if method in TARGET_REFRESH_METHODS:
            self._refresh_target(request)
        if method == "BYE":
            self._step(DialogInput.BYE)

    def confirm(self) -> None:
        """UAS side: our 2xx was sent on an early dialog (§12.1.1)."""
        self._step(DialogInput.SUCCESS)

    # ------------------------------------------------------------ requests (§12.2.1.1)
    def next_cseq(self) -> int:
        """§12.2.1.1: increment the local sequence number (start at 1 when empty)."""
        self.local_seq = 1 if self.local_seq is None else self.local_seq + 1
        if self.local_seq >= 2**31:
            raise LocalProtocolError("local CSeq exhausted (§8.1.1.5)")
        return self.local_seq

    def request_target(self) -> tuple[URI, list[NameAddr]]:
        """Request-URI and Route headers (§12.2.1.1).

        Loose routing (first route has ``;lr``) or no route set: R-URI = remote target,
        Route = route set. Strict routing: R-URI = first route (without parameters a
        Request-URI may not carry), Route = remaining routes + the remote target last."""
        routes = list(self.route_set)
        if not routes:
            return self.remote_target, []
        first = routes[0].uri
        if isinstance(first, SipURI) and first.has_param("lr"):
            return self.remote_target, routes
        if isinstance(first, SipURI):
            first = SipURI(
                first.host,
                first.user,
                first.password,
                first.port,
                tuple(p for p in first.params if p[0].lower() != "method"),
                (),
                first.scheme,
            )
        return first, [*routes[1:], NameAddr(self.remote_target)]

    def create_request(
        self,
        method: str,
        *,
        via: str,
        branch: str | None = None,
        cseq: int | None = None,
        body: bytes = b"",
        extra: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """An in-dialog request. ``via`` is our sent-by part (``"SIP/2.0/UDP host:port"``)
        to which a fresh branch is added. ACK/CANCEL must pass the INVITE's ``cseq``; others
        take the next local CSeq. Target-refresh methods carry our Contact."""
        if self.terminated and method != "ACK":
            raise LocalProtocolError(f"dialog is terminated: cannot send {method}")
        if method in ("ACK", "CANCEL"):
            if cseq is None:
                raise LocalProtocolError(f"{method} reuses the INVITE CSeq number: pass cseq=")
            seq = cseq
        else:
            seq = self.next_cseq() if cseq is None else cseq
        ruri, routes = self.request_target()
        local = self.local_uri.with_tag(self.id.local_tag)
        remote = (
            self.remote_uri.with_tag(self.id.remote_tag) if self.id.remote_tag else self.remote_uri
        )
        items: list[tuple[str, str]] = [
            ("Via", f"{via};branch={branch or new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", str(local)),
            ("To", str(remote)),
            ("Call-ID", self.id.call_id),
            ("CSeq", f"{seq} {method}"),
        ]
        items += [("Route", str(r)) for r in routes]
        if method in TARGET_REFRESH_METHODS and self.local_target is not None:
            items.append(("Contact", f"<{self.local_target}>"))
        items += list(extra)
        items.append(("Content-Length", str(len(body))))
        return Request(Headers(items), body, method=method, uri=ruri)

    def create_ack(self, invite: Request, *, via: str, body: bytes = b"") -> Request:
        """ACK for a 2xx to INVITE: a new transaction, same CSeq number, built like any
        in-dialog request (§13.2.2.4)."""
        return self.create_request("ACK", via=via, cseq=invite.cseq.seq, body=body)
