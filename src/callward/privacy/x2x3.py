"""X2/X3 PDUs of ETSI TS 103 221-2 (§5): the wire format callward's IRI (X2) and content
(X3) leave in toward a mediation function. Pure functions; every decode is bounded and every
rejection is one :class:`~callward.errors.X2X3Error` line naming the field and the rule.

Layout (all integers big-endian)::

    Version (16) | PDU Type (16) | Header Length (32) | Payload Length (32)
    Payload Format (16) | Payload Direction (16) | XID (128) | Correlation ID (64)
    Conditional Attribute Fields (TLV: type 16, length 16, contents) ... | Payload

Header Length counts the 40 fixed octets *and* the conditional attributes. Code points follow
the TS 103 221-2 tables (the V1.4.1 ones, plus the payload formats 14-16 and attributes 19-22
of later versions):

* PDU types: 1 X2, 2 X3, 3 Keepalive, 4 Keepalive Acknowledgement.
* Payload format: 0 is reserved for keepalives; 1 TS 102 232-1, 2 TS 33.128, 3 TS 33.108,
  4 proprietary, 5 IPv4 packet, 6 IPv6 packet, 7 Ethernet frame, 8 RTP packet, 9 SIP message,
  10 DHCP, 11 RADIUS, 12 GTP-U, 13 MSRP, 14 EPSIRIContent, 15 MIME entity, 16 unstructured.
* Payload direction: 0 reserved for keepalives; 1 unknown, 2 sent to the target, 3 sent from
  the target, 4 more than one direction, 5 direction not applicable.

Rules checked on decode (and by construction on encode): the version callward speaks (5);
keepalives carry no payload, format 0 and direction 0, and X2/X3 PDUs never use those reserved
codes; every conditional attribute is a known type with its fixed size (sequence number 4,
timestamp 8 with nanoseconds < 10^9, IPv4 4, IPv6 16, ports 2, IP protocol 1), text attributes
are non-empty UTF-8, single-instance attributes appear once, and the TLVs fill the header
exactly; payloads of the formats callward sends are checked for their own shape (an RTP packet
is RFC 3550 version 2 with a 12-octet header, a SIP message starts with a request or status
line, a MIME entity has a header block with Content-Type).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from callward.errors import X2X3Error

__all__ = [
    "HEADER_BYTES",
    "VERSION",
    "AttrType",
    "Direction",
    "PayloadFormat",
    "Pdu",
    "PduType",
    "decode_pdu",
    "encode_pdu",
    "sequence_attr",
    "split_pdus",
    "timestamp_attr",
]

VERSION = 5
_FIXED = struct.Struct("!HHIIHH16s8s")
HEADER_BYTES = _FIXED.size  # 40
MAX_HEADER = 64 * 1024
MAX_PAYLOAD = 1 << 20


class PduType(IntEnum):
    X2 = 1
    X3 = 2
    KEEPALIVE = 3
    KEEPALIVE_ACK = 4


class PayloadFormat(IntEnum):
    KEEPALIVE = 0  # reserved for the keepalive mechanism
    ETSI_102232 = 1
    TS_33128 = 2
    TS_33108 = 3
    PROPRIETARY = 4
    IPV4 = 5
    IPV6 = 6
    ETHERNET = 7
    RTP = 8
    SIP = 9
    DHCP = 10
    RADIUS = 11
    GTP_U = 12
    MSRP = 13
    EPS_IRI = 14
    MIME = 15
    UNSTRUCTURED = 16


class Direction(IntEnum):
    KEEPALIVE = 0  # reserved for the keepalive mechanism
    UNKNOWN = 1
    TO_TARGET = 2
    FROM_TARGET = 3
    MULTIPLE = 4
    NOT_APPLICABLE = 5


class AttrType(IntEnum):
    ETSI_102232 = 1
    TS_33128 = 2
    TS_33108 = 3
    PROPRIETARY = 4
    DOMAIN_ID = 5
    NETWORK_FUNCTION_ID = 6
    INTERCEPTION_POINT_ID = 7
    SEQUENCE_NUMBER = 8
    TIMESTAMP = 9
    SOURCE_IPV4 = 10
    DEST_IPV4 = 11
    SOURCE_IPV6 = 12
    DEST_IPV6 = 13
    SOURCE_PORT = 14
    DEST_PORT = 15
    IP_PROTOCOL = 16
    MATCHED_TARGET_ID = 17
    OTHER_TARGET_ID = 18
    MIME_CONTENT_TYPE = 19
    MIME_CONTENT_TRANSFER_ENCODING = 20
    ADDITIONAL_XID_INFO = 21
    SDP_SESSION_DESCRIPTION = 22


_FIXED_SIZE = {
    AttrType.SEQUENCE_NUMBER: 4, AttrType.TIMESTAMP: 8, AttrType.SOURCE_IPV4: 4,
    AttrType.DEST_IPV4: 4, AttrType.SOURCE_IPV6: 16, AttrType.DEST_IPV6: 16,
    AttrType.SOURCE_PORT: 2, AttrType.DEST_PORT: 2, AttrType.IP_PROTOCOL: 1,
}  # fmt: skip
_TEXT = frozenset({
    AttrType.DOMAIN_ID, AttrType.NETWORK_FUNCTION_ID, AttrType.INTERCEPTION_POINT_ID,
    AttrType.MATCHED_TARGET_ID, AttrType.OTHER_TARGET_ID, AttrType.MIME_CONTENT_TYPE,
    AttrType.MIME_CONTENT_TRANSFER_ENCODING, AttrType.SDP_SESSION_DESCRIPTION,
})  # fmt: skip
# attributes a PDU may carry several times (target identifiers, opaque standard-defined ones)
_MULTI = frozenset({
    AttrType.ETSI_102232, AttrType.TS_33128, AttrType.TS_33108, AttrType.PROPRIETARY,
    AttrType.MATCHED_TARGET_ID, AttrType.OTHER_TARGET_ID, AttrType.ADDITIONAL_XID_INFO,
})  # fmt: skip
_E = TypeVar("_E", bound=IntEnum)
_KEEPALIVES = (PduType.KEEPALIVE, PduType.KEEPALIVE_ACK)
_SIP_METHOD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class Pdu:
    """One decoded, validated X2/X3 PDU. ``attributes`` keep wire order."""

    pdu_type: PduType
    payload_format: PayloadFormat
    direction: Direction
    xid: uuid.UUID
    correlation: int
    attributes: tuple[tuple[AttrType, bytes], ...] = ()
    payload: bytes = b""
    version: int = VERSION

    def __post_init__(self) -> None:
        _check_codes(self.pdu_type, self.payload_format, self.direction, len(self.payload))
        seen: set[AttrType] = set()
        for typ, value in self.attributes:
            _check_attribute(typ, value, seen)
        _check_payload(self.payload_format, self.payload)
        if not 0 <= self.correlation < 1 << 64:
            raise X2X3Error("X2/X3 correlation id: expected 0 .. 2^64-1")

    @property
    def length(self) -> int:
        return self.header_length + len(self.payload)

    @property
    def header_length(self) -> int:
        return HEADER_BYTES + sum(4 + len(v) for _, v in self.attributes)

    def attribute(self, typ: AttrType) -> bytes | None:
        for t, v in self.attributes:
            if t is typ:
                return v
        return None

    def timestamp(self) -> float | None:
        raw = self.attribute(AttrType.TIMESTAMP)
        if raw is None:
            return None
        sec, nsec = struct.unpack("!II", raw)
        return float(sec + nsec / 1e9)

    def sequence(self) -> int | None:
        raw = self.attribute(AttrType.SEQUENCE_NUMBER)
        return None if raw is None else int.from_bytes(raw, "big")


def timestamp_attr(ts: float) -> tuple[AttrType, bytes]:
    """The Timestamp attribute: 32-bit seconds and 32-bit nanoseconds since the epoch."""
    sec = int(ts)
    nsec = min(round((ts - sec) * 1e9), 999_999_999)
    return AttrType.TIMESTAMP, struct.pack("!II", sec & 0xFFFFFFFF, nsec)


def sequence_attr(n: int) -> tuple[AttrType, bytes]:
    return AttrType.SEQUENCE_NUMBER, (n & 0xFFFFFFFF).to_bytes(4, "big")


def _check_codes(typ: PduType, fmt: PayloadFormat, direction: Direction, plen: int) -> None:
    if typ in _KEEPALIVES:
        if plen:
            raise X2X3Error(f"X2/X3 {typ.name} PDU: payload length {plen}, expected 0")
        if fmt is not PayloadFormat.KEEPALIVE or direction is not Direction.KEEPALIVE:
            raise X2X3Error(
                f"X2/X3 {typ.name} PDU: payload format {int(fmt)} / direction {int(direction)},"
                " expected 0 / 0 (reserved for keepalives)"
            )
        return
    if fmt is PayloadFormat.KEEPALIVE:
        raise X2X3Error(f"X2/X3 {typ.name} PDU: payload format 0 is reserved for keepalives")
    if direction is Direction.KEEPALIVE:
        raise X2X3Error(f"X2/X3 {typ.name} PDU: payload direction 0 is reserved for keepalives")
    if plen == 0:
        raise X2X3Error(f"X2/X3 {typ.name} PDU: empty payload")


def _check_attribute(typ: AttrType, value: bytes, seen: set[AttrType]) -> None:
    name = f"X2/X3 attribute {int(typ)} ({typ.name.lower()})"
    if typ not in _MULTI:
        if typ in seen:
            raise X2X3Error(f"{name}: present twice (single-instance attribute)")
        seen.add(typ)
    if len(value) > 0xFFFF:
        raise X2X3Error(f"{name}: longer than 65535 octets")
    size = _FIXED_SIZE.get(typ)
    if size is not None and len(value) != size:
        raise X2X3Error(f"{name}: {len(value)} octets, expected {size}")
    if typ is AttrType.TIMESTAMP and int.from_bytes(value[4:], "big") >= 1_000_000_000:
        raise X2X3Error(f"{name}: nanoseconds field >= 10^9")
    if typ in _TEXT:
        if not value:
            raise X2X3Error(f"{name}: empty")
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise X2X3Error(f"{name}: not UTF-8") from None


def _check_payload(fmt: PayloadFormat, payload: bytes) -> None:
    if fmt is PayloadFormat.RTP:
        # RFC 3550 §5.1: version 2, 12 fixed octets plus 4 per CSRC
        if len(payload) < 12 or payload[0] >> 6 != 2 or len(payload) < 12 + 4 * (payload[0] & 15):
            raise X2X3Error("X2/X3 payload format 8 (RTP): not an RTP version 2 packet")
    elif fmt is PayloadFormat.SIP:
        first = payload.split(b"\r\n", 1)[0]
        is_status = first.startswith(b"SIP/2.0 ")
        method = first.split(b" ", 1)[0]
        is_request = bool(method) and set(method) <= _SIP_METHOD and first.endswith(b" SIP/2.0")
        if not (is_status or is_request):
            raise X2X3Error("X2/X3 payload format 9 (SIP): no SIP request or status line")
    elif fmt is PayloadFormat.MIME:
        head, sep, _ = payload.partition(b"\r\n\r\n")
        if not sep or b"content-type:" not in head.lower():
            raise X2X3Error("X2/X3 payload format 15 (MIME): no header block with Content-Type")


def encode_pdu(pdu: Pdu) -> bytes:
    """The wire form of a (validated) PDU."""
    if len(pdu.payload) > MAX_PAYLOAD or pdu.header_length > MAX_HEADER:
        raise X2X3Error("X2/X3 PDU: larger than this implementation's limits")
    attrs = b"".join(struct.pack("!HH", t, len(v)) + v for t, v in pdu.attributes)
    fixed = _FIXED.pack(
        pdu.version, pdu.pdu_type, pdu.header_length, len(pdu.payload), pdu.payload_format,
        pdu.direction, pdu.xid.bytes, pdu.correlation.to_bytes(8, "big"),
    )  # fmt: skip
    return fixed + attrs + pdu.payload


def _enum(cls: type[_E], value: int, what: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        raise X2X3Error(f"X2/X3 {what}: unknown code {value}") from None


def decode_pdu(data: bytes | memoryview) -> Pdu:
    """The first PDU in ``data`` (more may follow: see :func:`split_pdus`); X2X3Error when it
    is truncated or breaks a TS 103 221-2 rule."""
    data = bytes(data[: MAX_HEADER + MAX_PAYLOAD])
    if len(data) < HEADER_BYTES:
        raise X2X3Error(f"X2/X3 PDU: truncated header ({len(data)} of {HEADER_BYTES} octets)")
    ver, typ, hlen, plen, fmt, direction, xid, corr = _FIXED.unpack_from(data)
    if ver != VERSION:
        raise X2X3Error(f"X2/X3 version {ver:#06x}: only {VERSION:#06x} is spoken here")
    if hlen < HEADER_BYTES or hlen > MAX_HEADER:
        raise X2X3Error(f"X2/X3 header length {hlen}: expected {HEADER_BYTES} .. {MAX_HEADER}")
    if plen > MAX_PAYLOAD:
        raise X2X3Error(f"X2/X3 payload length {plen}: over the {MAX_PAYLOAD}-octet limit")
    if len(data) < hlen + plen:
        raise X2X3Error(f"X2/X3 PDU: truncated ({len(data)} of {hlen + plen} octets)")
    attrs: list[tuple[AttrType, bytes]] = []
    pos = HEADER_BYTES
    while pos < hlen:
        if hlen - pos < 4:
            raise X2X3Error(f"X2/X3 conditional attribute at octet {pos}: truncated TLV header")
        atype, alen = struct.unpack_from("!HH", data, pos)
        if pos + 4 + alen > hlen:
            raise X2X3Error(
                f"X2/X3 conditional attribute {atype} at octet {pos}: length {alen} runs past"
                f" the header length {hlen}"
            )
        attrs.append((_enum(AttrType, atype, "conditional attribute type"),
                      data[pos + 4 : pos + 4 + alen]))  # fmt: skip
        pos += 4 + alen
    return Pdu(
        _enum(PduType, typ, "PDU type"), _enum(PayloadFormat, fmt, "payload format"),
        _enum(Direction, direction, "payload direction"), uuid.UUID(bytes=xid),
        int.from_bytes(corr, "big"), tuple(attrs), data[hlen : hlen + plen], ver,
    )  # fmt: skip


def split_pdus(buffer: bytes) -> tuple[list[Pdu], bytes]:
    """The complete PDUs at the start of a TCP stream buffer and the unparsed rest."""
    out: list[Pdu] = []
    while len(buffer) >= HEADER_BYTES:
        hlen, plen = struct.unpack_from("!II", buffer, 4)
        if len(buffer) < hlen + plen and hlen <= MAX_HEADER and plen <= MAX_PAYLOAD:
            break
        pdu = decode_pdu(buffer)
        out.append(pdu)
        buffer = buffer[pdu.length :]
    return out, buffer
