"""Synthetic capture writer: pcap/pcapng files with RTP (and SIP) under known impairments.

Why: the analyser must agree with tshark on captures whose ground truth we control (loss,
bursts, jitter, reordering, duplicates, sequence wraparound, SSRC change). Frames are built
byte by byte here, independently of the readers in capture.py, so a reader bug cannot hide
behind a matching writer bug.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Frame",
    "RtpSpec",
    "ethernet_ipv4_tcp",
    "ethernet_ipv4_udp",
    "ethernet_ipv6_udp",
    "ipv4_fragments",
    "iter_bulk_rtp",
    "merge",
    "rtp_frames",
    "rtp_header",
    "sdp_body",
    "sip_call",
    "sip_frame",
    "sip_frames_over_tcp",
    "write_pcap",
    "write_pcapng",
]


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured link-layer frame at time ``ts`` (seconds since the epoch)."""

    ts: float
    data: bytes


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip4(addr: str) -> bytes:
    return bytes(int(p) for p in addr.split("."))


def ipv4_packet(
    src: str, dst: str, proto: int, payload: bytes, ident: int = 0, frag: int = 0
) -> bytes:
    """An IPv4 header (RFC 791) with a correct checksum in front of ``payload``."""
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0, _ip4(src), _ip4(dst)
    )
    c = _csum(hdr)
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + payload


def udp_datagram(sport: int, dport: int, payload: bytes) -> bytes:
    # Checksum 0 = not computed, legal for UDP over IPv4 (RFC 768).
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


_MAC = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"


def ethernet_ipv4_udp(
    src: str, sport: int, dst: str, dport: int, payload: bytes, vlan: int | None = None
) -> bytes:
    """Ethernet II (optionally 802.1Q tagged) + IPv4 + UDP."""
    ip = ipv4_packet(src, dst, 17, udp_datagram(sport, dport, payload))
    if vlan is not None:
        return _MAC + struct.pack("!HHH", 0x8100, vlan & 0xFFF, 0x0800) + ip
    return _MAC + b"\x08\x00" + ip


def ethernet_ipv6_udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """Ethernet II + IPv6 (RFC 8200) + UDP with its mandatory checksum."""
    import ipaddress

    s = ipaddress.IPv6Address(src).packed
    d = ipaddress.IPv6Address(dst).packed
    ulen = 8 + len(payload)
    pseudo = s + d + struct.pack("!IxxxB", ulen, 17)
    udp0 = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    c = _csum(pseudo + udp0) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, ulen, c) + payload
    ip6 = struct.pack("!IHBB", 6 << 28, ulen, 17, 64) + s + d
    return _MAC + b"\x86\xdd" + ip6 + udp


def ipv4_fragments(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    payload: bytes,
    mtu_payload: int = 64,
    ident: int = 7,
) -> list[bytes]:
    """Ethernet frames carrying one UDP datagram split into IPv4 fragments (RFC 791 §2.3)."""
    whole = udp_datagram(sport, dport, payload)
    step = mtu_payload - mtu_payload % 8
    out = []
    for off in range(0, len(whole), step):
        chunk = whole[off : off + step]
        more = 0x2000 if off + step < len(whole) else 0
        out.append(_MAC + b"\x08\x00" + ipv4_packet(src, dst, 17, chunk, ident, more | (off // 8)))
    return out


def rtp_header(pt: int, seq: int, ts: int, ssrc: int, marker: bool = False) -> bytes:
    """The 12-byte RTP fixed header (RFC 3550 §5.1), version 2, no CSRC."""
    return struct.pack(
        "!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc
    )


@dataclass(slots=True)
class RtpSpec:
    """One RTP stream with impairments applied on the way to the capture point.

    ``loss`` drops random packets; ``bursts`` lists (first index, length) runs that are
    dropped; ``jitter_ms`` adds a uniform [0, jitter) delay per packet (which can reorder
    when larger than ``ptime_ms``); ``reorder`` swaps given indexes with their successor;
    ``duplicates`` repeats given indexes; ``ssrc_change_at`` switches SSRC from that index.
    """

    src: str = "10.0.0.1"
    sport: int = 40000
    dst: str = "10.0.0.2"
    dport: int = 40002
    ssrc: int = 0x11223344
    pt: int = 0
    clock_rate: int = 8000
    ptime_ms: int = 20
    count: int = 500
    seq0: int = 1000
    ts0: int = 160000
    start: float = 1_700_000_000.0
    payload_len: int = 160
    loss: float = 0.0
    bursts: list[tuple[int, int]] = field(default_factory=list)
    jitter_ms: float = 0.0
    reorder: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    ssrc_change_at: int | None = None
    marker_at: list[int] = field(default_factory=list)
    pt_at: dict[int, int] = field(default_factory=dict)  # index → payload type (CN, DTMF)
    ts_jump_at: dict[int, int] = field(default_factory=dict)  # index → extra timestamp ticks
    seed: int = 1
    ipv6: bool = False
    vlan: int | None = None


def rtp_frames(spec: RtpSpec) -> list[Frame]:
    """Frames of one impaired stream, sorted by capture time (as a sniffer records them)."""
    rng = random.Random(spec.seed)
    dropped: set[int] = set()
    for first, n in spec.bursts:
        dropped.update(range(first, first + n))
    spt = spec.clock_rate * spec.ptime_ms // 1000
    payload = bytes(spec.payload_len)
    items: list[tuple[float, int, bytes]] = []
    order = 0
    times = [spec.start + i * spec.ptime_ms / 1000 for i in range(spec.count)]
    for i in spec.reorder:
        if 0 <= i < spec.count - 1:
            times[i], times[i + 1] = times[i + 1], times[i]
    for i in range(spec.count):
        lost = i in dropped or (spec.loss > 0 and rng.random() < spec.loss)
        delay = rng.random() * spec.jitter_ms / 1000 if spec.jitter_ms else 0.0
        if lost:
            continue
        ssrc = spec.ssrc
        if spec.ssrc_change_at is not None and i >= spec.ssrc_change_at:
            ssrc = (spec.ssrc ^ 0x5A5A5A5A) & 0xFFFFFFFF
        jump = sum(v for k, v in spec.ts_jump_at.items() if k <= i)
        pt = spec.pt_at.get(i, spec.pt)
        rtp = rtp_header(pt, spec.seq0 + i, spec.ts0 + i * spt + jump, ssrc, i in spec.marker_at)
        data = (
            ethernet_ipv6_udp(spec.src, spec.sport, spec.dst, spec.dport, rtp + payload)
            if spec.ipv6
            else ethernet_ipv4_udp(
                spec.src, spec.sport, spec.dst, spec.dport, rtp + payload, spec.vlan
            )
        )
        t = round(times[i] + delay, 6)
        items.append((t, order, data))
        order += 1
        if i in spec.duplicates:
            items.append((round(t + 0.0005, 6), order, data))
            order += 1
    items.sort(key=lambda x: (x[0], x[1]))
    return [Frame(t, d) for t, _, d in items]


def sip_frame(ts: float, src: str, sport: int, dst: str, dport: int, text: str) -> Frame:
    """A SIP message over UDP, CRLF line endings and a correct Content-Length."""
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    body_b = body.replace("\n", "\r\n").encode()
    lines = [ln for ln in head.split("\n") if not ln.lower().startswith("content-length")]
    lines.append(f"Content-Length: {len(body_b)}")
    msg = ("\r\n".join(lines) + "\r\n\r\n").encode() + body_b
    return Frame(ts, ethernet_ipv4_udp(src, sport, dst, dport, msg))


def merge(*streams: Iterable[Frame]) -> list[Frame]:
    """All frames in capture-time order (stable for equal times)."""
    out = [f for s in streams for f in s]
    out.sort(key=lambda f: f.ts)
    return out


def write_pcap(
    path: str | Path,
    frames: Iterable[Frame],
    linktype: int = 1,
    nsec: bool = False,
    big_endian: bool = False,
) -> None:
    """Classic libpcap file; ``nsec`` selects the nanosecond magic 0xa1b23c4d."""
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    div = 1_000_000_000 if nsec else 1_000_000
    with open(path, "wb") as f:
        f.write(struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype))
        for fr in frames:
            total = round(fr.ts * 1_000_000) * (div // 1_000_000)  # exact: via integer µs
            sec, frac = divmod(total, div)
            f.write(struct.pack(e + "IIII", sec, frac, len(fr.data), len(fr.data)))
            f.write(fr.data)


def _block(btype: int, body: bytes) -> bytes:
    pad = (-len(body)) % 4
    total = 12 + len(body) + pad
    return struct.pack("<II", btype, total) + body + b"\0" * pad + struct.pack("<I", total)


def write_pcapng(
    path: str | Path,
    frames: Iterable[Frame],
    linktype: int = 1,
    tsresol: int = 6,
    simple: bool = False,
) -> None:
    """pcapng with one SHB, one IDB (if_tsresol = 10^-tsresol) and EPBs (or SPBs)."""
    with open(path, "wb") as f:
        f.write(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        opt = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
        f.write(_block(1, struct.pack("<HHI", linktype, 0, 262144) + opt))
        div = 10**tsresol
        for fr in frames:
            if simple:
                f.write(_block(3, struct.pack("<I", len(fr.data)) + fr.data))
                continue
            us = round(fr.ts * 1_000_000)
            t = us * div // 1_000_000 if tsresol >= 6 else round(us / (1_000_000 // div))
            f.write(
                _block(
                    6,
                    struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(fr.data), len(fr.data))
                    + fr.data,
                )
            )


def iter_bulk_rtp(
    n_packets: int,
    n_streams: int = 50,
    loss: float = 0.01,
    seed: int = 3,
    *,
    pt: int = 18,
    payload_len: int = 20,
    ts_step: int = 160,
) -> Iterator[Frame]:
    """A large interleaved multi-stream capture for benchmarks (streams share the clock).
    Defaults: G.729 (PT 18, 20 bytes per 20 ms); G.711 is ``pt=0, payload_len=160``."""
    rng = random.Random(seed)
    per = n_packets // n_streams
    payload = bytes(payload_len)
    base = 1_700_000_000.0
    for i in range(int(per / (1 - loss)) + 1):
        for s in range(n_streams):
            if rng.random() < loss:
                continue
            rtp = rtp_header(pt, i, i * ts_step, 0x1000 + s)
            data = ethernet_ipv4_udp(
                f"10.1.{s // 200}.{s % 200 + 1}",
                20000 + 2 * s,
                "10.2.0.1",
                30000 + 2 * s,
                rtp + payload,
            )
            yield Frame(round(base + i * 0.02 + s * 0.0001 + rng.random() * 0.004, 6), data)


def sdp_body(
    ip: str, port: int, pt: int = 0, name: str = "PCMU", rate: int = 8000,
    crypto: tuple[int, str] | None = None,
) -> str:  # fmt: skip
    """A minimal audio offer/answer (RFC 8866) with one codec and telephone-event; with
    ``crypto`` an RTP/SAVP section with one SDES a=crypto line (RFC 4568)."""
    proto = "RTP/SAVP" if crypto else "RTP/AVP"
    key = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz" if crypto else ""
    cr = f"a=crypto:{crypto[0]} {crypto[1]} {key}\n" if crypto else ""
    return (
        f"v=0\no=- 1 1 IN IP4 {ip}\ns=-\nc=IN IP4 {ip}\nt=0 0\n"
        f"m=audio {port} {proto} {pt} 101\na=rtpmap:{pt} {name}/{rate}\n"
        f"a=rtpmap:101 telephone-event/8000\n{cr}a=sendrecv\n"
    )


def sip_call(
    call_id: str,
    t0: float,
    caller: str,
    callee: str,
    offer: tuple[str, int],
    answer: tuple[str, int] | None,
    *,
    final_status: int = 200,
    ring_after_s: float | None = 0.2,
    answer_after_s: float = 1.0,
    bye_after_s: float | None = None,
    bye_from: str = "caller",
    bye_reason: str | None = None,
    session_expires: int | None = None,
    pt: int = 0,
    codec: str = "PCMU",
    rate: int = 8000,
    offer_crypto: tuple[int, str] | None = None,
    answer_crypto: tuple[int, str] | None = None,
    late_offer: bool = False,
) -> list[Frame]:
    """The SIP messages of one call over UDP port 5060 between two signalling addresses."""
    a_uri, b_uri = "sip:alice@example.invalid", "sip:bob@example.invalid"

    def msg(start: str, cseq: str, extra: str = "", body: str = "") -> str:
        ctype = "Content-Type: application/sdp\n" if body else ""
        return (
            f"{start}\nVia: SIP/2.0/UDP {caller}:5060;branch=z9hG4bK{call_id[:8]}\n"
            f"From: <{a_uri}>;tag=a1\nTo: <{b_uri}>{';tag=b1' if 'SIP/2.0 ' in start[:8] else ''}\n"
            f"Call-ID: {call_id}\nCSeq: {cseq}\nMax-Forwards: 70\n"
            f"Contact: <sip:alice@{caller}:5060>\n{extra}{ctype}\n{body}"
        )

    se = f"Session-Expires: {session_expires};refresher=uac\n" if session_expires else ""
    a_sdp = sdp_body(*offer, pt, codec, rate, offer_crypto)
    # Late offer (RFC 3261 §13.2.1): empty INVITE, the caller's SDP travels in the ACK.
    invite = msg(f"INVITE {b_uri} SIP/2.0", "1 INVITE", se, "" if late_offer else a_sdp)
    out = [
        sip_frame(t0, caller, 5060, callee, 5060, invite),
        sip_frame(t0 + 0.01, callee, 5060, caller, 5060, msg("SIP/2.0 100 Trying", "1 INVITE")),
    ]
    if ring_after_s is not None:
        out.append(sip_frame(t0 + ring_after_s, callee, 5060, caller, 5060,
                             msg("SIP/2.0 180 Ringing", "1 INVITE")))  # fmt: skip
    ta = t0 + answer_after_s
    if final_status < 300:
        body = sdp_body(*answer, pt, codec, rate, answer_crypto) if answer else ""
        out.append(sip_frame(ta, callee, 5060, caller, 5060,
                             msg(f"SIP/2.0 {final_status} OK", "1 INVITE", se, body)))  # fmt: skip
        ack_body = a_sdp if late_offer else ""
        out.append(sip_frame(ta + 0.01, caller, 5060, callee, 5060,
                             msg(f"ACK {b_uri} SIP/2.0", "1 ACK", "", ack_body)))  # fmt: skip
        if bye_after_s is not None:
            src, dst = (caller, callee) if bye_from == "caller" else (callee, caller)
            reason = f"Reason: {bye_reason}\n" if bye_reason else ""
            out.append(sip_frame(ta + bye_after_s, src, 5060, dst, 5060,
                                 msg(f"BYE {b_uri} SIP/2.0", "2 BYE", reason)))  # fmt: skip
            out.append(sip_frame(ta + bye_after_s + 0.01, dst, 5060, src, 5060,
                                 msg("SIP/2.0 200 OK", "2 BYE")))  # fmt: skip
    else:
        out.append(sip_frame(ta, callee, 5060, caller, 5060,
                             msg(f"SIP/2.0 {final_status} Failed", "1 INVITE")))  # fmt: skip
        out.append(sip_frame(ta + 0.01, caller, 5060, callee, 5060,
                             msg(f"ACK {b_uri} SIP/2.0", "1 ACK")))  # fmt: skip
    return out


def ethernet_ipv4_tcp(
    src: str, sport: int, dst: str, dport: int, seq: int, payload: bytes, flags: int = 0x18
) -> bytes:
    """Ethernet + IPv4 + a 20-byte TCP header (RFC 9293 §3.1; checksum left 0: not checked)."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 0, 5 << 4, flags, 65535, 0, 0)
    return _MAC + b"\x08\x00" + ipv4_packet(src, dst, 6, tcp + payload)


def sip_frames_over_tcp(
    frames: list[Frame], mss: int = 1400, retransmit: bool = False
) -> list[Frame]:
    """Re-send the SIP payloads of UDP ``frames`` as TCP segments (one connection per
    direction, segments of at most ``mss`` bytes, optionally every segment sent twice)."""
    seqs: dict[tuple[str, int, str, int], int] = {}
    out: list[Frame] = []
    for f in frames:
        ip = f.data[14:]
        ihl = (ip[0] & 0x0F) * 4
        src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
        sport, dport = struct.unpack("!HH", ip[ihl : ihl + 4])
        payload = ip[ihl + 8 :]
        key = (src, sport, dst, dport)
        if key not in seqs:
            seqs[key] = 1000
            out.append(Frame(f.ts, ethernet_ipv4_tcp(src, sport, dst, dport, 999, b"", 0x02)))
        for k in range(0, len(payload), mss):
            chunk = payload[k : k + mss]
            seg = ethernet_ipv4_tcp(src, sport, dst, dport, seqs[key], chunk)
            out.append(Frame(f.ts, seg))
            if retransmit:
                out.append(Frame(f.ts + 0.0001, seg))
            seqs[key] += len(chunk)
    return out
