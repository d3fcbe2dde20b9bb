"""STUN Binding (RFC 8489) for keep-alives and server-reflexive discovery, sans-IO.

The wire codec is aioice's (``aioice.stun``, the same one its ICE agent uses): this module adds
the limits and the error translation a hostile peer needs, and the three operations a phone
does with STUN outside ICE: build a Binding request, read the mapped address out of a
response, and answer a Binding request (what an edge does on its SIP UDP port, RFC 5626 §4.4.2).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from aioice import stun as _stun

from callward.errors import RemoteProtocolError

__all__ = [
    "MAGIC_COOKIE",
    "MAX_STUN_SIZE",
    "StunBinding",
    "binding_request",
    "binding_success",
    "is_stun",
    "parse_binding_response",
]

MAGIC_COOKIE = 0x2112A442  # RFC 8489 §5
MAX_STUN_SIZE = 1280  # we never need more; RFC 8489 §6.1 asks to fit the path MTU
BINDING_REQUEST_SIZE = 28  # header + FINGERPRINT: what a keep-alive puts on the wire (no IP/UDP)

Address = tuple[str, int]


def is_stun(data: bytes) -> bool:
    """RFC 7983 demultiplexing: first byte 0..3, magic cookie at offset 4, length % 4 == 0."""
    return (
        20 <= len(data) <= MAX_STUN_SIZE
        and data[0] < 4
        and int.from_bytes(data[4:8], "big") == MAGIC_COOKIE
        and int.from_bytes(data[2:4], "big") % 4 == 0
    )


@dataclass(frozen=True, slots=True)
class StunBinding:
    """A Binding request we sent: its transaction id (to match the response) and bytes."""

    transaction_id: bytes
    data: bytes


def binding_request(*, fingerprint: bool = True) -> StunBinding:
    """A Binding request (RFC 8489 §5) with a fresh 96-bit transaction id."""
    tid = secrets.token_bytes(12)
    msg = _stun.Message(_stun.Method.BINDING, _stun.Class.REQUEST, transaction_id=tid)
    if fingerprint:
        msg.add_fingerprint()
    return StunBinding(tid, bytes(msg))


def _parse(data: bytes) -> _stun.Message:
    if not is_stun(data):
        raise RemoteProtocolError(f"not a STUN message ({len(data)} bytes, RFC 7983 §7)")
    try:
        return _stun.parse_message(data)
    except Exception as exc:  # aioice raises ValueError, struct.error, IndexError, ...
        raise RemoteProtocolError(f"malformed STUN message: {exc}"[:120]) from None


def parse_binding_response(data: bytes, transaction_id: bytes) -> Address:
    """The XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS) of a Binding success response to our
    request; RemoteProtocolError for anything else (error responses, other transactions)."""
    msg = _parse(data)
    if msg.transaction_id != transaction_id:
        raise RemoteProtocolError("STUN response for another transaction")
    if msg.message_method != _stun.Method.BINDING or msg.message_class != _stun.Class.RESPONSE:
        raise RemoteProtocolError(
            f"STUN {msg.message_method.name} {msg.message_class.name} is not a Binding success"
        )
    mapped = msg.attributes.get("XOR-MAPPED-ADDRESS") or msg.attributes.get("MAPPED-ADDRESS")
    if mapped is None:
        raise RemoteProtocolError("STUN Binding response without a mapped address")
    host, port = mapped
    return str(host), int(port)


def binding_success(request: bytes, source: Address) -> bytes | None:
    """The Binding success response to a Binding request from ``source`` (None for anything
    else, which a server drops silently, RFC 8489 §6.3)."""
    try:
        msg = _parse(request)
    except RemoteProtocolError:
        return None
    if msg.message_method != _stun.Method.BINDING or msg.message_class != _stun.Class.REQUEST:
        return None
    resp = _stun.Message(
        _stun.Method.BINDING,
        _stun.Class.RESPONSE,
        transaction_id=msg.transaction_id,
        attributes={"XOR-MAPPED-ADDRESS": source},
    )
    resp.add_fingerprint()
    return bytes(resp)
