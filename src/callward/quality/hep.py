"""HEPv3 (Homer Encapsulation Protocol v3) encode/decode, file reader and UDP receiver.

HEPv3 is a "HEP3" magic, a 16-bit total length, then chunks of (vendor id, type id, length
incl. the 6-byte chunk header, value). Generic chunk types used here (vendor 0):
1 IP family, 2 IP protocol, 3/4 IPv4 src/dst, 5/6 IPv6 src/dst, 7/8 ports, 9/10 ts s/µs,
11 protocol type (1 SIP, 5 RTCP, 34 RTP...), 12 capture agent id, 14 auth key,
15 payload, 17 correlation id. Unknown chunks are skipped (forward compatibility).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import cast

from callward.errors import CaptureError

__all__ = [
    "HepExporter",
    "HepMessage",
    "HepProto",
    "HepReceiver",
    "decode_hep",
    "encode_hep",
    "iter_hep_file",
    "rtcp_json",
    "rtcp_to_hep",
]

MAX_HEP = 65535


class HepProto(IntEnum):
    """HEP "protocol type" chunk (11) values."""

    SIP = 1
    RTCP = 5
    RTP = 34
    LOG = 100


@dataclass(frozen=True, slots=True)
class HepMessage:
    """One decoded HEPv3 packet."""

    src: str
    sport: int
    dst: str
    dport: int
    ts_ns: int
    proto_type: int
    payload: bytes
    ip_proto: int = 17
    capture_id: int = 0
    correlation_id: bytes = b""


def _chunk(ctype: int, value: bytes) -> bytes:
    if len(value) > MAX_HEP - 12:
        raise CaptureError(f"hep: chunk {ctype} of {len(value)} bytes exceeds 65535")
    return struct.pack("!HHH", 0, ctype, 6 + len(value)) + value


def encode_hep(msg: HepMessage, auth_key: bytes = b"") -> bytes:
    """Serialize ``msg`` as HEPv3; CaptureError if it does not fit 65535 bytes."""
    try:
        s = ipaddress.ip_address(msg.src)
        d = ipaddress.ip_address(msg.dst)
    except ValueError:
        raise CaptureError("hep: addresses must be IP literals") from None
    if s.version != d.version:
        raise CaptureError("hep: source and destination address families differ")
    v6 = s.version == 6
    sec, ns = divmod(msg.ts_ns, 1_000_000_000)
    parts = [
        _chunk(1, bytes([10 if v6 else 2])),
        _chunk(2, bytes([msg.ip_proto])),
        _chunk(5 if v6 else 3, s.packed),
        _chunk(6 if v6 else 4, d.packed),
        _chunk(7, struct.pack("!H", msg.sport)),
        _chunk(8, struct.pack("!H", msg.dport)),
        _chunk(9, struct.pack("!I", sec & 0xFFFFFFFF)),
        _chunk(10, struct.pack("!I", ns // 1000)),
        _chunk(11, bytes([msg.proto_type & 0xFF])),
        _chunk(12, struct.pack("!I", msg.capture_id)),
    ]
    if auth_key:
        parts.append(_chunk(14, auth_key))
    if msg.correlation_id:
        parts.append(_chunk(17, msg.correlation_id))
    parts.append(_chunk(15, msg.payload))
    body = b"".join(parts)
    total = 6 + len(body)
    if total > MAX_HEP:
        raise CaptureError(f"hep: message of {total} bytes exceeds 65535")
    return b"HEP3" + struct.pack("!H", total) + body


def decode_hep(data: bytes) -> HepMessage:
    """Parse one HEPv3 packet; CaptureError on anything malformed."""
    if len(data) < 6 or data[:4] != b"HEP3":
        raise CaptureError("hep: missing HEP3 magic")
    total = struct.unpack_from("!H", data, 4)[0]
    if total < 6 or total > len(data):
        raise CaptureError("hep: length field exceeds the packet")
    f: dict[int, bytes] = {}
    pos = 6
    while pos < total:
        if pos + 6 > total:
            raise CaptureError("hep: truncated chunk header")
        vendor, ctype, clen = struct.unpack_from("!HHH", data, pos)
        if clen < 6 or pos + clen > total:
            raise CaptureError("hep: chunk length out of range")
        if vendor == 0:
            f[ctype] = data[pos + 6 : pos + clen]
        pos += clen

    def need(t: int, n: int | None = None) -> bytes:
        v = f.get(t)
        if v is None or (n is not None and len(v) != n):
            raise CaptureError(f"hep: chunk {t} missing or of wrong size")
        return v

    fam = need(1, 1)[0]
    if fam == 2:
        src = str(ipaddress.IPv4Address(need(3, 4)))
        dst = str(ipaddress.IPv4Address(need(4, 4)))
    elif fam == 10:
        src = str(ipaddress.IPv6Address(need(5, 16)))
        dst = str(ipaddress.IPv6Address(need(6, 16)))
    else:
        raise CaptureError(f"hep: unknown address family {fam}")
    sec = struct.unpack("!I", need(9, 4))[0]
    usec = struct.unpack("!I", need(10, 4))[0]
    cid = f.get(12, b"")
    return HepMessage(
        src=src,
        sport=struct.unpack("!H", need(7, 2))[0],
        dst=dst,
        dport=struct.unpack("!H", need(8, 2))[0],
        ts_ns=sec * 1_000_000_000 + usec * 1000,
        proto_type=need(11, 1)[0],
        payload=need(15),
        ip_proto=f.get(2, b"\x11")[0] if f.get(2) else 17,
        capture_id=struct.unpack("!I", cid)[0] if len(cid) == 4 else 0,
        correlation_id=f.get(17, b""),
    )


def iter_hep_file(path: str | Path) -> Iterator[HepMessage]:
    """HEPv3 packets stored back to back in a file (as heplify's file output), streaming."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise CaptureError(f"cannot open HEP file {Path(path).name}: {exc.strerror}") from None
    with fh:
        while True:
            head = fh.read(6)
            if not head:
                return
            if len(head) < 6 or head[:4] != b"HEP3":
                raise CaptureError("hep file: bad magic or truncated header")
            total = struct.unpack_from("!H", head, 4)[0]
            rest = fh.read(total - 6) if total > 6 else b""
            if len(rest) != max(total - 6, 0):
                raise CaptureError("hep file: truncated packet")
            yield decode_hep(head + rest)


def sip_wire_to_hep(
    direction: str, data: bytes, local: tuple[str, int], remote: tuple[str, int],
    transport: str, ts_ns: int,
) -> HepMessage:  # fmt: skip
    """A SIP message a transport tap saw (``direction`` "in" or "out") as a HEPv3 SIP
    message: source and destination as on the wire, IP protocol UDP (17) or TCP (6)."""
    src, dst = (remote, local) if direction == "in" else (local, remote)
    ip_proto = 17 if transport.lower().startswith("udp") else 6
    return HepMessage(str(src[0]), int(src[1]), str(dst[0]), int(dst[1]), ts_ns, HepProto.SIP,
                      data, ip_proto)  # fmt: skip


def rtcp_json(plain: bytes) -> bytes | None:
    """An RTCP compound packet as the JSON Homer expects in a HEP type-5 payload (the
    heplify / rtpengine / Asterisk ``res_hep_rtcp`` rendering): the first SR or RR, its sender
    information and report blocks; None when the packet holds neither.

    ``type`` is 200 (SR) or 201 (RR); ``ia_jitter`` is in RTP timestamp units, ``lsr``/``dlsr``
    as on the wire (RFC 3550 §6.4.1)."""
    from callward.errors import MediaError
    from callward.rtp.rtcp import ReceiverReport, SenderReport, parse_rtcp

    try:
        packets = parse_rtcp(plain)
    except MediaError:
        return None
    for pkt in packets:
        if not isinstance(pkt, SenderReport | ReceiverReport):
            continue
        doc: dict[str, object] = {"ssrc": pkt.ssrc, "type": 201, "report_count": len(pkt.reports)}
        if isinstance(pkt, SenderReport):
            doc["type"] = 200
            doc["sender_information"] = {
                "ntp_timestamp_sec": pkt.ntp_timestamp >> 32,
                "ntp_timestamp_usec": pkt.ntp_timestamp & 0xFFFFFFFF,
                "rtp_timestamp": pkt.rtp_timestamp, "packets": pkt.packet_count,
                "octets": pkt.octet_count,
            }  # fmt: skip
        doc["report_blocks"] = [
            {"source_ssrc": b.ssrc, "fraction_lost": b.fraction_lost,
             "packets_lost": b.cumulative_lost, "highest_seq_no": b.highest_seq,
             "ia_jitter": b.jitter, "lsr": b.lsr, "dlsr": b.dlsr}
            for b in pkt.reports
        ]  # fmt: skip
        return json.dumps(doc, separators=(",", ":")).encode()
    return None


def rtcp_to_hep(
    plain: bytes, src: tuple[str, int], dst: tuple[str, int], ts_ns: int, call_id: str
) -> HepMessage | None:
    """A relayed RTCP packet as a HEPv3 RTCP message (type 5) correlated with its call by the
    Call-ID (chunk 17), so Homer shows the reports beside the call's SIP ladder."""
    body = rtcp_json(plain)
    if body is None:
        return None
    return HepMessage(str(src[0]), int(src[1]), str(dst[0]), int(dst[1]), ts_ns, HepProto.RTCP,
                      body, 17, correlation_id=call_id.encode())  # fmt: skip


class HepReceiver(asyncio.DatagramProtocol):
    """asyncio adapter: decode each received HEPv3 datagram and hand it to ``on_message``.

    Malformed datagrams are counted and dropped (a collector must survive garbage).
    """

    def __init__(self, on_message: Callable[[HepMessage], None]) -> None:
        self.on_message = on_message
        self.errors = 0
        self.received = 0

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            msg = decode_hep(data)
        except CaptureError:
            self.errors += 1
            return
        self.received += 1
        self.on_message(msg)

    @classmethod
    async def listen(
        cls, host: str, port: int, on_message: Callable[[HepMessage], None]
    ) -> tuple[asyncio.DatagramTransport, HepReceiver]:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: cls(on_message), local_addr=(host, port)
        )
        return transport, proto


class HepExporter(asyncio.DatagramProtocol):
    """asyncio adapter sending our SIP/RTCP to a Homer/heplify-server collector as HEPv3.

    Export is best effort (UDP, as every HEP agent does); oversize messages are counted and
    skipped rather than raised into the signalling path.
    """

    def __init__(self, capture_id: int = 0, auth_key: bytes = b"") -> None:
        self.capture_id = capture_id
        self.auth_key = auth_key
        self.transport: asyncio.DatagramTransport | None = None
        self.sent = 0
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def export(self, msg: HepMessage) -> None:
        if self.transport is None:
            self.dropped += 1
            return
        try:
            data = encode_hep(
                HepMessage(msg.src, msg.sport, msg.dst, msg.dport, msg.ts_ns, msg.proto_type,
                           msg.payload, msg.ip_proto, self.capture_id, msg.correlation_id),
                self.auth_key,
            )  # fmt: skip
        except CaptureError:
            self.dropped += 1
            return
        self.transport.sendto(data)
        self.sent += 1

    @classmethod
    async def connect(
        cls, host: str, port: int, capture_id: int = 0, auth_key: bytes = b""
    ) -> HepExporter:
        loop = asyncio.get_running_loop()
        _t, proto = await loop.create_datagram_endpoint(
            lambda: cls(capture_id, auth_key), remote_addr=(host, port)
        )
        return proto

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
