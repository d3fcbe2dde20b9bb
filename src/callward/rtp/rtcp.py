"""RTCP packets (RFC 3550 §6.4-6.7) and the XR VoIP Metrics block (RFC 3611 §4.7), parsed from
and built into compound packets (RFC 3550 §6.1).

Packet types we do not model (RTPFB/PSFB feedback, other XR blocks) are kept as raw bytes so a
relay can forward a compound packet unchanged after looking at the reports it understands.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from callward.errors import MediaError

__all__ = [
    "MAX_RTCP_SIZE",
    "App",
    "Bye",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "RtcpType",
    "Sdes",
    "SdesChunk",
    "SdesItem",
    "SdesType",
    "SenderReport",
    "UnknownRtcp",
    "VoipMetrics",
    "XrBlock",
    "XrPacket",
    "ntp_middle32",
    "parse_rtcp",
    "serialize_rtcp",
]

MAX_RTCP_SIZE = 65535
_HDR = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IIIII")  # NTP msw, NTP lsw, RTP ts, packet count, octet count
_BLOCK = struct.Struct("!IIIIII")
_VOIP = struct.Struct("!IBBBBHHHHBBBBBBBBBBHHH")


class RtcpType(IntEnum):
    """RTCP packet types (RFC 3550 §12.1, RFC 4585, RFC 3611)."""

    SR = 200
    RR = 201
    SDES = 202
    BYE = 203
    APP = 204
    RTPFB = 205
    PSFB = 206
    XR = 207


class SdesType(IntEnum):
    """SDES item types (RFC 3550 §6.5)."""

    END = 0
    CNAME = 1
    NAME = 2
    EMAIL = 3
    PHONE = 4
    LOC = 5
    TOOL = 6
    NOTE = 7
    PRIV = 8


def _u32(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise MediaError(f"RTCP {name} {value} out of 32-bit range")


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp: the LSR field (RFC 3550 §6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """Reception report block (RFC 3550 §6.4.1). ``cumulative_lost`` is signed 24-bit
    (duplicates can make it negative); ``jitter`` is in RTP timestamp units; ``lsr`` is the
    middle 32 bits of the last SR's NTP time, ``dlsr`` in units of 1/65536 s."""

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_seq: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    def __post_init__(self) -> None:
        for name in ("ssrc", "highest_seq", "jitter", "lsr", "dlsr"):
            _u32(name, getattr(self, name))
        if not 0 <= self.fraction_lost <= 255:
            raise MediaError(f"RTCP fraction lost {self.fraction_lost} out of range 0-255")
        if not -(1 << 23) <= self.cumulative_lost < (1 << 23):
            raise MediaError(f"RTCP cumulative lost {self.cumulative_lost} out of 24-bit range")

    def pack(self) -> bytes:
        lost = ((self.fraction_lost << 24) | (self.cumulative_lost & 0xFFFFFF)) & 0xFFFFFFFF
        return _BLOCK.pack(self.ssrc, lost, self.highest_seq, self.jitter, self.lsr, self.dlsr)

    @classmethod
    def unpack(cls, data: bytes, pos: int) -> ReportBlock:
        ssrc, lost, hseq, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        cum = lost & 0xFFFFFF
        if cum & 0x800000:
            cum -= 1 << 24
        return cls(ssrc, lost >> 24, cum, hseq, jitter, lsr, dlsr)


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (RFC 3550 §6.4.1). ``ntp_timestamp`` is the full 64-bit NTP time."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    profile_extension: bytes = b""

    def __post_init__(self) -> None:
        for name in ("ssrc", "rtp_timestamp", "packet_count", "octet_count"):
            _u32(name, getattr(self, name))
        if not 0 <= self.ntp_timestamp < 1 << 64:
            raise MediaError("RTCP NTP timestamp out of 64-bit range")
        if len(self.reports) > 31:
            raise MediaError("RTCP SR carries at most 31 report blocks")
        if len(self.profile_extension) % 4:
            raise MediaError("RTCP profile extension must be a multiple of 4 bytes")


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (RFC 3550 §6.4.2)."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    profile_extension: bytes = b""

    def __post_init__(self) -> None:
        _u32("ssrc", self.ssrc)
        if len(self.reports) > 31:
            raise MediaError("RTCP RR carries at most 31 report blocks")
        if len(self.profile_extension) % 4:
            raise MediaError("RTCP profile extension must be a multiple of 4 bytes")


@dataclass(frozen=True, slots=True)
class SdesItem:
    type: int
    value: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.type <= 255:
            raise MediaError(f"SDES item type {self.type} out of range 1-255")
        if len(self.value) > 255:
            raise MediaError("SDES item longer than 255 bytes")


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[SdesItem, ...] = ()

    def __post_init__(self) -> None:
        _u32("ssrc", self.ssrc)

    @property
    def cname(self) -> str | None:
        for item in self.items:
            if item.type == SdesType.CNAME:
                return item.value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class Sdes:
    """SDES (RFC 3550 §6.5)."""

    chunks: tuple[SdesChunk, ...] = ()

    def __post_init__(self) -> None:
        if len(self.chunks) > 31:
            raise MediaError("RTCP SDES carries at most 31 chunks")


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (RFC 3550 §6.6)."""

    ssrcs: tuple[int, ...] = ()
    reason: bytes = b""

    def __post_init__(self) -> None:
        if len(self.ssrcs) > 31:
            raise MediaError("RTCP BYE carries at most 31 sources")
        for s in self.ssrcs:
            _u32("ssrc", s)
        if len(self.reason) > 255:
            raise MediaError("RTCP BYE reason longer than 255 bytes")


@dataclass(frozen=True, slots=True)
class App:
    """APP (RFC 3550 §6.7): 5-bit subtype, 4-octet ASCII name, data in 32-bit words."""

    ssrc: int
    name: bytes
    subtype: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        _u32("ssrc", self.ssrc)
        if len(self.name) != 4:
            raise MediaError("RTCP APP name must be exactly 4 octets")
        if not 0 <= self.subtype <= 31:
            raise MediaError("RTCP APP subtype out of range 0-31")
        if len(self.data) % 4:
            raise MediaError("RTCP APP data must be a multiple of 4 bytes")


@dataclass(frozen=True, slots=True)
class VoipMetrics:
    """XR VoIP Metrics report block (RFC 3611 §4.7, BT=7). Fields keep their wire encodings:
    rates in 1/256, durations/delays in ms, levels in signed dB, MOS x10, 127 = unavailable."""

    ssrc: int
    loss_rate: int = 0
    discard_rate: int = 0
    burst_density: int = 0
    gap_density: int = 0
    burst_duration: int = 0
    gap_duration: int = 0
    round_trip_delay: int = 0
    end_system_delay: int = 0
    signal_level: int = 127
    noise_level: int = 127
    rerl: int = 127
    gmin: int = 16
    r_factor: int = 127
    ext_r_factor: int = 127
    mos_lq: int = 127
    mos_cq: int = 127
    rx_config: int = 0
    jb_nominal: int = 0
    jb_maximum: int = 0
    jb_abs_max: int = 0

    BLOCK_TYPE = 7

    def __post_init__(self) -> None:
        _u32("ssrc", self.ssrc)
        for name in ("loss_rate", "discard_rate", "burst_density", "gap_density", "rerl", "gmin"):
            if not 0 <= getattr(self, name) <= 255:
                raise MediaError(f"XR VoIP metric {name} out of 8-bit range")
        for name in ("r_factor", "ext_r_factor", "mos_lq", "mos_cq", "rx_config"):
            if not 0 <= getattr(self, name) <= 255:
                raise MediaError(f"XR VoIP metric {name} out of 8-bit range")
        for name in ("signal_level", "noise_level"):
            if not -128 <= getattr(self, name) <= 127:
                raise MediaError(f"XR VoIP metric {name} out of signed 8-bit range")
        for name in (
            "burst_duration",
            "gap_duration",
            "round_trip_delay",
            "end_system_delay",
            "jb_nominal",
            "jb_maximum",
            "jb_abs_max",
        ):
            if not 0 <= getattr(self, name) <= 0xFFFF:
                raise MediaError(f"XR VoIP metric {name} out of 16-bit range")

    def pack_body(self) -> bytes:
        return _VOIP.pack(
            self.ssrc,
            self.loss_rate,
            self.discard_rate,
            self.burst_density,
            self.gap_density,
            self.burst_duration,
            self.gap_duration,
            self.round_trip_delay,
            self.end_system_delay,
            self.signal_level & 0xFF,
            self.noise_level & 0xFF,
            self.rerl,
            self.gmin,
            self.r_factor,
            self.ext_r_factor,
            self.mos_lq,
            self.mos_cq,
            self.rx_config,
            0,
            self.jb_nominal,
            self.jb_maximum,
            self.jb_abs_max,
        )

    @classmethod
    def unpack_body(cls, body: bytes) -> VoipMetrics:
        if len(body) != _VOIP.size:
            raise MediaError(f"XR VoIP Metrics block body is {len(body)} bytes, expected 32")
        v = _VOIP.unpack(body)
        sig = v[9] - 256 if v[9] > 127 else v[9]
        noise = v[10] - 256 if v[10] > 127 else v[10]
        return cls(
            v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], sig, noise,
            v[11], v[12], v[13], v[14], v[15], v[16], v[17], v[19], v[20], v[21],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class XrBlock:
    """An XR report block we do not model: block type, type-specific byte, raw body."""

    block_type: int
    type_specific: int = 0
    body: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.block_type <= 255 or not 0 <= self.type_specific <= 255:
            raise MediaError("XR block type / type-specific out of 8-bit range")
        if len(self.body) % 4 or len(self.body) > 0xFFFF * 4:
            raise MediaError("XR block body must be a multiple of 4 bytes")


@dataclass(frozen=True, slots=True)
class XrPacket:
    """XR (RFC 3611 §2)."""

    ssrc: int
    blocks: tuple[VoipMetrics | XrBlock, ...] = ()

    def __post_init__(self) -> None:
        _u32("ssrc", self.ssrc)


@dataclass(frozen=True, slots=True)
class UnknownRtcp:
    """Any other packet type (e.g. RFC 4585 feedback), kept raw: count field and body."""

    packet_type: int
    count: int = 0
    body: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.packet_type <= 255 or not 0 <= self.count <= 31:
            raise MediaError("RTCP packet type / count out of range")
        if len(self.body) % 4:
            raise MediaError("RTCP body must be a multiple of 4 bytes")


RtcpPacket = SenderReport | ReceiverReport | Sdes | Bye | App | XrPacket | UnknownRtcp


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _header(count: int, ptype: int, body: bytes, padding: int = 0) -> bytes:
    if padding:
        body = body + b"\x00" * (padding - 1) + bytes((padding,))
    words = len(body) // 4
    if words > 0xFFFF:
        raise MediaError("RTCP packet too long")
    first = 0x80 | (0x20 if padding else 0) | count
    return _HDR.pack(first, ptype, words) + body


def _sdes_body(chunks: tuple[SdesChunk, ...]) -> bytes:
    out = bytearray()
    for chunk in chunks:
        part = bytearray(chunk.ssrc.to_bytes(4, "big"))
        for item in chunk.items:
            part += bytes((item.type, len(item.value))) + item.value
        # RFC 3550 §6.5: a null item ends the list, then pad to a 32-bit boundary, so there is
        # always at least one zero octet after the items.
        part += b"\x00"
        out += _pad4(bytes(part))
    return bytes(out)


def _serialize_one(pkt: RtcpPacket) -> bytes:
    if isinstance(pkt, SenderReport):
        body = pkt.ssrc.to_bytes(4, "big") + _SR_INFO.pack(
            pkt.ntp_timestamp >> 32,
            pkt.ntp_timestamp & 0xFFFFFFFF,
            pkt.rtp_timestamp,
            pkt.packet_count,
            pkt.octet_count,
        )
        body += b"".join(r.pack() for r in pkt.reports) + pkt.profile_extension
        return _header(len(pkt.reports), RtcpType.SR, body)
    if isinstance(pkt, ReceiverReport):
        body = pkt.ssrc.to_bytes(4, "big")
        body += b"".join(r.pack() for r in pkt.reports) + pkt.profile_extension
        return _header(len(pkt.reports), RtcpType.RR, body)
    if isinstance(pkt, Sdes):
        return _header(len(pkt.chunks), RtcpType.SDES, _sdes_body(pkt.chunks))
    if isinstance(pkt, Bye):
        body = b"".join(s.to_bytes(4, "big") for s in pkt.ssrcs)
        if pkt.reason:
            body += _pad4(bytes((len(pkt.reason),)) + pkt.reason)
        return _header(len(pkt.ssrcs), RtcpType.BYE, body)
    if isinstance(pkt, App):
        body = pkt.ssrc.to_bytes(4, "big") + pkt.name + pkt.data
        return _header(pkt.subtype, RtcpType.APP, body)
    if isinstance(pkt, XrPacket):
        xr = bytearray(pkt.ssrc.to_bytes(4, "big"))
        for block in pkt.blocks:
            if isinstance(block, VoipMetrics):
                inner = block.pack_body()
                xr += struct.pack("!BBH", VoipMetrics.BLOCK_TYPE, 0, len(inner) // 4) + inner
            else:
                xr += struct.pack(
                    "!BBH", block.block_type, block.type_specific, len(block.body) // 4
                )
                xr += block.body
        return _header(0, RtcpType.XR, bytes(xr))
    return _header(pkt.count, pkt.packet_type, pkt.body)


def serialize_rtcp(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    """Build a compound RTCP packet (RFC 3550 §6.1) from its parts, in order."""
    return b"".join(_serialize_one(p) for p in packets)


def _parse_sdes(count: int, body: bytes) -> Sdes:
    chunks: list[SdesChunk] = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(body):
            raise MediaError("RTCP SDES chunk truncated")
        ssrc = int.from_bytes(body[pos : pos + 4], "big")
        pos += 4
        items: list[SdesItem] = []
        while True:
            if pos >= len(body):
                raise MediaError("RTCP SDES item list not terminated")
            itype = body[pos]
            if itype == SdesType.END:
                pos += 1
                pos += -pos % 4  # skip to the next 32-bit boundary
                break
            if pos + 2 > len(body):
                raise MediaError("RTCP SDES item truncated")
            length = body[pos + 1]
            if pos + 2 + length > len(body):
                raise MediaError("RTCP SDES item overruns the packet")
            items.append(SdesItem(itype, bytes(body[pos + 2 : pos + 2 + length])))
            pos += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return Sdes(tuple(chunks))


def _parse_xr(body: bytes) -> XrPacket:
    if len(body) < 4:
        raise MediaError("RTCP XR packet truncated")
    ssrc = int.from_bytes(body[:4], "big")
    pos = 4
    blocks: list[VoipMetrics | XrBlock] = []
    while pos < len(body):
        if pos + 4 > len(body):
            raise MediaError("RTCP XR block header truncated")
        bt, ts, words = struct.unpack_from("!BBH", body, pos)
        end = pos + 4 + 4 * words
        if end > len(body):
            raise MediaError("RTCP XR block overruns the packet")
        inner = bytes(body[pos + 4 : end])
        if bt == VoipMetrics.BLOCK_TYPE:
            blocks.append(VoipMetrics.unpack_body(inner))
        else:
            blocks.append(XrBlock(bt, ts, inner))
        pos = end
    return XrPacket(ssrc, tuple(blocks))


def _parse_one(count: int, ptype: int, body: bytes) -> RtcpPacket:
    if ptype in (RtcpType.SR, RtcpType.RR):
        fixed = 24 if ptype == RtcpType.SR else 4
        need = fixed + 24 * count
        if len(body) < need:
            raise MediaError(f"RTCP {RtcpType(ptype).name} shorter than its {count} report blocks")
        ssrc = int.from_bytes(body[:4], "big")
        reports = tuple(ReportBlock.unpack(body, fixed + 24 * i) for i in range(count))
        ext = bytes(body[need:])
        if ptype == RtcpType.RR:
            return ReceiverReport(ssrc, reports, ext)
        msw, lsw, rtp_ts, pc, oc = _SR_INFO.unpack_from(body, 4)
        return SenderReport(ssrc, (msw << 32) | lsw, rtp_ts, pc, oc, reports, ext)
    if ptype == RtcpType.SDES:
        return _parse_sdes(count, body)
    if ptype == RtcpType.BYE:
        if len(body) < 4 * count:
            raise MediaError("RTCP BYE shorter than its source list")
        ssrcs = tuple(int.from_bytes(body[4 * i : 4 * i + 4], "big") for i in range(count))
        rest = body[4 * count :]
        reason = b""
        if rest:
            if 1 + rest[0] > len(rest):
                raise MediaError("RTCP BYE reason overruns the packet")
            reason = bytes(rest[1 : 1 + rest[0]])
        return Bye(ssrcs, reason)
    if ptype == RtcpType.APP:
        if len(body) < 8:
            raise MediaError("RTCP APP packet truncated")
        return App(int.from_bytes(body[:4], "big"), bytes(body[4:8]), count, bytes(body[8:]))
    if ptype == RtcpType.XR:
        return _parse_xr(body)
    return UnknownRtcp(ptype, count, bytes(body))


def parse_rtcp(
    data: bytes, *, max_size: int = MAX_RTCP_SIZE, strict: bool = False
) -> tuple[RtcpPacket, ...]:
    """Parse a compound RTCP packet. ``strict`` applies RFC 3550 §6.1 / A.2 validity checks:
    the first packet is SR or RR and only the last one may be padded. Reduced-size RTCP
    (RFC 5506) needs ``strict=False``."""
    n = len(data)
    if n > max_size:
        raise MediaError(f"RTCP packet of {n} bytes exceeds the {max_size}-byte limit")
    if n < 4:
        raise MediaError("RTCP packet shorter than its 4-byte header")
    out: list[RtcpPacket] = []
    pos = 0
    while pos < n:
        if pos + 4 > n:
            raise MediaError("RTCP compound packet has trailing garbage")
        first, ptype, words = _HDR.unpack_from(data, pos)
        if first >> 6 != 2:
            raise MediaError(f"RTCP version {first >> 6} is not 2 (RFC 3550 §6.4.1)")
        end = pos + 4 + 4 * words
        if end > n:
            raise MediaError("RTCP length field overruns the datagram")
        body = data[pos + 4 : end]
        if first & 0x20:
            if strict and end != n:
                raise MediaError("RTCP padding only allowed on the last packet (RFC 3550 A.2)")
            pad = body[-1] if body else 0
            if pad == 0 or pad > len(body):
                raise MediaError(f"RTCP padding count {pad} is invalid")
            body = body[: len(body) - pad]
        if strict and not out and ptype not in (RtcpType.SR, RtcpType.RR):
            raise MediaError("compound RTCP must start with SR or RR (RFC 3550 §6.1)")
        out.append(_parse_one(first & 0x1F, ptype, bytes(body)))
        pos = end
    return tuple(out)
