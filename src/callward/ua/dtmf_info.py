"""DTMF over SIP INFO in a call (the ``application/dtmf-relay`` body Cisco and Asterisk use,
``rtp/dtmf.py``'s :class:`~callward.rtp.dtmf.DtmfRelayBody`): what a phone sends when the peer
takes key presses in signalling, and what it accepts from one. Bad bodies get 400, other
content types 415 with ``Accept`` (RFC 3261 §21.4.13); an empty INFO is a 200 (RFC 6086 §4.2.2
keeps bodiless INFO legal)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from callward.errors import MediaError
from callward.rtp.dtmf import DtmfRelayBody
from callward.sip.message import Request, Response, make_response
from callward.ua.call import USER_AGENT, CallLeg, CallState

if TYPE_CHECKING:
    from callward.sip.transaction import TransactionKey
    from callward.ua.call_handle import Call

__all__ = ["DTMF_RELAY", "answer_info", "make_info", "respond"]

DTMF_RELAY = "application/dtmf-relay"


def make_info(leg: CallLeg, digit: str, duration_ms: int = 160) -> Request:
    """An in-dialog INFO carrying one key press (ValueError/MediaError for a bad digit)."""
    if leg.dialog is None or leg.state is not CallState.CONFIRMED:
        raise MediaError(f"DTMF needs a confirmed call, not {leg.state.value}")
    body = bytes(DtmfRelayBody(digit, duration_ms))
    extra = [("Content-Type", DTMF_RELAY), ("User-Agent", USER_AGENT)]
    return leg.dialog.create_request("INFO", via=leg._via(), body=body, extra=extra)


def answer_info(call: Call, req: Request) -> Response:
    """Our response to their INFO; a key press is queued on ``call.dtmf_received``."""
    if not req.body:
        return make_response(req, 200)
    kind = (req.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if kind != DTMF_RELAY:
        return make_response(req, 415, extra=[("Accept", DTMF_RELAY)])
    try:
        relay = DtmfRelayBody.parse(req.body)
    except MediaError as exc:
        return make_response(req, 400, reason=f"Bad dtmf-relay - {exc}"[:100])
    call.dtmf_received.put_nowait(relay.digit)
    return make_response(req, 200)


def respond(call: Call, req: Request, key: TransactionKey) -> None:
    phone = call.phone
    phone.layer.send_response(key, answer_info(call, req), phone.now())
    phone._pump()
