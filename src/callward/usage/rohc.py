"""ROHC (RFC 3095) profile 0x0001, RTP/UDP/IPv4, unidirectional mode: a compressor and a
decompressor, sans-IO.

Why: on a radio link the 40 bytes of IPv4/UDP/RTP header cost more than a 12 kb/s Opus frame
at 20 ms. ROHC sends them once (IR) and then only what changes, as small LSB-encoded deltas.

What is implemented (small CID 0, no feedback: U-mode, RFC 3095 §5.3):

- **Packets**: IR (§5.7.7.1, static + dynamic chain, CRC-8), IR-DYN (§5.7.7.2), UO-0
  (§5.7.1: 4 SN bits, CRC-3), UO-1 (§5.7.3: 6 TS bits, M, 4 SN bits, CRC-3; UO-1-TS with 5
  TS bits when the IP-ID is sequential), UOR-2 (§5.7.4: 6 TS bits, M, 6 SN bits, CRC-7;
  UOR-2-TS with 5). The UDP checksum follows every compressed header when the
  flow uses one (§5.7 "UDP Checksum"), the IP-ID when it behaves randomly (RND=1).
- **Encoding**: W-LSB (§4.5.2) for the RTP SN (p = 1 up to 4 bits, else 2^(k-5) - 1) and the
  scaled RTP TS (§4.5.3, TS_STRIDE sent in the dynamic chain with the RX/TSS flags, p =
  2^(k-2) - 1), over a window of the last ``window`` references; the IP-ID as an offset from
  the SN when sequential (RND=0, NBO=1).
- **CRCs** (§5.9): CRC-3 (x^3+x+1), CRC-7 (x^7+x^6+x^3+x^2+x+1) and CRC-8 (x^8+x^2+x+1),
  preset to all ones, computed over the whole original header (IR/IR-DYN: over the packet up
  to the payload, CRC field zero).
- **U-mode state machine** (§5.3.1): IR for the first ``ir_count`` packets, then first/second
  order; back to IR every ``ir_refresh`` packets and IR-DYN every ``fo_refresh`` (U-mode
  periodic refresh, §5.3.1.1), and IR-DYN whenever a field the small packets cannot carry
  changes (payload type, TOS/TTL, IP-ID jump, TS not a multiple of the stride).
- **Decompressor** (§5.3.2): decodes against its last good context; a CRC failure tries the
  SN wraparound repair of §5.3.2.2.4 (the same LSBs one interval later, after many losses);
  k_1 = 3 failures out of n_1 = 8 drop it to static context, where only IR/IR-DYN are taken.

Packets are the IP datagram bytes of RTP over UDP over IPv4 (no options, not fragmented);
anything else is refused with :class:`~callward.errors.MediaError`.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, replace

from callward.errors import MediaError

__all__ = [
    "Compressor",
    "Decompressor",
    "FlowSizes",
    "RtpIp4",
    "compress_flow",
    "crc",
    "parse_rtp_ip4",
    "pdcp_lte_framing",
    "sdvl",
]

PROFILE_RTP = 0x0001
MAX_PACKET = 65535


def _crc_table(width: int, poly: int) -> list[int]:
    """Table for a CRC computed LSB-first (RFC 3095 §5.9: the polynomial's bits reflected)."""
    table = []
    for byte in range(256):
        c = byte
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c & ((1 << width) - 1))
    return table


# RFC 3095 §5.9.1 polynomials, as reflected constants for LSB-first processing
_CRC = {3: _crc_table(3, 0x6), 7: _crc_table(7, 0x79), 8: _crc_table(8, 0xE0)}


def crc(width: int, data: bytes) -> int:
    """RFC 3095 CRC-3/7/8 of ``data``, register preset to all ones."""
    table = _CRC[width]
    c = (1 << width) - 1
    for b in data:
        c = table[(c ^ b) & 0xFF]
    return c


def sdvl(value: int) -> bytes:
    """Self-describing variable-length value (§4.5.6)."""
    if value < 1 << 7:
        return bytes([value])
    if value < 1 << 14:
        return struct.pack("!H", 0x8000 | value)
    if value < 1 << 21:
        return bytes([0xC0 | value >> 16]) + struct.pack("!H", value & 0xFFFF)
    if value < 1 << 29:
        return struct.pack("!I", 0xE0000000 | value)
    raise MediaError(f"SDVL value {value} too large")


def _unsdvl(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise MediaError("ROHC: truncated SDVL field")
    b = data[pos]
    n = 1 if b < 0x80 else 2 if b < 0xC0 else 3 if b < 0xE0 else 4
    if pos + n > len(data):
        raise MediaError("ROHC: truncated SDVL field")
    mask = (0x7F, 0x3F, 0x1F, 0x1F)[n - 1]
    value = b & mask
    for x in data[pos + 1 : pos + n]:
        value = value << 8 | x
    return value, pos + n


@dataclass(frozen=True, slots=True)
class RtpIp4:
    """The fields of an IPv4/UDP/RTP header that ROHC profile 1 handles, and the payload."""

    tos: int
    ip_id: int
    df: bool
    ttl: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    udp_checksum: int
    marker: bool
    payload_type: int
    sn: int
    ts: int
    ssrc: int
    payload: bytes
    padding: bool = False

    def header(self) -> bytes:
        """The 40-byte original header (IP checksum computed, as on the wire)."""
        total = 40 + len(self.payload)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, self.tos, total, self.ip_id,
                         0x4000 if self.df else 0, self.ttl, 17, 0, self.src, self.dst)  # fmt: skip
        s = sum(struct.unpack("!10H", ip))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        ip = ip[:10] + struct.pack("!H", ~s & 0xFFFF) + ip[12:]
        udp = struct.pack("!HHHH", self.sport, self.dport, total - 20, self.udp_checksum)
        rtp = struct.pack("!BBHII", 0x80 | (0x20 if self.padding else 0),
                          (0x80 if self.marker else 0) | self.payload_type,
                          self.sn, self.ts, self.ssrc)  # fmt: skip
        return ip + udp + rtp

    def __bytes__(self) -> bytes:
        return self.header() + self.payload


def parse_rtp_ip4(data: bytes) -> RtpIp4:
    """An IPv4 datagram carrying RTP over UDP, for the compressor."""
    if len(data) < 40 or len(data) > MAX_PACKET:
        raise MediaError("ROHC: not an IPv4/UDP/RTP datagram (too short or too long)")
    if data[0] != 0x45 or data[9] != 17:
        raise MediaError("ROHC profile 1 here takes IPv4 without options carrying UDP")
    frag = struct.unpack_from("!H", data, 6)[0]
    if frag & 0x3FFF:
        raise MediaError("ROHC: fragmented datagram")
    if data[28] >> 6 != 2 or data[28] & 0x1F:
        raise MediaError("ROHC: RTP version 2 without extension/CSRC expected")
    total = struct.unpack_from("!H", data, 2)[0]
    return RtpIp4(
        tos=data[1], ip_id=struct.unpack_from("!H", data, 4)[0], df=bool(frag & 0x4000),
        ttl=data[8], src=data[12:16], dst=data[16:20],
        sport=struct.unpack_from("!H", data, 20)[0], dport=struct.unpack_from("!H", data, 22)[0],
        udp_checksum=struct.unpack_from("!H", data, 26)[0], marker=bool(data[29] & 0x80),
        payload_type=data[29] & 0x7F, sn=struct.unpack_from("!H", data, 30)[0],
        ts=struct.unpack_from("!I", data, 32)[0], ssrc=struct.unpack_from("!I", data, 36)[0],
        payload=data[40:total], padding=bool(data[28] & 0x20),
    )  # fmt: skip


def _p_sn(k: int) -> int:
    return 1 if k <= 4 else (1 << (k - 5)) - 1


def _p_ts(k: int) -> int:
    return (1 << (k - 2)) - 1 if k > 2 else 0


def _fits(value: int, ref: int, k: int, p: int, mod: int) -> bool:
    """Is ``value`` in the interpretation interval [ref - p, ref - p + 2^k - 1] (mod ``mod``)?"""
    return (value - (ref - p)) % mod < (1 << k)


def _decode_lsb(bits: int, k: int, ref: int, p: int, mod: int) -> int:
    """The value in [ref - p, ref - p + 2^k - 1] whose k LSBs are ``bits`` (§4.5.1)."""
    low = (ref - p) % mod
    return (low + ((bits - low) % (1 << k))) % mod


def _static_chain(h: RtpIp4) -> bytes:
    return (bytes([0x40, 17]) + h.src + h.dst + struct.pack("!HH", h.sport, h.dport)
            + struct.pack("!I", h.ssrc))  # fmt: skip


def _dynamic_chain(h: RtpIp4, rnd: bool, stride: int) -> bytes:
    flags = (0x80 if h.df else 0) | (0x40 if rnd else 0) | (0x20 if not rnd else 0)  # NBO
    ip = struct.pack("!BBHB", h.tos, h.ttl, h.ip_id, flags) + b"\x00"  # empty ext. list
    udp = struct.pack("!H", h.udp_checksum)
    rx = stride > 0
    rtp = struct.pack("!BBHI", 0x80 | (0x20 if h.padding else 0) | (0x10 if rx else 0),
                      (0x80 if h.marker else 0) | h.payload_type, h.sn, h.ts) + b"\x00"  # fmt: skip
    if rx:
        rtp += bytes([0x08 | 0x01]) + sdvl(stride)  # Mode 1 (U), TSS
    return ip + udp + rtp


@dataclass(frozen=True, slots=True)
class _Context:
    """What both ends agree on after the last IR/IR-DYN and good packet."""

    ref: RtpIp4
    rnd: bool
    stride: int
    ts_offset: int

    def scaled(self, ts: int) -> int:
        return ((ts - self.ts_offset) // self.stride) & 0xFFFFFFFF if self.stride else ts


class Compressor:
    """U-mode compressor for one RTP flow (CID 0). ``compress(datagram)`` returns the ROHC
    packet that replaces it."""

    def __init__(
        self, *, window: int = 4, ir_count: int = 3, ir_refresh: int = 700, fo_refresh: int = 64
    ) -> None:
        if window < 1 or ir_count < 1 or ir_refresh < 1 or fo_refresh < 1:
            raise MediaError("ROHC compressor parameters must be >= 1")
        self.window = window
        self.ir_count = ir_count
        self.ir_refresh = ir_refresh
        self.fo_refresh = fo_refresh
        self._ctx: _Context | None = None
        self._sns: deque[int] = deque(maxlen=window)
        self._tss: deque[int] = deque(maxlen=window)
        self._sent = 0
        self._since_ir = 0
        self._since_dyn = 0
        self._ids: deque[int] = deque(maxlen=8)  # IP-ID - SN of recent packets
        self._linear = 0  # packets in a row whose scaled TS moved exactly with the SN
        self.counts: dict[str, int] = {}

    def _behaviour(self, h: RtpIp4) -> tuple[bool, int]:
        """(RND, TS_STRIDE) from what the flow has shown so far."""
        self._ids.append((h.ip_id - h.sn) & 0xFFFF)
        rnd = len(set(self._ids)) > 1 if len(self._ids) >= 3 else False
        ctx = self._ctx
        stride = ctx.stride if ctx else 0
        if ctx is not None and h.sn != ctx.ref.sn:
            dsn = (h.sn - ctx.ref.sn) & 0xFFFF
            dts = (h.ts - ctx.ref.ts) & 0xFFFFFFFF
            if dsn == 1 and 0 < dts < 1 << 20:
                stride = stride if stride and dts % stride == 0 else dts
        return rnd, stride

    def compress(self, datagram: bytes) -> bytes:
        h = parse_rtp_ip4(datagram)
        rnd, stride = self._behaviour(h)
        ctx = self._ctx
        kind = "ir"
        if ctx is not None and self._sent >= self.ir_count and self._since_ir < self.ir_refresh:
            same_static = (h.src, h.dst, h.sport, h.dport, h.ssrc) == (
                ctx.ref.src, ctx.ref.dst, ctx.ref.sport, ctx.ref.dport, ctx.ref.ssrc)  # fmt: skip
            if not same_static:
                kind = "ir"
            elif (
                rnd != ctx.rnd or stride != ctx.stride or self._since_dyn >= self.fo_refresh
                or (h.tos, h.ttl, h.df, h.payload_type, h.padding)
                != (ctx.ref.tos, ctx.ref.ttl, ctx.ref.df, ctx.ref.payload_type, ctx.ref.padding)
                or (h.udp_checksum == 0) != (ctx.ref.udp_checksum == 0)
                or (not rnd and (h.ip_id - h.sn) & 0xFFFF != (ctx.ref.ip_id - ctx.ref.sn) & 0xFFFF)
                or (stride and (h.ts - ctx.ts_offset) % stride)
            ):  # fmt: skip
                kind = "ir-dyn"
            else:
                kind = "uo"
        out: bytes | None = None
        if kind == "uo":
            assert ctx is not None
            out = self._small(h, ctx)
            if out is None:
                kind = "ir-dyn"
            else:
                kind = "uo-0" if out[0] < 0x80 else "uo-1" if out[0] < 0xC0 else "uor-2"
        if out is None:
            out = self._ir(h, rnd, stride, dynamic_only=kind == "ir-dyn")
            self._since_dyn = 0
            if kind == "ir":
                self._since_ir = 0
        self._sent += 1
        self._since_ir += 1
        self._since_dyn += 1
        self.counts[kind] = self.counts.get(kind, 0) + 1
        offset = h.ts % stride if stride else 0
        new = _Context(h, rnd, stride, offset)
        linear = ctx is not None and stride == ctx.stride and stride and (
            new.scaled(h.ts) - ctx.scaled(ctx.ref.ts) - ((h.sn - ctx.ref.sn) & 0xFFFF)
        ) % (1 << 32) == 0  # fmt: skip
        self._linear = self._linear + 1 if linear else 0
        self._ctx = new
        self._sns.append(h.sn)
        self._tss.append(self._ctx.scaled(h.ts))
        return out

    def _ir(self, h: RtpIp4, rnd: bool, stride: int, *, dynamic_only: bool) -> bytes:
        if dynamic_only:  # §5.7.7.2: IR-DYN has no static chain
            head = bytes([0xF8, PROFILE_RTP, 0])
            body = _dynamic_chain(h, rnd, stride)
        else:
            head = bytes([0xFD, PROFILE_RTP, 0])
            body = _static_chain(h) + _dynamic_chain(h, rnd, stride)
        packet = bytearray(head + body)
        packet[2] = crc(8, bytes(packet))
        return bytes(packet) + h.payload

    def _k(self, value: int, refs: deque[int], p_of: object, mod: int) -> int | None:
        for k in range(0, 17):
            p = p_of(k)  # type: ignore[operator]
            if all(_fits(value, r, k, p, mod) for r in refs):
                return k
        return None

    def _small(self, h: RtpIp4, ctx: _Context) -> bytes | None:
        """UO-0, UO-1 or UOR-2 when the change fits, else None (the caller sends IR-DYN)."""
        k_sn = self._k(h.sn, self._sns, _p_sn, 1 << 16)
        if k_sn is None:
            return None
        tail = (struct.pack("!H", h.ip_id) if ctx.rnd else b"") + (
            struct.pack("!H", h.udp_checksum) if h.udp_checksum else b""
        )
        ts_s = ctx.scaled(h.ts)
        inferred = (ctx.scaled(ctx.ref.ts) + ((h.sn - ctx.ref.sn) & 0xFFFF)) & 0xFFFFFFFF
        k_ts = self._k(ts_s, self._tss, _p_ts, 1 << 32) if ctx.stride else None
        hdr = h.header()
        # UO-0 carries no TS: only once every reference in the window would infer it right
        # (the optimistic approach, §5.3.1.1.1), so a lost packet with a TS jump cannot
        # make the decompressor guess a wrong TS
        steady = self._linear >= self.window
        if k_sn <= 4 and not h.marker and ctx.stride and ts_s == inferred and steady:
            c3 = crc(3, hdr)
            return bytes([(h.sn & 0xF) << 3 | c3]) + tail + h.payload
        if not ctx.stride or k_ts is None:
            return None
        # §5.7.3-5.7.5: with a non-random IPv4 IP-ID the TS variants (UO-1-TS, UOR-2-TS) carry
        # a T=1 bit and one TS bit less; with RND=1 the plain UO-1/UOR-2 carry 6 TS bits
        tsb = 6 if ctx.rnd else 5
        if k_sn <= 4 and k_ts <= tsb:
            c3 = crc(3, hdr)
            first = 0x80 | (ts_s & 0x3F) if ctx.rnd else 0xA0 | (ts_s & 0x1F)
            return (bytes([first, (0x80 if h.marker else 0) | (h.sn & 0xF) << 3 | c3])
                    + tail + h.payload)  # fmt: skip
        if k_sn <= 6 and k_ts <= tsb:
            c7 = crc(7, hdr)
            if ctx.rnd:
                a, b = 0xC0 | (ts_s >> 1 & 0x1F), (ts_s & 1) << 7
            else:
                a, b = 0xC0 | (ts_s & 0x1F), 0x80  # T = 1
            b |= (0x40 if h.marker else 0) | (h.sn & 0x3F)
            return bytes([a, b, c7]) + tail + h.payload
        return None


class Decompressor:
    """U-mode decompressor for CID 0: ``decompress(packet)`` returns the IP datagram, or
    None when it cannot (no context, or a CRC that no repair explains)."""

    K1, N1 = 3, 8

    def __init__(self) -> None:
        self._ctx: _Context | None = None
        self._static = False  # static context only (after repeated failures)
        self._recent: deque[bool] = deque(maxlen=self.N1)
        self.counts: dict[str, int] = {}
        self.repaired = 0

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def decompress(self, packet: bytes) -> bytes | None:
        if not packet or len(packet) > MAX_PACKET:
            raise MediaError("ROHC: empty or oversized packet")
        first = packet[0]
        if first in (0xFC, 0xFD, 0xF8):
            return self._ir(packet)
        if self._ctx is None or self._static:
            self._count("discarded")
            return None
        return self._small(packet, self._ctx)

    def _ir(self, packet: bytes) -> bytes | None:
        if len(packet) < 3 or packet[1] != PROFILE_RTP:
            raise MediaError("ROHC: IR for a profile other than RTP (0x0001)")
        if packet[0] == 0xFC:
            raise MediaError("ROHC: IR without a dynamic chain is not used by U-mode here")
        ir_dyn = packet[0] == 0xF8
        if ir_dyn and self._ctx is None:
            self._count("discarded")  # IR-DYN needs the static part of a context
            return None
        try:
            h, rnd, stride, end = self._chains(packet, None if not ir_dyn else self._ctx)
        except (IndexError, struct.error):
            raise MediaError("ROHC: truncated IR packet") from None
        check = bytearray(packet[:end])
        check[2] = 0
        if crc(8, bytes(check)) != packet[2]:
            self._count("crc-failure")
            return None
        self._ctx = _Context(h, rnd, stride, h.ts % stride if stride else 0)
        self._static = False
        self._recent.clear()
        self._count("ir-dyn" if ir_dyn else "ir")
        return bytes(h)

    def _chains(self, packet: bytes, ctx: _Context | None) -> tuple[RtpIp4, bool, int, int]:
        """Static chain (IR) or the context's static part (IR-DYN), then the dynamic chain."""
        pos = 3
        if ctx is None:
            if packet[pos] >> 4 != 4 or packet[pos + 1] != 17:
                raise MediaError("ROHC: static chain is not IPv4/UDP")
            src, dst = packet[pos + 2 : pos + 6], packet[pos + 6 : pos + 10]
            sport, dport, ssrc = struct.unpack_from("!HHI", packet, pos + 10)
            pos += 18
        else:
            r = ctx.ref
            src, dst, sport, dport, ssrc = r.src, r.dst, r.sport, r.dport, r.ssrc
        tos, ttl, ip_id, flags = struct.unpack_from("!BBHB", packet, pos)
        pos += 5
        if packet[pos] != 0:
            raise MediaError("ROHC: IP extension header lists are not supported")
        pos += 1
        (checksum,) = struct.unpack_from("!H", packet, pos)
        pos += 2
        b0, b1, sn, ts = struct.unpack_from("!BBHI", packet, pos)
        pos += 8
        if b0 >> 6 != 2 or b0 & 0x0F or packet[pos] != 0:
            raise MediaError("ROHC: RTP dynamic chain with CSRCs is not supported")
        pos += 1
        stride = 0
        if b0 & 0x10:
            rx = packet[pos]
            pos += 1
            if rx & 0x01:
                stride, pos = _unsdvl(packet, pos)
            if rx & 0x02:
                _, pos = _unsdvl(packet, pos)
        h = RtpIp4(tos, ip_id, bool(flags & 0x80), ttl, bytes(src), bytes(dst), sport, dport,
                   checksum, bool(b1 & 0x80), b1 & 0x7F, sn, ts, ssrc, packet[pos:],
                   bool(b0 & 0x20))  # fmt: skip
        return h, bool(flags & 0x40), stride, pos

    def _small(self, packet: bytes, ctx: _Context) -> bytes | None:
        first = packet[0]
        ref = ctx.ref
        ts_bits: int | None = None
        k_ts = 0
        marker = False
        if first >> 7 == 0:  # UO-0
            kind, k_sn, sn_bits, width, crc_val, pos = "uo-0", 4, first >> 3 & 0xF, 3, first & 7, 1
        elif first >> 6 == 2:  # UO-1 (RND=1) or UO-1-TS (T=1)
            if len(packet) < 2:
                raise MediaError("ROHC: truncated UO-1")
            if not ctx.rnd and not first & 0x20:
                raise MediaError("ROHC: UO-1-ID packets are not supported")
            kind, k_ts = "uo-1", 6 if ctx.rnd else 5
            ts_bits = first & ((1 << k_ts) - 1)
            marker = bool(packet[1] & 0x80)
            k_sn, sn_bits, width, crc_val, pos = 4, packet[1] >> 3 & 0xF, 3, packet[1] & 7, 2
        elif first >> 5 == 6:  # UOR-2 (RND=1) or UOR-2-TS (T=1)
            if len(packet) < 3:
                raise MediaError("ROHC: truncated UOR-2")
            if packet[2] & 0x80:
                raise MediaError("ROHC: UOR-2 extensions are not supported")
            if ctx.rnd:
                k_ts, ts_bits = 6, (first & 0x1F) << 1 | packet[1] >> 7
            elif packet[1] & 0x80:
                k_ts, ts_bits = 5, first & 0x1F
            else:
                raise MediaError("ROHC: UOR-2-ID packets are not supported")
            kind = "uor-2"
            marker = bool(packet[1] & 0x40)
            k_sn, sn_bits, width, crc_val, pos = 6, packet[1] & 0x3F, 7, packet[2] & 0x7F, 3
        else:
            raise MediaError(f"ROHC: packet type 0x{first:02x} not supported")
        ip_id = None
        if ctx.rnd:
            if len(packet) < pos + 2:
                raise MediaError("ROHC: truncated IP-ID")
            (ip_id,) = struct.unpack_from("!H", packet, pos)
            pos += 2
        checksum = ref.udp_checksum
        if ref.udp_checksum:
            if len(packet) < pos + 2:
                raise MediaError("ROHC: truncated UDP checksum")
            (checksum,) = struct.unpack_from("!H", packet, pos)
            pos += 2
        payload = packet[pos:]
        # §5.3.2.2.4: try the plain interpretation, then the same LSBs one or two intervals on
        # (many packets lost in a row)
        for attempt in range(3):
            sn = _decode_lsb(sn_bits, k_sn, ref.sn, _p_sn(k_sn), 1 << 16)
            sn = (sn + attempt * (1 << k_sn)) & 0xFFFF
            dsn = (sn - ref.sn) & 0xFFFF
            if ts_bits is None:  # UO-0: the scaled TS moves with the SN
                ts_s = (ctx.scaled(ref.ts) + dsn) & 0xFFFFFFFF
            else:
                ts_s = _decode_lsb(ts_bits, k_ts, ctx.scaled(ref.ts), _p_ts(k_ts), 1 << 32)
            ts = (ts_s * ctx.stride + ctx.ts_offset) & 0xFFFFFFFF if ctx.stride else ref.ts
            new_id = ip_id if ip_id is not None else (ref.ip_id + dsn) & 0xFFFF
            h = replace(ref, ip_id=new_id, udp_checksum=checksum, marker=marker, sn=sn, ts=ts,
                        payload=payload)  # fmt: skip
            if crc(width, h.header()) == crc_val:
                if attempt:
                    self.repaired += 1
                self._ctx = replace(ctx, ref=h)
                self._recent.append(True)
                self._count(kind)
                return bytes(h)
        self._count("crc-failure")
        self._recent.append(False)
        if list(self._recent).count(False) >= self.K1:
            self._static = True  # §5.3.2.2.3: wait for IR/IR-DYN
        return None


# Wireshark's "pdcp-lte" UDP framing (packet-pdcp-lte.h): no PDCP header, user plane, ROHC
# on; tags: SN length 12, uplink, IPv4, small CIDs, U-mode, RND, UDP checksum, profile 1.
_PDCP_LTE = b"pdcp-lte" + bytes([1, 2, 1, 0x02, 12, 0x03, 0, 0x06, 0, 4, 0x08, 0, 0x09, 1])


def pdcp_lte_framing(packet: bytes, *, rnd: bool, udp_checksum: bool = True) -> bytes:
    """A ROHC packet inside Wireshark's PDCP-LTE-over-UDP framing, which tells its ROHC
    dissector the mode (U), profile and flow properties a real PDCP entity would know."""
    return (_PDCP_LTE + bytes([0x0A, int(rnd), 0x0B, int(udp_checksum), 0x0C, 0, 1, 0x01])
            + packet)  # fmt: skip


@dataclass(frozen=True, slots=True)
class FlowSizes:
    """Per-packet header sizes of one RTP flow before and after compression."""

    packets: int
    original_header_bytes: int  # IPv4 + UDP + RTP
    compressed_header_bytes: int  # ROHC header incl. UDP checksum / IP-ID fields
    counts: dict[str, int]
    rnd: bool

    @property
    def mean_compressed(self) -> float:
        return self.compressed_header_bytes / self.packets if self.packets else 0.0


def compress_flow(datagrams: list[bytes]) -> tuple[list[bytes], FlowSizes]:
    """Run one flow through a fresh compressor: the ROHC packets and their header sizes."""
    comp = Compressor()
    out = [comp.compress(d) for d in datagrams]
    payload = sum(len(d) - 40 for d in datagrams)
    compressed = sum(len(p) for p in out) - payload
    rnd = comp._ctx.rnd if comp._ctx else False
    return out, FlowSizes(len(datagrams), 40 * len(datagrams), compressed, dict(comp.counts), rnd)
