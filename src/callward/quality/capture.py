"""Streaming capture readers: pcap, pcapng, link layers, IPv4/IPv6, UDP, IPv4 reassembly.

Captures are read in bounded chunks (never the whole file): ``iter_blocks`` yields
``FrameBlock``s holding one chunk's bytes plus numpy columns (frame offset, captured length,
timestamp in ns, link type). The per-packet decoder (``decode_udp``) is the reference; the
vectorised path in ``fastpath.py`` handles the common fixed-offset Ethernet/IPv4/UDP case in
bulk and hands every other frame back to ``decode_udp``.

Formats: libpcap (both byte orders, µs and ns magic) and pcapng (draft-ietf-opsawg-pcapng:
SHB/IDB/EPB/SPB/PB, per-interface link type, if_tsresol and if_tsoffset).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from io import BufferedReader
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from callward.errors import CaptureError
from callward.quality.accel import ACCEL

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "Datagram",
    "FrameBlock",
    "LinkType",
    "Reassembler",
    "decode_ip",
    "decode_tcp",
    "decode_udp",
    "iter_blocks",
    "iter_datagrams",
    "iter_frames",
]

CHUNK_BYTES = 8 << 20
MAX_FRAME = 1 << 20  # larger than any snaplen in practice; bigger means a corrupt file


class LinkType(IntEnum):
    """LINKTYPE_* values (tcpdump.org link-layer header types) that we decode."""

    NULL = 0
    ETHERNET = 1
    RAW = 101
    LINUX_SLL = 113
    IPV4 = 228
    IPV6 = 229
    LINUX_SLL2 = 276


@dataclass(frozen=True, slots=True)
class FrameBlock:
    """Frames from one chunk of a capture: ``buf[offsets[i] : offsets[i] + lengths[i]]``."""

    buf: bytes | bytearray | memoryview
    offsets: np.ndarray
    lengths: np.ndarray
    ts_ns: np.ndarray
    linktypes: np.ndarray

    def frame(self, i: int) -> bytes:
        o = int(self.offsets[i])
        return bytes(self.buf[o : o + int(self.lengths[i])])


@dataclass(frozen=True, slots=True)
class Datagram:
    """One UDP datagram (after IP reassembly); ``ts_ns`` is capture time in ns since epoch."""

    ts_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


def _open(path: str | Path) -> BufferedReader:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise CaptureError(f"cannot open capture {Path(path).name}: {exc.strerror}") from None


def iter_blocks(
    path: str | Path, chunk_bytes: int = CHUNK_BYTES, *, reuse: bool = False
) -> Iterator[FrameBlock]:
    """Frames of a pcap or pcapng file in bounded chunks; CaptureError if unreadable.

    With ``reuse`` every block is read into the same buffer, so a block is valid only until
    the next one is requested (a consumer that handles each block at once, like ``collect``).
    """
    f = _open(path)
    with f:
        head = f.read(4)
        if len(head) < 4:
            raise CaptureError(f"{Path(path).name}: not a capture file (too short)")
        if head == b"\x0a\x0d\x0d\x0a":
            yield from _pcapng_blocks(_Refill(f, head, chunk_bytes, reuse))
        elif head in (
            b"\xd4\xc3\xb2\xa1",
            b"\xa1\xb2\xc3\xd4",
            b"\x4d\x3c\xb2\xa1",
            b"\xa1\xb2\x3c\x4d",
        ):
            yield from _pcap_blocks(_Refill(f, head, chunk_bytes, reuse))
        else:
            raise CaptureError(f"{Path(path).name}: not a pcap or pcapng file (bad magic)")


class _Refill:
    """Chunked reads that keep the unconsumed tail (an incomplete record) of the last chunk.

    Why a reused buffer: allocating a fresh 8 MB object per read (and concatenating the tail)
    page-faults new memory every chunk, which cost ~3x the read itself on a 250 MB capture.
    """

    def __init__(self, f: BufferedReader, head: bytes, chunk: int, reuse: bool) -> None:
        self.f = f
        self.chunk = chunk
        self.reuse = reuse
        self.buf = bytearray(chunk + MAX_FRAME + 256 + len(head))
        self.buf[: len(head)] = head
        self.have = len(head)
        self.last = 0  # bytes read by the last fill (0 = end of file)

    def fill(self) -> memoryview:
        """The tail kept so far followed by up to ``chunk`` new bytes."""
        got = self.f.readinto(memoryview(self.buf)[self.have : self.have + self.chunk]) or 0
        self.last = got
        return memoryview(self.buf)[: self.have + got]

    def keep(self, view: memoryview, off: int) -> None:
        """Keep ``view[off:]`` (an incomplete record) for the next fill."""
        tail = len(view) - off
        if tail > MAX_FRAME + 256:  # the walks stop at a bad length before this
            raise CaptureError("capture: record longer than any plausible frame")
        if not self.reuse:  # earlier blocks keep their own buffer
            old = self.buf
            self.buf = bytearray(len(old))
            self.buf[:tail] = old[off : off + tail]
        else:
            self.buf[:tail] = self.buf[off : off + tail]
        self.have = tail


def _pcap_blocks(r: _Refill) -> Iterator[FrameBlock]:
    magic = bytes(r.buf[:4])
    e = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nsec = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    rest = r.f.read(20)
    if len(rest) < 20:
        raise CaptureError("pcap: truncated global header")
    linktype = struct.unpack(e + "I", rest[16:20])[0] & 0x0FFFFFFF
    mult = 1 if nsec else 1000
    rec = struct.Struct(e + "IIII")
    unpack = rec.unpack_from
    r.have = 0  # the magic is not part of the records
    while True:
        buf = r.fill()
        if not r.last:
            return  # a truncated last record (capture killed mid-write) is dropped
        offs, lens, secs, fracs, off = _walk(buf, unpack, e)
        if len(offs):
            yield FrameBlock(
                buf, offs, lens, secs * 1_000_000_000 + fracs * mult,
                np.full(len(offs), linktype, dtype=np.int32),
            )  # fmt: skip
        r.keep(buf, off)


RUN_MAX = 8192  # records verified per speculative run


def _walk(
    buf: bytes | memoryview, unpack: Callable[[Buffer, int], tuple[int, ...]], e: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """``_walk_pcap`` through the C accelerator when it is built (same columns)."""
    if ACCEL is None:
        return _walk_pcap(buf, unpack, e)
    o, ln, s, f, off, bad = ACCEL.walk_pcap(buf, e == ">")
    if bad:  # the reference names the problem
        _walk_pcap(buf[off:], unpack, e)
    cols = [np.frombuffer(x, dtype=np.int64) for x in (o, ln, s, f)]
    return cols[0], cols[1], cols[2], cols[3], off


def _u32(b: np.ndarray, idx: np.ndarray, e: str) -> np.ndarray:
    w = [b[idx + k].astype(np.int64) for k in range(4)]
    out: np.ndarray
    if e == "<":
        out = w[0] | (w[1] << 8) | (w[2] << 16) | (w[3] << 24)
    else:
        out = (w[0] << 24) | (w[1] << 16) | (w[2] << 8) | w[3]
    return out


def _walk_pcap(
    buf: bytes | memoryview, unpack: Callable[[Buffer, int], tuple[int, ...]], e: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Record offsets, lengths, seconds and fractions of the complete records in ``buf``.

    Why speculative runs: records cannot be located without walking length fields, which is
    slow in Python. RTP captures are long runs of equal-sized records, so from each record we
    assume the next ones have its size, verify every assumed length field at once with numpy
    and accept the verified prefix; a mismatch falls back to one scalar step. The walk is exact:
    a record is only accepted after its own length field was read.
    """
    b = np.frombuffer(buf, dtype=np.uint8)
    n = len(buf)
    parts: list[tuple[np.ndarray, ...]] = []
    s_off: list[int] = []
    s_len: list[int] = []
    s_sec: list[int] = []
    s_frac: list[int] = []
    off = 0
    scalar_budget = 0
    while off + 16 <= n:
        sec, frac, incl, _orig = unpack(buf, off)
        if incl > MAX_FRAME:
            raise CaptureError(f"pcap: record length {incl} is implausible (corrupt file)")
        rl = 16 + incl
        if off + rl > n:
            break
        k = min((n - off) // rl, RUN_MAX)
        if scalar_budget > 0 or k < 16:
            scalar_budget -= 1
            s_off.append(off + 16)
            s_len.append(incl)
            s_sec.append(sec)
            s_frac.append(frac)
            off += rl
            continue
        rec = off + rl * np.arange(k, dtype=np.int64)
        ok = _u32(b, rec + 8, e) == incl
        m = k if bool(ok.all()) else int(np.argmin(ok))
        if s_off:
            parts.append(_scalar_cols(s_off, s_len, s_sec, s_frac))
            s_off, s_len, s_sec, s_frac = [], [], [], []
        rec = rec[:m]
        parts.append(
            (rec + 16, np.full(m, incl, dtype=np.int64), _u32(b, rec, e), _u32(b, rec + 4, e))
        )
        off += m * rl
        if m < 16:
            scalar_budget = 64  # mixed sizes here: walk a while before speculating again
    if s_off:
        parts.append(_scalar_cols(s_off, s_len, s_sec, s_frac))
    if not parts:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z, z, off
    cols = [np.concatenate([p[i] for p in parts]) for i in range(4)]
    return cols[0], cols[1], cols[2], cols[3], off


def _scalar_cols(o: list[int], ln: list[int], s: list[int], f: list[int]) -> tuple[np.ndarray, ...]:
    return tuple(np.array(x, dtype=np.int64) for x in (o, ln, s, f))


@dataclass(slots=True)
class _Iface:
    linktype: int
    snaplen: int
    num: int  # ts * num // den = ns
    den: int
    offset_ns: int


def _tsresol(v: int) -> tuple[int, int]:
    # if_tsresol: MSB clear = negative power of 10, set = negative power of 2.
    if v & 0x80:
        return 1_000_000_000, 1 << (v & 0x7F)
    p = v & 0x7F
    return (10 ** (9 - p), 1) if p <= 9 else (1, 10 ** (p - 9))


def _idb(body: bytes, e: str) -> _Iface:
    if len(body) < 8:
        raise CaptureError("pcapng: truncated interface description block")
    linktype, _res, snaplen = struct.unpack_from(e + "HHI", body, 0)
    num, den, toff = 1000, 1, 0
    pos = 8
    while pos + 4 <= len(body):
        code, olen = struct.unpack_from(e + "HH", body, pos)
        val = body[pos + 4 : pos + 4 + olen]
        if code == 0:
            break
        if code == 9 and olen >= 1:
            num, den = _tsresol(val[0])
        elif code == 14 and olen >= 8:
            toff = struct.unpack(e + "q", val[:8])[0] * 1_000_000_000
        pos += 4 + olen + ((-olen) % 4)
    return _Iface(linktype, snaplen, num, den, toff)


def _pcapng_blocks(r: _Refill) -> Iterator[FrameBlock]:
    e = "<"
    ifaces: list[_Iface] = []
    last_ts = 0
    while True:
        buf = r.fill()
        n = len(buf)
        b = np.frombuffer(buf, dtype=np.uint8)
        parts: list[tuple[np.ndarray, ...]] = []
        offs: list[int] = []
        lens: list[int] = []
        tss: list[int] = []
        lts: list[int] = []
        off = 0
        budget = 0
        while off + 12 <= n:
            btype = struct.unpack_from(e + "I", buf, off)[0]
            if btype == 0x0A0D0D0A:
                bom = bytes(buf[off + 8 : off + 12])
                if len(bom) < 4:
                    break
                e = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
                if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                    raise CaptureError("pcapng: bad byte-order magic")
                ifaces = []
            blen = struct.unpack_from(e + "I", buf, off + 4)[0]
            if blen < 12 or blen % 4 or blen > MAX_FRAME + 64:
                raise CaptureError(f"pcapng: block length {blen} is invalid (corrupt file)")
            if off + blen > n:
                break
            body = buf[off + 8 : off + blen - 4]
            if btype == 1:
                ifaces.append(_idb(bytes(body), e))
            elif btype in (6, 2):
                if btype == 6:
                    if len(body) < 20:
                        raise CaptureError("pcapng: truncated enhanced packet block")
                    iid, hi, lo, cap, _orig = struct.unpack_from(e + "IIIII", body, 0)
                else:
                    if len(body) < 20:
                        raise CaptureError("pcapng: truncated packet block")
                    iid, _drops, hi, lo, cap, _orig = struct.unpack_from(e + "HHIIII", body, 0)
                if iid >= len(ifaces):
                    raise CaptureError(f"pcapng: packet names undefined interface {iid}")
                ifc = ifaces[iid]
                if cap > len(body) - 20:
                    raise CaptureError("pcapng: packet longer than its block")
                if btype == 6 and ACCEL is not None:
                    info = [(i.linktype, i.num, i.den, i.offset_ns) for i in ifaces]
                    try:
                        *cols, end, last = ACCEL.walk_epb(buf, off, e == ">", info, last_ts)
                    except OverflowError:  # values past 64 bits: the Python walk handles them
                        end = off
                    if end > off:
                        if offs:
                            parts.append(_cols(offs, lens, tss, lts))
                            offs, lens, tss, lts = [], [], [], []
                        parts.append(tuple(np.frombuffer(x, dtype=np.int64) for x in cols))
                        last_ts, off = last, end
                        continue
                if btype == 6 and budget <= 0 and ACCEL is None:
                    run = _epb_run(b, off, blen, iid, ifc, e, n)
                    if run is not None:
                        if offs:
                            parts.append(_cols(offs, lens, tss, lts))
                            offs, lens, tss, lts = [], [], [], []
                        parts.append(run)
                        last_ts = int(run[2][-1])
                        off += len(run[0]) * blen
                        continue
                    budget = 64  # sizes vary here: walk a while before speculating again
                budget -= 1
                last_ts = ((hi << 32) | lo) * ifc.num // ifc.den + ifc.offset_ns
                offs.append(off + 8 + 20)
                lens.append(cap)
                tss.append(last_ts)
                lts.append(ifc.linktype)
            elif btype == 3:
                if not ifaces or len(body) < 4:
                    raise CaptureError("pcapng: simple packet block without interface")
                orig = struct.unpack_from(e + "I", body, 0)[0]
                ifc = ifaces[0]
                cap = min(orig, len(body) - 4, ifc.snaplen or orig)
                offs.append(off + 12)
                lens.append(cap)
                tss.append(last_ts)  # SPBs carry no timestamp: keep the previous one
                lts.append(ifc.linktype)
            off += blen
        if offs:
            parts.append(_cols(offs, lens, tss, lts))
        if parts:
            c = [np.concatenate([p[i] for p in parts]) for i in range(4)]
            yield FrameBlock(buf, c[0], c[1], c[2], c[3].astype(np.int32))
        if not r.last:
            return
        r.keep(buf, off)


def _cols(o: list[int], ln: list[int], ts: list[int], lt: list[int]) -> tuple[np.ndarray, ...]:
    try:
        return tuple(np.array(x, dtype=np.int64) for x in (o, ln, ts, lt))
    except OverflowError:  # a timestamp (if_tsresol, if_tsoffset) past 64 bits
        raise CaptureError("pcapng: packet timestamp out of range (corrupt file)") from None


def _epb_run(
    b: np.ndarray, off: int, blen: int, iid: int, ifc: _Iface, e: str, n: int
) -> tuple[np.ndarray, ...] | None:
    """A verified run of same-sized EPBs on one interface starting at ``off`` (see
    ``_walk_pcap`` for why), or None when fewer than 16 follow or the timestamps need
    arbitrary precision (binary if_tsresol, overflow risk)."""
    k = min((n - off) // blen, RUN_MAX)
    if k < 16 or ifc.den != 1:
        return None
    rec = off + blen * np.arange(k, dtype=np.int64)
    ok = (
        (_u32(b, rec, e) == 6)
        & (_u32(b, rec + 4, e) == blen)
        & (_u32(b, rec + 8, e) == iid)
        & (_u32(b, rec + blen - 4, e) == blen)
    )
    m = k if bool(ok.all()) else int(np.argmin(ok))
    if m < 16:
        return None
    rec = rec[:m]
    cap = _u32(b, rec + 20, e)
    hi = _u32(b, rec + 12, e)
    if bool((cap > blen - 32).any()) or int(hi.max()) >= 1 << 31:
        return None
    raw = (hi << 32) | _u32(b, rec + 16, e)
    if float(raw.max()) * ifc.num >= 9.0e18:
        return None
    ts = raw * ifc.num + ifc.offset_ns
    return rec + 28, cap, ts, np.full(m, ifc.linktype, dtype=np.int64)


def iter_frames(path: str | Path) -> Iterator[tuple[int, int, bytes]]:
    """(timestamp ns, link type, frame bytes) for every frame, streaming."""
    for blk in iter_blocks(path, reuse=True):  # frame() copies each frame out of the block
        for i in range(len(blk.offsets)):
            yield int(blk.ts_ns[i]), int(blk.linktypes[i]), blk.frame(i)


class Reassembler:
    """IPv4 fragment reassembly (RFC 791 §3.2, RFC 815 hole-less variant).

    Fragments are keyed by (src, dst, protocol, identification); incomplete sets are
    evicted after ``max_pending`` keys so a hostile capture cannot grow memory unbounded.
    """

    def __init__(self, max_pending: int = 1024) -> None:
        self._pending: dict[tuple[bytes, bytes, int, int], dict[int, bytes]] = {}
        self._total: dict[tuple[bytes, bytes, int, int], int] = {}
        self._max = max_pending

    def add(
        self, key: tuple[bytes, bytes, int, int], offset: int, more: bool, data: bytes
    ) -> bytes | None:
        parts = self._pending.setdefault(key, {})
        parts[offset] = data
        if not more:
            self._total[key] = offset + len(data)
        if len(self._pending) > self._max:
            old = next(iter(self._pending))
            self._pending.pop(old, None)
            self._total.pop(old, None)
        total = self._total.get(key)
        if total is None:
            return None
        have = 0
        out = bytearray()
        for o in sorted(parts):
            if o > have:
                return None  # a hole remains
            chunk = parts[o]
            if o + len(chunk) > have:
                out += chunk[have - o :]
                have = o + len(chunk)
        if have < total:
            return None
        del self._pending[key]
        del self._total[key]
        return bytes(out[:total])


def _ip_from_link(linktype: int, data: bytes) -> tuple[int, int] | None:
    """(ethertype, offset of the network header) for a frame, or None if not IP."""
    if linktype == LinkType.ETHERNET:
        if len(data) < 14:
            return None
        et = (data[12] << 8) | data[13]
        off = 14
        while et in (0x8100, 0x88A8, 0x9100) and len(data) >= off + 4:  # 802.1Q / QinQ
            et = (data[off + 2] << 8) | data[off + 3]
            off += 4
        return et, off
    if linktype == LinkType.LINUX_SLL:
        if len(data) < 16:
            return None
        return (data[14] << 8) | data[15], 16
    if linktype == LinkType.LINUX_SLL2:
        if len(data) < 20:
            return None
        return (data[0] << 8) | data[1], 20
    if linktype in (LinkType.RAW, LinkType.IPV4, LinkType.IPV6):
        if not data:
            return None
        v = data[0] >> 4
        return (0x0800 if v == 4 else 0x86DD if v == 6 else 0), 0
    if linktype == LinkType.NULL:
        if len(data) < 4:
            return None
        fam = int.from_bytes(data[:4], "little")
        if fam > 0xFFFF:
            fam = int.from_bytes(data[:4], "big")
        return (0x0800 if fam == 2 else 0x86DD if fam in (10, 24, 28, 30) else 0), 4
    return None


def decode_ip(
    linktype: int, data: bytes, reasm: Reassembler | None = None
) -> tuple[int, str, str, bytes] | None:
    """(IP protocol, src, dst, transport bytes) of an IPv4/IPv6 frame, or None.

    IPv4 fragments are reassembled when ``reasm`` is given (else skipped). Truncated or
    malformed frames return None: real captures are full of them and one bad frame must not
    stop an analysis.
    """
    link = _ip_from_link(linktype, data)
    if link is None:
        return None
    et, off = link
    if et == 0x0800:
        if len(data) < off + 20 or data[off] >> 4 != 4:
            return None
        ihl = (data[off] & 0x0F) * 4
        total = (data[off + 2] << 8) | data[off + 3]
        proto = data[off + 9]
        if ihl < 20 or total < ihl:
            return None
        end = min(len(data), off + total)
        src_b, dst_b = data[off + 12 : off + 16], data[off + 16 : off + 20]
        frag = (data[off + 6] << 8) | data[off + 7]
        l4 = data[off + ihl : end]
        if frag & 0x3FFF:  # MF set or non-zero offset
            if reasm is None:
                return None
            ident = (data[off + 4] << 8) | data[off + 5]
            whole = reasm.add(
                (src_b, dst_b, proto, ident), (frag & 0x1FFF) * 8, bool(frag & 0x2000), l4
            )
            if whole is None:
                return None
            l4 = whole
        return proto, ".".join(map(str, src_b)), ".".join(map(str, dst_b)), l4
    if et == 0x86DD:
        if len(data) < off + 40:
            return None
        nh = data[off + 6]
        plen = (data[off + 4] << 8) | data[off + 5]
        pos = off + 40
        # Skip hop-by-hop (0), routing (43), destination options (60); fragments (44) unsupported.
        for _ in range(8):
            if nh not in (0, 43, 60) or len(data) < pos + 8:
                break
            nh = data[pos]
            pos += (data[pos + 1] + 1) * 8
        src = str(ipaddress.IPv6Address(data[off + 8 : off + 24]))
        dst = str(ipaddress.IPv6Address(data[off + 24 : off + 40]))
        return nh, src, dst, data[pos : off + 40 + plen]
    return None


def decode_udp(
    linktype: int, data: bytes, reasm: Reassembler | None = None
) -> tuple[str, int, str, int, bytes] | None:
    """(src, sport, dst, dport, payload) of a UDP frame, or None for anything else."""
    ip = decode_ip(linktype, data, reasm)
    if ip is None or ip[0] != 17 or len(ip[3]) < 8:
        return None
    _p, src, dst, l4 = ip
    sport = (l4[0] << 8) | l4[1]
    dport = (l4[2] << 8) | l4[3]
    ulen = (l4[4] << 8) | l4[5]
    payload = l4[8:ulen] if 8 <= ulen <= len(l4) else l4[8:]
    return src, sport, dst, dport, payload


def decode_tcp(linktype: int, data: bytes) -> tuple[str, int, str, int, int, int, bytes] | None:
    """(src, sport, dst, dport, seq, flags, payload) of a TCP segment (RFC 9293 §3.1)."""
    ip = decode_ip(linktype, data)
    if ip is None or ip[0] != 6 or len(ip[3]) < 20:
        return None
    _p, src, dst, l4 = ip
    hl = (l4[12] >> 4) * 4
    if hl < 20 or hl > len(l4):
        return None
    seq = int.from_bytes(l4[4:8], "big")
    return src, (l4[0] << 8) | l4[1], dst, (l4[2] << 8) | l4[3], seq, l4[13], l4[hl:]


def iter_datagrams(path: str | Path) -> Iterator[Datagram]:
    """Every UDP datagram in a capture (reassembled, HEPv3 decapsulated), streaming."""
    from callward.quality.hep import decode_hep

    reasm = Reassembler()
    for ts, lt, data in iter_frames(path):
        d = decode_udp(lt, data, reasm)
        if d is None:
            continue
        if d[4][:4] == b"HEP3":
            try:
                h = decode_hep(d[4])
            except CaptureError:
                continue
            yield Datagram(h.ts_ns, h.src, h.sport, h.dst, h.dport, h.payload)
            continue
        yield Datagram(ts, d[0], d[1], d[2], d[3], d[4])
