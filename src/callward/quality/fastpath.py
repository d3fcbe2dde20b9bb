"""Bulk RTP header extraction from capture chunks (numpy over fixed-offset headers).

Why: a support capture holds millions of RTP packets whose headers sit at a handful of fixed
offsets (Ethernet/VLAN/SLL/SLL2/raw + IPv4 without options or fragments + UDP + RTP). Those are
decoded for a whole chunk at once with fancy indexing; every other frame (IPv6, fragments, IP
options, HEP) goes through ``capture.decode_udp``, the reference decoder. The collector keeps
only ~24 bytes of columns per RTP packet, never a payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from callward.quality.accel import ACCEL
from callward.quality.capture import (
    Datagram,
    FrameBlock,
    LinkType,
    Reassembler,
    decode_tcp,
    decode_udp,
)
from callward.quality.tcpsip import TcpSipReassembler

__all__ = ["RtpCollector", "RtpColumns", "looks_like_rtp", "looks_like_sip"]

_SIP_STARTS = (
    b"SIP/2.0 ", b"INVITE ", b"ACK ", b"BYE ", b"CANCEL ", b"OPTIONS ", b"REGISTER ",
    b"PRACK ", b"UPDATE ", b"INFO ", b"SUBSCRIBE ", b"NOTIFY ", b"REFER ", b"MESSAGE ",
    b"PUBLISH ",
)  # fmt: skip


def looks_like_sip(payload: bytes) -> bool:
    return payload.startswith(_SIP_STARTS)


# UDP ports whose dissector in tshark 4.0 accepts any payload, so its RTP heuristic never sees
# them (measured: one RTP stream per candidate port through `tshark -z rtp,streams`). Ports
# whose dissector rejects foreign payloads (STUN 3478, SIP 5060, QUIC 443, SNMP 161, ...) are
# not listed: tshark does report RTP there.
_CLAIMED = np.array(
    [7, 19, 53, 67, 68, 69, 111, 123, 137, 138, 514, 520, 1900, 3544, 3784, 4500, 4754, 4789,
     5247, 5353, 5355, 6081],
    dtype=np.int64,
)  # fmt: skip
_CLAIMED_SET = frozenset(_CLAIMED.tolist())


def port_claimed(sport: int, dport: int) -> bool:
    return sport in _CLAIMED_SET or dport in _CLAIMED_SET


def _sip_first_byte(b0: np.ndarray) -> np.ndarray:
    return (b0 >= 0x41) & (b0 <= 0x5A)  # SIP start lines begin with an upper-case letter


def looks_like_rtp(payload: bytes) -> bool:
    """Wireshark's rtp_udp heuristic: version 2, full fixed header, PT not 72–76 (RTCP)."""
    if len(payload) < 12 or payload[0] >> 6 != 2:
        return False
    pt = payload[1] & 0x7F
    return not 72 <= pt <= 76


def _unique_pairs(k1: np.ndarray, k2: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Distinct (k1, k2) pairs and each row's pair index.

    Why hashing: np.unique over a 128-bit structured key sorts void records (slow). A 64-bit
    mix of both words is unique-d instead, and every row is then checked against its group's
    representative; a collision (never seen, but possible) falls back to the exact method.
    """
    h = (k1 * np.uint64(0x9E3779B97F4A7C15)) ^ (k2 * np.uint64(0xC2B2AE3D27D4EB4F) + np.uint64(1))
    _uh, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    if np.array_equal(k1[first][inv], k1) and np.array_equal(k2[first][inv], k2):
        return list(zip(k1[first].tolist(), k2[first].tolist(), strict=True)), inv
    keys = np.empty(len(k1), dtype=[("a", np.uint64), ("b", np.uint64)])
    keys["a"] = k1
    keys["b"] = k2
    uq, inv2 = np.unique(keys, return_inverse=True)
    return [(int(a), int(b)) for a, b in uq.tolist()], inv2.reshape(-1)


# One row of ``_accel.rtp_rows`` (packed, native byte order; see _accel.c ``Row``).
_ROW = np.dtype(
    [("frame", "<i8"), ("idx", "<i8"), ("src", "<u4"), ("dst", "<u4"), ("ssrc", "<u4"),
     ("rts", "<u4"), ("sport", "<u2"), ("dport", "<u2"), ("seq", "<u2"), ("pt", "u1"),
     ("marker", "u1"), ("size", "<i4"), ("sid", "<i4")]
)  # fmt: skip


def _key(a: int, c: int) -> tuple[str, int, str, int, int]:
    """(src, sport, dst, dport, ssrc) from k1 = src << 32 | dst, k2 = sport << 48 | dport << 32
    | ssrc (IPv4 addresses as 32-bit integers)."""
    s, d = a >> 32, a & 0xFFFFFFFF
    return (
        f"{s >> 24}.{(s >> 16) & 255}.{(s >> 8) & 255}.{s & 255}",
        c >> 48,
        f"{d >> 24}.{(d >> 16) & 255}.{(d >> 8) & 255}.{d & 255}",
        (c >> 32) & 0xFFFF,
        c & 0xFFFFFFFF,
    )


def _i64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


_HDR = 40  # IPv4 (no options) 20 + UDP 8 + RTP fixed header 12


def _header_rows(b: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(len(starts), 40) copy of the bytes at each start.

    Equally spaced starts (a run of equal-sized records: the usual RTP capture) are read
    through a strided view, a single memcpy-like copy; otherwise one fancy-index gather.
    """
    m = len(starts)
    if m == 0:
        return np.zeros((0, _HDR), dtype=np.uint8)
    if m > 1:
        d = int(starts[1] - starts[0])
        if d > 0 and bool((np.diff(starts) == d).all()):
            view = np.lib.stride_tricks.as_strided(
                b[int(starts[0]) :], shape=(m, _HDR), strides=(d, 1), writeable=False
            )
            return view.copy()
    return b[starts[:, None] + np.arange(_HDR)]


def _be16(h: np.ndarray, col: int) -> np.ndarray:
    out: np.ndarray = (h[:, col].astype(np.int64) << 8) | h[:, col + 1]
    return out


def _be32(h: np.ndarray, col: int) -> np.ndarray:
    out: np.ndarray = np.ascontiguousarray(h[:, col : col + 4]).view(">u4").ravel()
    return out


@dataclass(slots=True)
class RtpColumns:
    """Per-packet RTP header columns for the whole capture, in capture order."""

    ts_ns: np.ndarray
    stream: np.ndarray  # index into RtpCollector.keys
    seq: np.ndarray
    rtp_ts: np.ndarray
    pt: np.ndarray
    marker: np.ndarray
    size: np.ndarray  # UDP payload bytes


@dataclass(slots=True)
class RtpCollector:
    """Feeds FrameBlocks; keeps RTP columns, SIP datagrams and the first frame time."""

    keys: list[tuple[str, int, str, int, int]] = field(default_factory=list)
    sip: list[Datagram] = field(default_factory=list)
    rtcp: list[Datagram] = field(default_factory=list)
    max_rtcp: int = 200_000  # RTCP is ~1 packet per 5 s per stream; bound hostile captures
    first_ts_ns: int | None = None
    frames: int = 0
    _ids: dict[tuple[str, int, str, int, int], int] = field(default_factory=dict)
    _cols: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    _slow: list[tuple[int, int, int, int, int, bool, int, int]] = field(default_factory=list)
    _reasm: Reassembler = field(default_factory=Reassembler)
    _tcp: TcpSipReassembler = field(default_factory=TcpSipReassembler)
    _table: object = None  # the accelerator's stream table (a capsule), made on first use
    _c2py: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    def _id(self, key: tuple[str, int, str, int, int]) -> int:
        i = self._ids.get(key)
        if i is None:
            i = self._ids[key] = len(self.keys)
            self.keys.append(key)
        return i

    def add_block(self, blk: FrameBlock) -> None:
        n = len(blk.offsets)
        if n == 0:
            return
        if self.first_ts_ns is None:
            self.first_ts_ns = int(blk.ts_ns[0])
        self.frames += n
        if ACCEL is not None:
            self._add_rows(blk, n)
            return
        b = np.frombuffer(blk.buf, dtype=np.uint8)
        off = blk.offsets
        ln = blk.lengths
        lt = blk.linktypes
        l3 = np.full(n, -1, dtype=np.int64)
        eth = lt == LinkType.ETHERNET
        # Ethernet: ethertype at 12, one optional 802.1Q tag.
        e_ok = eth & (ln >= 14 + 20 + 8 + 12)
        et = np.zeros(n, dtype=np.int64)
        oe = off[e_ok]
        et[e_ok] = (b[oe + 12].astype(np.int64) << 8) | b[oe + 13]
        vl = e_ok & (et == 0x8100)
        ov = off[vl]
        et[vl] = (b[ov + 16].astype(np.int64) << 8) | b[ov + 17]
        l3[e_ok & (et == 0x0800)] = 14
        l3[vl & (et == 0x0800)] = 18
        sll = (lt == LinkType.LINUX_SLL) & (ln >= 16 + 40)
        os_ = off[sll]
        sll_ip = ((b[os_ + 14].astype(np.int64) << 8) | b[os_ + 15]) == 0x0800
        l3[np.flatnonzero(sll)[sll_ip]] = 16
        sll2 = (lt == LinkType.LINUX_SLL2) & (ln >= 20 + 40)
        o2 = off[sll2]
        sll2_ip = ((b[o2].astype(np.int64) << 8) | b[o2 + 1]) == 0x0800
        l3[np.flatnonzero(sll2)[sll2_ip]] = 20
        raw = ((lt == LinkType.RAW) | (lt == LinkType.IPV4)) & (ln >= 40)
        l3[raw] = 0
        cand = np.flatnonzero(l3 >= 0)
        ip = off[cand] + l3[cand]
        ok = ip + _HDR <= off[cand] + ln[cand]  # IPv4 + UDP + RTP fixed headers captured
        cand, ip = cand[ok], ip[ok]
        # One (m, 40) matrix of the IPv4/UDP/RTP headers, then every field is a column.
        h = _header_rows(b, ip)
        frag = _be16(h, 6) & 0x3FFF
        ulen = _be16(h, 24)
        fast = (h[:, 0] == 0x45) & (h[:, 9] == 17) & (frag == 0) & (ulen >= 20)
        b0 = h[:, 28]
        b1 = h[:, 29]
        ptv = b1 & 0x7F
        is_rtp = fast & ((b0 >> 6) == 2) & ~((ptv >= 72) & (ptv <= 76))
        sp = _be16(h, 20)
        dp = _be16(h, 22)
        claimed = fast & (np.isin(sp, _CLAIMED) | np.isin(dp, _CLAIMED))
        handled = np.zeros(n, dtype=bool)
        handled[cand[is_rtp | claimed]] = True  # claimed ports: neither RTP nor worth decoding
        handled[cand[claimed & _sip_first_byte(b0)]] = False  # ... unless it may be SIP
        sel = is_rtp & ~claimed
        # Everything else: reference decoder (IPv6, fragments, options, SIP, HEP, short).
        rest = np.flatnonzero(~handled)
        for i in rest.tolist():
            self._slow_frame(blk, i)
        if not sel.any():
            return
        fc = cand[sel]
        hs = h[sel]
        src = _be32(hs, 12).astype(np.uint64)
        dst = _be32(hs, 16).astype(np.uint64)
        sport = sp[sel].astype(np.uint64)
        dport = dp[sel].astype(np.uint64)
        ssrc = _be32(hs, 36).astype(np.uint64)
        # Group by (src, sport, dst, dport, ssrc): two 64-bit words then unique.
        k1 = (src << np.uint64(32)) | dst
        k2 = (sport << np.uint64(48)) | (dport << np.uint64(32)) | ssrc
        self._add_columns(blk, n, fc, k1, k2, _be16(hs, 30), _be32(hs, 32), b1[sel], ulen[sel])

    def _add_rows(self, blk: FrameBlock, n: int) -> None:
        """``add_block`` through the C accelerator: the same split of frames, in one pass, with
        each RTP packet's stream looked up in the accelerator's table."""
        assert ACCEL is not None
        if self._table is None:
            self._table = ACCEL.stream_table()
        rows_b, slow_b, new_b = ACCEL.rtp_rows(
            blk.buf, _i64(blk.offsets), _i64(blk.lengths), blk.linktypes.astype(np.int32), 0,
            self._table,
        )  # fmt: skip
        for i in np.frombuffer(slow_b, dtype=np.int64).tolist():
            self._slow_frame(blk, i)
        new = np.frombuffer(new_b, dtype=np.uint64).reshape(-1, 2).tolist()
        if new:
            ids = [self._id(_key(a, c)) for a, c in new]
            self._c2py = np.concatenate((self._c2py, np.array(ids, dtype=np.int32)))
        rows = np.frombuffer(rows_b, dtype=_ROW)
        if len(rows) == 0:
            return
        fc = rows["frame"]
        b1 = rows["pt"] | (rows["marker"] << 7)
        self._cols.append(
            (
                blk.ts_ns[fc],
                self._c2py[rows["sid"]],
                rows["seq"].astype(np.int32),
                rows["rts"].astype(np.int64),
                (b1 & 0x7F).astype(np.int16),
                (b1 & 0x80) != 0,
                rows["size"],
                fc + (self.frames - n),  # global frame index, for ordering
            )
        )

    def _add_columns(
        self, blk: FrameBlock, n: int, fc: np.ndarray, k1: np.ndarray, k2: np.ndarray,
        seq16: np.ndarray, rts32: np.ndarray, b1: np.ndarray, ulen: np.ndarray,
    ) -> None:  # fmt: skip
        """Group RTP rows of one block into streams and keep their columns."""
        uniq, inv = _unique_pairs(k1, k2)
        ids = np.empty(len(uniq), dtype=np.int32)
        for j, (a, c) in enumerate(uniq):
            ids[j] = self._id(_key(a, c))
        self._cols.append(
            (
                blk.ts_ns[fc],
                ids[inv.reshape(-1)],
                seq16.astype(np.int32),
                rts32.astype(np.int64),
                (b1 & 0x7F).astype(np.int16),
                (b1 & 0x80) != 0,
                (ulen.astype(np.int32) - 8),
                fc.astype(np.int64) + self.frames - n,  # global frame index, for ordering
            )
        )

    def _slow_frame(self, blk: FrameBlock, i: int) -> None:
        frame = blk.frame(i)
        d = decode_udp(int(blk.linktypes[i]), frame, self._reasm)
        if d is None:
            self._tcp_frame(int(blk.linktypes[i]), frame, int(blk.ts_ns[i]))
            return
        ts = int(blk.ts_ns[i])
        src, sport, dst, dport, payload = d
        if payload[:4] == b"HEP3":
            from callward.errors import CaptureError
            from callward.quality.hep import decode_hep

            try:
                h = decode_hep(payload)
            except CaptureError:
                return
            ts, src, sport, dst, dport, payload = h.ts_ns, h.src, h.sport, h.dst, h.dport, h.payload
        self.add_datagram(
            Datagram(ts, src, sport, dst, dport, payload), self.frames - len(blk.offsets) + i
        )

    def _tcp_frame(self, linktype: int, frame: bytes, ts: int) -> None:
        t = decode_tcp(linktype, frame)
        if t is None:
            return
        src, sport, dst, dport, seq, flags, payload = t
        for msg in self._tcp.feed((src, sport, dst, dport), seq, flags, payload):
            self.sip.append(Datagram(ts, src, sport, dst, dport, msg))

    def add_datagram(self, d: Datagram, order: int) -> None:
        """One decoded datagram (slow path, HEP, live feed)."""
        if self.first_ts_ns is None:
            self.first_ts_ns = d.ts_ns
        p = d.payload
        if looks_like_sip(p):
            self.sip.append(d)
            return
        if not looks_like_rtp(p) or port_claimed(d.sport, d.dport):
            # RFC 5761 §4: PT 72–76 with the marker bit = RTCP SR..APP.
            rtcp = len(p) >= 8 and p[0] >> 6 == 2 and 200 <= p[1] <= 207
            if rtcp and len(self.rtcp) < self.max_rtcp:
                self.rtcp.append(d)
            return
        ssrc = int.from_bytes(p[8:12], "big")
        sid = self._id((d.src, d.sport, d.dst, d.dport, ssrc))
        self._slow.append(
            (d.ts_ns, sid, (p[2] << 8) | p[3], int.from_bytes(p[4:8], "big"), p[1] & 0x7F,
             bool(p[1] & 0x80), len(p), order)
        )  # fmt: skip

    def columns(self) -> RtpColumns:
        """All RTP packets so far, in capture (frame) order."""
        parts = list(self._cols)
        if self._slow:
            a = np.array(self._slow, dtype=np.int64)
            parts.append(
                (a[:, 0], a[:, 1].astype(np.int32), a[:, 2].astype(np.int32), a[:, 3],
                 a[:, 4].astype(np.int16), a[:, 5].astype(bool), a[:, 6].astype(np.int32), a[:, 7])
            )  # fmt: skip
        if not parts:
            z = np.zeros(0, dtype=np.int64)
            return RtpColumns(z, z.astype(np.int32), z.astype(np.int32), z, z.astype(np.int16),
                              z.astype(bool), z.astype(np.int32))  # fmt: skip
        mixed = bool(self._slow) and bool(self._cols)
        cols = [np.concatenate([p[k] for p in parts]) for k in range(8)]
        self._cols = [tuple(cols)]  # keep one consolidated copy instead of per-chunk pieces
        self._slow = []
        del parts
        if mixed:
            order = np.argsort(cols[7], kind="stable")
            cols = [c[order] for c in cols]
            self._cols = [tuple(cols)]
        return RtpColumns(*cols[:7])
