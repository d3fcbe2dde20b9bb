# mypy: disable-error-code="misc"
# (mixin methods declare `self: EdgeCore`; mypy calls that a non-supertype self, which is the point)
"""Call tracking and RFC 4028 session timers for the edge proxy: CallStarted/Answered/Ended
events, 422 / Min-SE / Session-Expires insertion, the UAC made refresher when the UAS ignores
timers, and teardown of dialogs whose session interval passed without a refresh.

A mixin of :class:`callward.edge.proxy.EdgeCore` (methods take ``self: EdgeCore``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callward.edge.calls import CallState, parse_min_se, parse_session_expires, sdp_summary
from callward.edge.routing import (
    Target,
    make_branch,
)
from callward.errors import SipParseError
from callward.events import CallAnswered, CallEnded, CallStarted
from callward.sip.headers import parse_name_addr
from callward.sip.message import Headers, Request, Response
from callward.sip.uri import SipURI, parse_uri

if TYPE_CHECKING:
    from callward.edge.branches import Branch, ServerTx
    from callward.edge.proxy import EdgeCore

__all__ = ["UNSUPERVISED_CALL_LIMIT", "SessionMixin"]

# Calls without RFC 4028 supervision are forgotten after this long (seconds).
UNSUPERVISED_CALL_LIMIT = 12 * 3600.0


class SessionMixin:
    def _call_started(self: EdgeCore, st: ServerTx, req: Request, now: float) -> None:
        frm, to = req.from_.uri, req.uri
        caller = f"{frm.user}@{frm.host}" if isinstance(frm, SipURI) else str(frm)
        callee = f"{to.user}@{to.host}" if isinstance(to, SipURI) else str(to)
        inserted = st.call.inserted_se if st.call is not None else False
        contact = req.contacts[0].uri if req.contacts else None
        call = CallState(
            req.call_id,
            caller,
            callee,
            now,
            st.source,
            caller_contact=str(contact) if contact is not None else "",
            caller_from=req.headers.get("From") or "",
            invite_cseq=req.cseq.seq,
            inserted_se=inserted,
            uac_timer="timer" in {v.lower() for v in req.headers.values("Supported")},
        )
        st.call = call
        if req.call_id not in self._calls:
            self.metrics.calls_active.inc()
        self._calls[req.call_id] = call
        self._timer(now + UNSUPERVISED_CALL_LIMIT, "call", req.call_id)
        self._emit(
            CallStarted,
            now,
            call_id=req.call_id,
            caller=caller,
            callee=callee,
            sdp_summary=sdp_summary(req.body),
        )

    def _session_timer_request(
        self: EdgeCore, st: ServerTx, req: Request, sets: dict[str, str], now: float
    ) -> bool:
        """RFC 4028 §8.1: 422 below our Min-SE, raise Min-SE, insert Session-Expires."""
        s = self.settings
        se = parse_session_expires(req)
        if se is not None and se[0] < s.min_se:
            self._respond(st, 422, extra=[("Min-SE", str(s.min_se))])
            return False
        min_se = parse_min_se(req)
        if min_se is None or min_se < s.min_se:
            sets["Min-SE"] = str(s.min_se)
        if se is None and s.session_expires > 0:
            sets["Session-Expires"] = str(max(s.session_expires, s.min_se))
            st.call = CallState(req.call_id, "", "", now, st.source, inserted_se=True)
        return True

    def _call_answered(self: EdgeCore, st: ServerTx, b: Branch, resp: Response, now: float) -> None:
        call = self._calls.get(st.request.call_id)
        if call is None:
            return
        call.answered = True
        call.callee_peer = b.target.dest
        call.callee_contact = str(resp.contacts[0].uri) if resp.contacts else ""
        call.callee_to = resp.headers.get("To") or ""
        self._emit(CallAnswered, now, call_id=call.call_id, sdp_summary=sdp_summary(resp.body))
        self._refresh_session(call, resp, now)

    def _session_timer_response(self: EdgeCore, st: ServerTx, resp: Response) -> Response:
        """RFC 4028 §8.2: we asked for timers, the UAS ignored them, the UAC supports them:
        make the UAC the refresher so the session is still supervised."""
        call = self._calls.get(st.request.call_id)
        if call is None or not call.inserted_se or not call.uac_timer:
            return resp
        if "Session-Expires" in resp.headers:
            return resp
        se = max(self.settings.session_expires, self.settings.min_se)
        headers = resp.headers.append("Session-Expires", f"{se};refresher=uac")
        headers = headers.append("Require", "timer")
        return resp.replace(headers=headers)

    def _refresh_session(self: EdgeCore, call: CallState, resp: Response, now: float) -> None:
        se = parse_session_expires(resp)
        if se is None:
            return  # no UA will refresh: do not supervise (it would kill healthy calls)
        call.session_expires, call.refresher = se
        call.expires_at = now + se[0]
        self._timer(call.expires_at, "call", call.call_id)

    def _call_timer(self: EdgeCore, call_id: str, now: float) -> None:
        call = self._calls.get(call_id)
        if call is None:
            return
        if not call.session_expires:
            if now - call.started >= UNSUPERVISED_CALL_LIMIT:
                # No session timer and no BYE seen (peers that do not honour Record-Route
                # end calls directly): stop tracking so state and the gauge cannot leak.
                del self._calls[call_id]
                self.metrics.calls_active.dec()
                self._emit(CallEnded, now, call_id=call_id, status=200, reason="untracked")
            return
        if now < call.expires_at:
            return
        # RFC 4028 §10: no refresh within the interval: the session is dead. Tear it down.
        del self._calls[call_id]
        self.metrics.calls_active.dec()
        self.metrics.session_expired.inc()
        self._send_teardown(call, now)
        self._emit(CallEnded, now, call_id=call_id, status=200, reason="session-expired")

    def _send_teardown(self: EdgeCore, call: CallState, now: float) -> None:
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
        for contact, peer, from_na, to_na, cseq in legs:
            try:
                uri = parse_uri(contact)
            except SipParseError:
                continue
            bid = make_branch("0" * 16, f"bye{next(self._ids):x}")
            iface = self.local.iface(peer.transport) or self.local.listen[0]
            host = f"[{iface.host}]" if ":" in iface.host else iface.host
            items = [
                ("Via", f"SIP/2.0/{peer.transport.upper()} {host}:{iface.port};branch={bid}"),
                ("Max-Forwards", "70"),
                ("From", str(from_na)),
                ("To", str(to_na)),
                ("Call-ID", call.call_id),
                ("CSeq", f"{cseq} BYE"),
                ("Reason", 'SIP;cause=408;text="Session expired"'),
            ]
            bye = Request(Headers(items), b"", method="BYE", uri=uri)
            self._launch(bid, None, Target(None, peer, label="teardown"), bye, now)

    def session_refreshed(self: EdgeCore, req: Request, resp: Response, now: float) -> None:
        """Hook for in-dialog re-INVITE/UPDATE 2xx (called from the response path)."""
        call = self._calls.get(req.call_id)
        if call is not None:
            self._refresh_session(call, resp, now)
