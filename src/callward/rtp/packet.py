"""RTP fixed header, CSRC list, header extensions and padding (RFC 3550 §5.1, §5.3.1) as pure
functions over bytes, plus the RTP/RTCP demultiplexer for rtcp-mux (RFC 5761 §4).

Header extensions are kept as raw ``(profile, data)`` so any profile round-trips byte-exactly;
:meth:`RtpExtension.elements` decodes the RFC 8285 one-byte (``0xBEDE``) and two-byte
(``0x100x``) forms on demand, because most packets are relayed without ever looking inside.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from callward.errors import MediaError

__all__ = [
    "MAX_RTP_SIZE",
    "ExtensionElement",
    "PayloadType",
    "RtpExtension",
    "RtpPacket",
    "is_rtcp",
    "parse_rtp",
]

#: Largest datagram we accept (UDP payload limit); callers may pass a smaller ``max_size``.
MAX_RTP_SIZE = 65535
_HEADER = struct.Struct("!BBHII")
#: RFC 8285 §4.2: the one-byte form's "defined by profile" value.
ONE_BYTE_PROFILE = 0xBEDE
#: RFC 8285 §4.3: two-byte form is 0x100 followed by 4 "appbits".
TWO_BYTE_PROFILE_MASK = 0xFFF0
TWO_BYTE_PROFILE = 0x1000


class PayloadType(IntEnum):
    """Static payload types (RFC 3551 §6) that callward uses; dynamic ones are 96-127."""

    PCMU = 0
    GSM = 3
    G723 = 4
    PCMA = 8
    G722 = 9
    CN = 13
    G729 = 18


@dataclass(frozen=True, slots=True)
class ExtensionElement:
    """One RFC 8285 element: local ``id`` and its ``data``."""

    id: int
    data: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.id <= 255:
            raise MediaError(f"RTP extension element id {self.id} out of range 1-255")
        if len(self.data) > 255:
            raise MediaError("RTP extension element longer than 255 bytes")


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """The header extension (RFC 3550 §5.3.1): 16-bit profile value plus 32-bit-aligned data."""

    profile: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.profile <= 0xFFFF:
            raise MediaError(f"RTP extension profile {self.profile} out of range")
        if len(self.data) % 4:
            raise MediaError("RTP extension data must be a multiple of 4 bytes (RFC 3550 §5.3.1)")
        if len(self.data) > 0xFFFF * 4:
            raise MediaError("RTP extension data too long")

    @property
    def is_one_byte(self) -> bool:
        return self.profile == ONE_BYTE_PROFILE

    @property
    def is_two_byte(self) -> bool:
        return self.profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE

    def elements(self) -> tuple[ExtensionElement, ...]:
        """Decode RFC 8285 elements; raise MediaError for other profiles or bad lengths."""
        data = self.data
        out: list[ExtensionElement] = []
        i = 0
        n = len(data)
        if self.is_one_byte:
            while i < n:
                b = data[i]
                if b == 0:  # §4.2: padding byte between/after elements
                    i += 1
                    continue
                ident, length = b >> 4, (b & 0x0F) + 1
                if ident == 15:  # §4.2: reserved, "stop parsing"
                    break
                if i + 1 + length > n:
                    raise MediaError("RFC 8285 one-byte element overruns the extension")
                out.append(ExtensionElement(ident, data[i + 1 : i + 1 + length]))
                i += 1 + length
        elif self.is_two_byte:
            while i < n:
                ident = data[i]
                if ident == 0:  # §4.3: padding
                    i += 1
                    continue
                if i + 2 > n:
                    raise MediaError("RFC 8285 two-byte element header truncated")
                length = data[i + 1]
                if i + 2 + length > n:
                    raise MediaError("RFC 8285 two-byte element overruns the extension")
                out.append(ExtensionElement(ident, data[i + 2 : i + 2 + length]))
                i += 2 + length
        else:
            raise MediaError(f"RTP extension profile {self.profile:#06x} is not RFC 8285")
        return tuple(out)

    @classmethod
    def from_elements(
        cls, elements: tuple[ExtensionElement, ...] | list[ExtensionElement], *, appbits: int = 0
    ) -> RtpExtension:
        """Encode elements, using the one-byte form when every element allows it (RFC 8285 §4.1:
        ids 1-14 and 1-16 bytes of data), else the two-byte form; zero-pad to 32 bits."""
        one_byte = all(1 <= e.id <= 14 and 1 <= len(e.data) <= 16 for e in elements)
        parts = bytearray()
        if one_byte:
            for e in elements:
                parts.append((e.id << 4) | (len(e.data) - 1))
                parts += e.data
            profile = ONE_BYTE_PROFILE
        else:
            for e in elements:
                parts += bytes((e.id, len(e.data)))
                parts += e.data
            profile = TWO_BYTE_PROFILE | (appbits & 0x0F)
        parts += b"\x00" * (-len(parts) % 4)
        return cls(profile, bytes(parts))


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """An RTP packet (RFC 3550 §5.1). ``padding`` is the total number of padding octets
    including the final count octet (0 means the P bit is clear); ``bytes(pkt)`` builds it."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise MediaError(f"RTP payload type {self.payload_type} out of range 0-127")
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise MediaError(f"RTP sequence number {self.sequence_number} out of range")
        if not 0 <= self.timestamp <= 0xFFFFFFFF:
            raise MediaError(f"RTP timestamp {self.timestamp} out of range")
        if not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise MediaError(f"RTP SSRC {self.ssrc} out of range")
        if len(self.csrc) > 15:
            raise MediaError("RTP CSRC list longer than 15 (RFC 3550 §5.1 CC is 4 bits)")
        for c in self.csrc:
            if not 0 <= c <= 0xFFFFFFFF:
                raise MediaError(f"RTP CSRC {c} out of range")
        if not 0 <= self.padding <= 255:
            raise MediaError(f"RTP padding length {self.padding} out of range 0-255")

    @property
    def header_size(self) -> int:
        ext = 0 if self.extension is None else 4 + len(self.extension.data)
        return 12 + 4 * len(self.csrc) + ext

    def __bytes__(self) -> bytes:
        first = 0x80 | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = self.payload_type | (0x80 if self.marker else 0)
        out = bytearray(
            _HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc)
        )
        for c in self.csrc:
            out += c.to_bytes(4, "big")
        if self.extension is not None:
            ext = self.extension
            out += struct.pack("!HH", ext.profile, len(ext.data) // 4)
            out += ext.data
        out += self.payload
        if self.padding:
            # RFC 3550 §5.1: the last octet counts the padding octets, itself included.
            out += b"\x00" * (self.padding - 1) + bytes((self.padding,))
        return bytes(out)


def parse_rtp(data: bytes, *, max_size: int = MAX_RTP_SIZE) -> RtpPacket:
    """Parse one RTP packet; raise MediaError when it is not valid RTP version 2."""
    n = len(data)
    if n > max_size:
        raise MediaError(f"RTP packet of {n} bytes exceeds the {max_size}-byte limit")
    if n < 12:
        raise MediaError(f"RTP packet of {n} bytes is shorter than the 12-byte header")
    first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise MediaError(f"RTP version {first >> 6} is not 2 (RFC 3550 §5.1)")
    cc = first & 0x0F
    pos = 12 + 4 * cc
    if pos > n:
        raise MediaError("RTP CSRC list overruns the packet")
    csrc = tuple(int.from_bytes(data[12 + 4 * i : 16 + 4 * i], "big") for i in range(cc))
    extension = None
    if first & 0x10:
        if pos + 4 > n:
            raise MediaError("RTP header extension header truncated")
        profile, words = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + 4 * words
        if end > n:
            raise MediaError("RTP header extension overruns the packet")
        extension = RtpExtension(profile, bytes(data[pos + 4 : end]))
        pos = end
    end = n
    padding = 0
    if first & 0x20:
        padding = data[-1]
        # RFC 3550 §5.1: the count includes itself, so 0 is invalid (A.1 validity check).
        if padding == 0 or pos + padding > n:
            raise MediaError(f"RTP padding count {padding} is invalid for this packet")
        end = n - padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=bytes(data[pos:end]),
        marker=bool(second & 0x80),
        csrc=csrc,
        extension=extension,
        padding=padding,
    )


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4 demultiplexing on a shared port: RTCP packet types 192-223 appear in RTP's
    marker+PT octet as payload types 64-95, which RTP must therefore never use."""
    return len(data) >= 2 and data[0] >> 6 == 2 and 64 <= (data[1] & 0x7F) <= 95
