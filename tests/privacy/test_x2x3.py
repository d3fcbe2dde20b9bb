"""ETSI TS 103 221-2 X2/X3 PDUs: vectors built here byte by byte from the spec's tables (not
with the codec under test), precise rejections of each rule, round trips and fuzzing."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callward.errors import X2X3Error
from callward.privacy.x2x3 import (
    AttrType,
    Direction,
    PayloadFormat,
    Pdu,
    PduType,
    decode_pdu,
    encode_pdu,
    split_pdus,
)

XID = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
RTP = bytes([0x80, 0x00, 0x00, 0x01]) + (160).to_bytes(4, "big") + (9).to_bytes(4, "big")
RTP += b"\xd5" * 160
SIP = b"INVITE sip:+447700900666@ims.example SIP/2.0\r\nCall-ID: c-1\r\n\r\n"

# X3, RTP packet (payload format 8), sent from the target (direction 3), a Timestamp
# (type 9: seconds 1800000000 = 0x6B49D200, nanoseconds 500000000 = 0x1DCD6500) and a Sequence
# Number (type 8: 42). Header length 40 + 12 + 8 = 60 = 0x3C; payload 172 = 0xAC octets.
X3_RTP_HEX = (
    "0005" "0002" "0000003c" "000000ac" "0008" "0003"
    "6ba7b8109dad11d180b400c04fd430c8" "0102030405060708"
    "0009" "0008" "6b49d200" "1dcd6500"
    "0008" "0004" "0000002a"
)  # fmt: skip


def _tlv(typ: int, value: bytes) -> bytes:
    return struct.pack("!HH", typ, len(value)) + value


def _pdu(typ: int, fmt: int, direction: int, payload: bytes, attrs: bytes = b"",
         version: int = 5, hlen: int | None = None, plen: int | None = None) -> bytes:  # fmt: skip
    """A PDU assembled field by field per TS 103 221-2 §5.1 (independent of the codec)."""
    h = 40 + len(attrs) if hlen is None else hlen
    p = len(payload) if plen is None else plen
    return (struct.pack("!HHIIHH", version, typ, h, p, fmt, direction) + XID.bytes
            + (7).to_bytes(8, "big") + attrs + payload)  # fmt: skip


def test_x3_rtp_vector_decodes_field_by_field() -> None:
    pdu = decode_pdu(bytes.fromhex(X3_RTP_HEX) + RTP)
    assert (pdu.version, pdu.pdu_type, pdu.payload_format, pdu.direction) == (
        5, PduType.X3, PayloadFormat.RTP, Direction.FROM_TARGET)  # fmt: skip
    assert pdu.xid == XID and pdu.correlation == 0x0102030405060708
    assert pdu.timestamp() == 1_800_000_000.5 and pdu.sequence() == 42
    assert pdu.payload == RTP and pdu.header_length == 60 and pdu.length == 232
    assert encode_pdu(pdu) == bytes.fromhex(X3_RTP_HEX) + RTP  # byte-exact re-encoding


def test_keepalive_ack_as_openli_sends_it() -> None:
    # version 5, type 4, header = 40 + a Sequence Number TLV, no payload, format/direction 0
    raw = _pdu(4, 0, 0, b"", _tlv(8, (9).to_bytes(4, "big")))
    raw = raw[:16] + bytes(16) + bytes(8) + raw[40:]  # nil XID and correlation
    pdu = decode_pdu(raw)
    assert pdu.pdu_type is PduType.KEEPALIVE_ACK and pdu.sequence() == 9 and pdu.payload == b""


def test_x2_sip_with_repeated_target_identifiers() -> None:
    attrs = (_tlv(17, b"tel:+447700900666") + _tlv(18, b"sip:a@x") + _tlv(18, b"sip:b@y")
             + _tlv(10, bytes([192, 0, 2, 1])) + _tlv(14, (5060).to_bytes(2, "big"))
             + _tlv(16, b"\x11"))  # fmt: skip
    pdu = decode_pdu(_pdu(1, 9, 2, SIP, attrs))
    assert pdu.direction is Direction.TO_TARGET and pdu.payload_format is PayloadFormat.SIP
    assert [t for t, _ in pdu.attributes].count(AttrType.OTHER_TARGET_ID) == 2


REJECT = [
    (_pdu(2, 8, 3, RTP, version=4), "version 0x0004"),
    (_pdu(5, 8, 3, RTP), "PDU type: unknown code 5"),
    (_pdu(2, 0, 3, RTP), "payload format 0 is reserved for keepalives"),
    (_pdu(1, 9, 0, SIP), "payload direction 0 is reserved for keepalives"),
    (_pdu(2, 8, 6, RTP), "payload direction: unknown code 6"),
    (_pdu(2, 17, 3, RTP), "payload format: unknown code 17"),
    (_pdu(3, 0, 0, b"abc"), "KEEPALIVE PDU: payload length 3, expected 0"),
    (_pdu(3, 8, 0, b""), "expected 0 / 0"),
    (_pdu(2, 8, 3, b""), "empty payload"),
    (_pdu(2, 8, 3, RTP, _tlv(10, bytes(5))), "attribute 10 (source_ipv4): 5 octets, expected 4"),
    (_pdu(2, 8, 3, RTP, _tlv(13, bytes(4))), "(dest_ipv6): 4 octets, expected 16"),
    (_pdu(2, 8, 3, RTP, _tlv(9, struct.pack("!II", 1, 10**9))), "nanoseconds field >= 10^9"),
    (_pdu(2, 8, 3, RTP, _tlv(0, b"x")), "conditional attribute type: unknown code 0"),
    (_pdu(2, 8, 3, RTP, _tlv(23, b"x")), "conditional attribute type: unknown code 23"),
    (_pdu(2, 8, 3, RTP, _tlv(8, bytes(4)) + _tlv(8, bytes(4))), "present twice"),
    (_pdu(2, 8, 3, RTP, _tlv(6, b"")), "(network_function_id): empty"),
    (_pdu(2, 8, 3, RTP, _tlv(17, b"\xff\xfe")), "not UTF-8"),
    (_pdu(2, 8, 3, RTP, struct.pack("!HH", 8, 40) + bytes(4)), "runs past the header length"),
    (_pdu(2, 8, 3, RTP, b"\x00\x08"), "truncated TLV header"),
    (_pdu(2, 8, 3, RTP, hlen=39), "header length 39"),
    (_pdu(2, 8, 3, RTP, plen=len(RTP) + 1), "truncated (212 of 213 octets)"),
    (_pdu(2, 8, 3, b"\x40" + RTP[1:]), "not an RTP version 2 packet"),
    (_pdu(2, 8, 3, b"\x8f" + RTP[1:40]), "not an RTP version 2 packet"),  # 15 CSRCs promised
    (_pdu(1, 9, 2, b"hello world\r\n"), "no SIP request or status line"),
    (_pdu(1, 15, 5, b'{"a": 1}'), "no header block with Content-Type"),
    (b"\x00\x05\x00\x02", "truncated header (4 of 40 octets)"),
]


@pytest.mark.parametrize(("raw", "message"), REJECT, ids=[m for _, m in REJECT])
def test_malformed_pdus_are_rejected_naming_the_rule(raw: bytes, message: str) -> None:
    with pytest.raises(X2X3Error) as err:
        decode_pdu(raw)
    assert message in str(err.value)


def test_encoder_refuses_what_the_decoder_refuses() -> None:
    with pytest.raises(X2X3Error, match="reserved for keepalives"):
        Pdu(PduType.X3, PayloadFormat.RTP, Direction.KEEPALIVE, XID, 1, (), RTP)
    with pytest.raises(X2X3Error, match="expected 4"):
        Pdu(PduType.X3, PayloadFormat.RTP, Direction.UNKNOWN, XID, 1,
            ((AttrType.SEQUENCE_NUMBER, b"\x01"),), RTP)  # fmt: skip


_ATTR = st.one_of(
    st.tuples(st.just(AttrType.SEQUENCE_NUMBER), st.binary(min_size=4, max_size=4)),
    st.tuples(st.just(AttrType.SOURCE_IPV6), st.binary(min_size=16, max_size=16)),
    st.tuples(st.just(AttrType.OTHER_TARGET_ID), st.text(min_size=1, max_size=20).map(str.encode)),
    st.tuples(st.just(AttrType.PROPRIETARY), st.binary(max_size=30)),
)
_REPEATABLE = (AttrType.OTHER_TARGET_ID, AttrType.PROPRIETARY)


def _valid(fmt: PayloadFormat, d: Direction, attrs: list[tuple[AttrType, bytes]], corr: int,
           body: bytes) -> Pdu:  # fmt: skip
    once = {t: (t, v) for t, v in attrs if t not in _REPEATABLE}  # single-instance: last wins
    many = [(t, v) for t, v in attrs if t in _REPEATABLE]
    typ = PduType.X3 if fmt is PayloadFormat.RTP else PduType.X2
    payload = RTP[:12] + body if fmt is PayloadFormat.RTP else b"x" + body
    return Pdu(typ, fmt, d, XID, corr, (*once.values(), *many), payload)


_PDU = st.builds(
    _valid,
    st.sampled_from([PayloadFormat.RTP, PayloadFormat.PROPRIETARY, PayloadFormat.UNSTRUCTURED]),
    st.sampled_from([d for d in Direction if d is not Direction.KEEPALIVE]),
    st.lists(_ATTR, max_size=5),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=64),
)


@given(st.lists(_PDU, min_size=1, max_size=4), st.integers(1, 50))
def test_round_trip_and_stream_splitting(pdus: list[Pdu], chunk: int) -> None:
    stream = b"".join(encode_pdu(p) for p in pdus)
    got: list[Pdu] = []
    buf = b""
    for i in range(0, len(stream), chunk):  # TCP delivers any segmentation
        more, buf = split_pdus(buf + stream[i : i + chunk])
        got += more
    assert got == pdus and buf == b""


@given(st.binary(max_size=300))
def test_fuzz_decoder_only_raises_x2x3_error(data: bytes) -> None:
    try:
        decode_pdu(data)
    except X2X3Error:
        pass


@given(st.integers(0, 231), st.integers(0, 255))
def test_fuzz_single_byte_mutations_of_a_valid_pdu(pos: int, value: int) -> None:
    raw = bytearray(bytes.fromhex(X3_RTP_HEX) + RTP)
    raw[pos] = value
    try:
        pdu = decode_pdu(bytes(raw))
    except X2X3Error:
        return
    assert encode_pdu(pdu) == bytes(raw[: pdu.length])  # what it accepts, it re-encodes exactly


async def test_mediation_client_keepalive_and_ack() -> None:
    import asyncio

    from callward.privacy.mediation import MediationClient

    got: list[Pdu] = []

    async def mf(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        buf = b""
        while data := await r.read(65536):
            pdus, buf = split_pdus(buf + data)
            for p in pdus:
                got.append(p)
                if p.pdu_type is PduType.KEEPALIVE:  # answer as a mediation function does
                    ack = Pdu(PduType.KEEPALIVE_ACK, PayloadFormat.KEEPALIVE,
                              Direction.KEEPALIVE, p.xid, 0, p.attributes)  # fmt: skip
                    w.write(encode_pdu(ack))
                    await w.drain()

    server = await asyncio.start_server(mf, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = MediationClient("127.0.0.1", port, keepalive_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if client.keepalive_acks >= 2:
            break
    stop.set()
    await task
    server.close()
    kas = [p for p in got if p.pdu_type is PduType.KEEPALIVE]
    assert len(kas) >= 2 and [p.sequence() for p in kas[:2]] == [0, 1]
    assert client.keepalive_acks >= 2 and all(p.payload == b"" for p in kas)
