"""The stateless reply to a message that failed strict parsing (RFC 3261 §8.2.6, §21.4.1),
shared by every transport and by the edge core. Sans-IO."""

from __future__ import annotations

import secrets

from callward.errors import SipParseError
from callward.sip.message import REASON_PHRASES, Request, make_response
from callward.sip.parser import ParseLimits, parse_message

__all__ = ["bad_request_reply"]


def bad_request_reply(data: bytes, error: SipParseError, limits: ParseLimits) -> bytes | None:
    """The response to send for a message that failed strict parsing, or None to drop it.

    Only a request whose Via, From and To parse (leniently) and that has a Call-ID and a CSeq
    can be answered (§8.2.6.2 copies them); never an ACK (§17.2.1) nor a response (§18.1.2). An
    oversized message (413/513) is answered from its header section alone (§21.4.14)."""
    if error.status_hint in (413, 513):
        end = data.find(b"\r\n\r\n")
        data = data[: end + 4] if 0 <= end < limits.max_message_bytes else b""
    try:
        msg = parse_message(data, strict=False, limits=limits)
        if not isinstance(msg, Request) or msg.method == "ACK":
            return None
        msg.top_via  # noqa: B018 - each must parse for the reply to be routable
        msg.from_  # noqa: B018
        msg.to  # noqa: B018
        if not msg.call_id or not msg.headers.get("CSeq"):
            return None  # a malformed CSeq is copied as it is (§8.2.6.2): it may be the error
    except (SipParseError, ValueError):
        return None
    status = error.status_hint if 400 <= error.status_hint <= 699 else 400
    reason = error.reason_phrase
    if status != 400:
        reason = REASON_PHRASES.get(status, "Bad Request") + reason.removeprefix("Bad Request")
    return bytes(make_response(msg, status, reason, to_tag=secrets.token_hex(6)))
