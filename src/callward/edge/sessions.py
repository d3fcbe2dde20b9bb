"""Dialog tracking at the edge: CallStarted/Answered/Ended events and RFC 4028 session timers.

The proxy is not a dialog party, but it sees every request and response that Record-Route
brings back through it: enough to emit call events, to insert Session-Expires / answer 422, to
make the UAC the refresher when the UAS ignores timers, and to tear down (BYE both ways) a
dialog whose session interval passed without a refresh. Calls the edge never sees end are
forgotten after :data:`UNSUPERVISED_CALL_LIMIT`, so the table is bounded by the call rate.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator

from callward.edge.calls import CallState, sdp_summary
from callward.edge.metrics import EdgeMetrics
from callward.edge.outbox import Outbox
from callward.edge.pending import Query
from callward.edge.routing import LocalIdentity, make_branch
from callward.edge.settings import EdgeSettings
from callward.errors import SipParseError
from callward.events import CallAnswered, CallEnded, CallStarted
from callward.sip.headers import parse_name_addr
from callward.sip.message import Headers, Request, Response
from callward.sip.peer import Peer
from callward.sip.transaction_layer import TransactionLayer
from callward.sip.uri import SipURI, parse_uri

__all__ = ["UNSUPERVISED_CALL_LIMIT", "DialogTracker"]

# Calls without RFC 4028 supervision are forgotten after this long (seconds).
UNSUPERVISED_CALL_LIMIT = 12 * 3600.0

Spawn = Callable[[Generator[Query, object, None]], None]


class DialogTracker:
    def __init__(
        self,
        settings: EdgeSettings,
        outbox: Outbox,
        metrics: EdgeMetrics,
        layer: TransactionLayer,
        local: Callable[[], LocalIdentity],
        on_end: Callable[[str, float], None] = lambda call_id, now: None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.metrics = metrics
        self.layer = layer
        self.local = local
        self.on_end = on_end  # the media hook's "call ended" (set by the core)
        self.calls: dict[str, CallState] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self.calls)

    def hidden_routes(self, call_id: str) -> tuple[str, ...]:
        call = self.calls.get(call_id)
        return call.hidden_routes if call is not None else ()

    def hide_routes(self, call_id: str, routes: tuple[str, ...]) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            call.hidden_routes = routes

    # ------------------------------------------------------------------ INVITE path
    def session_timer_request(self, req: Request, sets: dict[str, str]) -> tuple[int, bool]:
        """RFC 4028 §8.1: ``(422, _)`` below our Min-SE; else raise Min-SE and insert
        Session-Expires into ``sets``; the flag says we inserted it."""
        s = self.settings
        se = req.session_expires
        if se is not None and se[0] < s.min_se:
            return 422, False
        min_se = req.min_se
        if min_se is None or min_se < s.min_se:
            sets["Min-SE"] = str(s.min_se)
        if se is None and s.session_expires > 0:
            sets["Session-Expires"] = str(max(s.session_expires, s.min_se))
            return 0, True
        return 0, False

    def started(self, req: Request, source: Peer, inserted_se: bool, now: float) -> None:
        frm, to = req.from_.uri, req.uri
        caller = f"{frm.user}@{frm.host}" if isinstance(frm, SipURI) else str(frm)
        callee = f"{to.user}@{to.host}" if isinstance(to, SipURI) else str(to)
        contact = req.contacts[0].uri if req.contacts else None
        call = CallState(
            req.call_id,
            caller,
            callee,
            now,
            source,
            caller_contact=str(contact) if contact is not None else "",
            caller_from=req.headers.get("From") or "",
            invite_cseq=req.cseq.seq,
            inserted_se=inserted_se,
            uac_timer="timer" in {v.lower() for v in req.headers.values("Supported")},
        )
        if req.call_id not in self.calls:
            self.metrics.calls_active.inc()
        self.calls[req.call_id] = call
        self.outbox.at(now + UNSUPERVISED_CALL_LIMIT, self._timer, req.call_id)
        self.outbox.emit(
            CallStarted,
            now,
            call_id=req.call_id,
            caller=caller,
            callee=callee,
            sdp_summary=sdp_summary(req.body),
        )

    def session_timer_response(self, call_id: str, resp: Response) -> Response:
        """RFC 4028 §8.2: we asked for timers, the UAS ignored them, the UAC supports them:
        make the UAC the refresher so the session is still supervised."""
        call = self.calls.get(call_id)
        if call is None or not call.inserted_se or not call.uac_timer:
            return resp
        if "Session-Expires" in resp.headers:
            return resp
        se = max(self.settings.session_expires, self.settings.min_se)
        headers = resp.headers.append("Session-Expires", f"{se};refresher=uac")
        headers = headers.append("Require", "timer")
        return resp.replace(headers=headers)

    def answered(self, call_id: str, callee: Peer, resp: Response, now: float) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        call.answered = True
        call.callee_peer = callee
        call.callee_contact = str(resp.contacts[0].uri) if resp.contacts else ""
        call.callee_to = resp.headers.get("To") or ""
        self.outbox.emit(
            CallAnswered, now, call_id=call.call_id, sdp_summary=sdp_summary(resp.body)
        )
        self._refresh(call, resp, now)

    def refreshed(self, req: Request, resp: Response, now: float) -> None:
        """An in-dialog re-INVITE/UPDATE 2xx."""
        call = self.calls.get(req.call_id)
        if call is not None:
            self._refresh(call, resp, now)

    def ended(self, call_id: str, status: int, reason: str, now: float) -> None:
        """The call is over (BYE, failure, CANCEL): stop tracking, tell the world once."""
        if self.calls.pop(call_id, None) is None:
            return
        self.metrics.calls_active.dec()
        self.outbox.emit(CallEnded, now, call_id=call_id, status=status, reason=reason)
        self.on_end(call_id, now)

    # ------------------------------------------------------------------ timers
    def _refresh(self, call: CallState, resp: Response, now: float) -> None:
        se = resp.session_expires
        if se is None:
            return  # no UA will refresh: do not supervise (it would kill healthy calls)
        call.session_expires, call.refresher = se
        call.expires_at = now + se[0]
        self.outbox.at(call.expires_at, self._timer, call.call_id)

    def _timer(self, call_id: str, now: float) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        if not call.session_expires:
            if now - call.started >= UNSUPERVISED_CALL_LIMIT:
                # No session timer and no BYE seen (peers that do not honour Record-Route
                # end calls directly): stop tracking so state and the gauge cannot leak.
                self.ended(call_id, 200, "untracked", now)
            return
        if now < call.expires_at:
            return
        # RFC 4028 §10: no refresh within the interval: the session is dead. Tear it down.
        self.metrics.session_expired.inc()
        self._teardown(call, now)
        self.ended(call_id, 200, "session-expired", now)

    def _teardown(self, call: CallState, now: float) -> None:
        """Best-effort BYE to each party so phones and media relays free the call."""
        try:
            frm = parse_name_addr(call.caller_from)
            to = parse_name_addr(call.callee_to)
        except SipParseError:
            return
        legs = []
        if call.callee_peer is not None and call.callee_contact:
            legs.append((call.callee_contact, call.callee_peer, frm, to, call.invite_cseq + 1000))
        if call.caller_contact:
            legs.append((call.caller_contact, call.caller_peer, to, frm, 1_000_000))
        local = self.local()
        for contact, peer, from_na, to_na, cseq in legs:
            try:
                uri = parse_uri(contact)
            except SipParseError:
                continue
            bid = make_branch("0" * 16, f"bye{next(self._ids):x}")
            items = [
                ("Via", local.via(peer.transport, bid)),
                ("Max-Forwards", "70"),
                ("From", str(from_na)),
                ("To", str(to_na)),
                ("Call-ID", call.call_id),
                ("CSeq", f"{cseq} BYE"),
                ("Reason", 'SIP;cause=408;text="Session expired"'),
            ]
            bye = Request(Headers(items), b"", method="BYE", uri=uri)
            self.layer.send_request(bye, now, reliable=peer.reliable, peer=peer)
