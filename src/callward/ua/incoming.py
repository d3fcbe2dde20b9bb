"""What the phone does with a request that opens or continues a dialog (RFC 3261 §8.2, §12.2.2).

A new INVITE becomes an incoming :class:`~callward.ua.call_handle.Call` (queued, or answered at
once with ``auto_answer``); an in-dialog INVITE, UPDATE, INFO (DTMF) or BYE goes to its call
after the dialog checks (481 unknown dialog, 500 old CSeq); CANCEL ends a ringing call with 487
(§9.2); OPTIONS is answered with our capabilities; anything else is 405 or 501 with ``Allow``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from callward.errors import LocalProtocolError, RemoteProtocolError
from callward.events import CallStarted
from callward.sip.message import Request, make_response
from callward.sip.transaction import TransactionKey
from callward.ua.call import ALLOW, CallLeg, CallState, new_tag
from callward.ua.call_handle import Call, Peer
from callward.ua.dtmf_info import respond as respond_info

if TYPE_CHECKING:
    from callward.ua.phone import Phone

__all__ = ["answer_statelessly", "route_request"]

# Methods we know but do not serve: 405 (§8.2.1) rather than 501.
_KNOWN_UNSUPPORTED = frozenset(
    {"REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER", "PRACK"}
)


def answer_statelessly(
    phone: Phone, key: TransactionKey, req: Request, status: int, **kw: Any
) -> None:
    """Answer ``req`` on its server transaction with a fresh To tag (no dialog is formed)."""
    extra = list(kw.pop("extra", ()))
    resp = make_response(req, status, to_tag=new_tag(), extra=extra, **kw)
    phone.layer.send_response(key, resp, phone.now())


def route_request(phone: Phone, req: Request, key: TransactionKey, peer: Peer) -> None:
    method = req.method
    if method == "INVITE" and req.to.tag is None:
        _new_call(phone, req, key, peer)
    elif method in ("INVITE", "BYE", "UPDATE", "INFO"):
        _in_dialog(phone, req, key)
    elif method == "CANCEL":
        _cancel(phone, req, key)
    elif method == "OPTIONS":
        extra = [("Allow", ALLOW), ("Accept", "application/sdp")]
        answer_statelessly(phone, key, req, 200, extra=extra)
    elif method in _KNOWN_UNSUPPORTED:
        answer_statelessly(phone, key, req, 405, extra=[("Allow", ALLOW)])
    else:
        answer_statelessly(phone, key, req, 501, extra=[("Allow", ALLOW)])


def _new_call(phone: Phone, req: Request, key: TransactionKey, peer: Peer) -> None:
    try:
        leg = CallLeg.incoming_invite(phone.local, req)
    except RemoteProtocolError as exc:
        reason = f"Bad Request - {exc}"[:120]
        answer_statelessly(phone, key, req, exc.status_hint, reason=reason)
        return
    call = Call(phone, leg, peer)
    call.server_key = key
    phone.calls[leg.call_id] = call
    phone._publish(
        CallStarted, call_id=leg.call_id, leg="b", caller=leg.remote_uri, callee=leg.local_uri
    )
    if phone.auto_answer:
        phone._spawn(_auto_answer(call))
    else:
        phone.incoming.put_nowait(call)


def _in_dialog(phone: Phone, req: Request, key: TransactionKey) -> None:
    call = phone.calls.get(req.call_id)
    if call is None:
        answer_statelessly(phone, key, req, 481)
        return
    try:
        call.leg.receive_in_dialog(req)  # §12.2.2: 481 unknown dialog, 500 old CSeq
    except RemoteProtocolError as exc:
        answer_statelessly(phone, key, req, exc.status_hint)
        return
    if req.method == "BYE":
        answer_statelessly(phone, key, req, 200)
        if call.leg.state is not CallState.TERMINATED:
            call.leg.on_bye("bye")
            phone._end(call)
    elif req.method == "UPDATE":
        call._on_update(req, key)
    elif req.method == "INFO":
        respond_info(call, req, key)  # DTMF key presses (application/dtmf-relay)
    else:
        call._on_reinvite(req, key)


def _cancel(phone: Phone, req: Request, key: TransactionKey) -> None:
    target = phone.layer.cancel_target(req)
    call = phone.calls.get(req.call_id)
    answer_statelessly(phone, key, req, 200 if target is not None else 481)
    if call is not None and call.state in (CallState.INCOMING, CallState.RINGING):
        # §9.2: answer the INVITE with 487, then the call is over.
        assert call.server_key is not None
        resp = make_response(call.leg.invite or req, 487, to_tag=call.leg.local_tag)
        phone.layer.send_response(call.server_key, resp, phone.now())
        call.leg.on_cancel()
        phone._end(call)


async def _auto_answer(call: Call) -> None:
    try:
        await call.ring()
        await call.answer()
    except LocalProtocolError:
        pass  # the caller cancelled (or the call ended) before we could answer
    except TimeoutError:
        pass  # no ACK: answer() already hung up
