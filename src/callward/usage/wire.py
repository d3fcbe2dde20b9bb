"""Bytes on the wire from a capture: what each direction of a call really cost.

Every UDP/TCP packet of a pcap/pcapng file is classified by its first bytes, not by port:

- **RTP** and **RTCP**: RTP version 2; RTCP when the second byte is a packet type 192-223
  (RFC 5761 §4, which is how a multiplexed port tells them apart). SRTP/SRTCP keep these
  headers in the clear (RFC 3711 §3.1), so secured streams classify the same way.
- **STUN**: the RFC 5389 §6 magic cookie at bytes 4-7 (keep-alives, binding requests).
- **SIP**: a request line or status line, or a bare CRLF/CRLFCRLF keep-alive (RFC 5626 §3.5.1);
  over TCP every segment of a SIP port pair counts (TCP ACKs and TLS records included, since
  the radio carries them).

A packet costs its IP datagram: IP header + UDP/TCP header + payload (the link layer differs
between radio and loopback and is not counted). Each flow (source -> destination address and
port, kind) reports packets, bytes, first/last time, and bytes per minute over its own span.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from callward.errors import CaptureError
from callward.quality.capture import _ip_from_link, decode_ip, iter_frames

__all__ = ["Flow", "WireUsage", "classify", "measure_capture", "rtp_datagrams"]

_SIP_STARTS = (b"SIP/2.0 ", b"INVITE ", b"ACK ", b"BYE ", b"CANCEL ", b"REGISTER ", b"OPTIONS ",
               b"PRACK ", b"UPDATE ", b"INFO ", b"SUBSCRIBE ", b"NOTIFY ", b"MESSAGE ",
               b"REFER ", b"PUBLISH ")  # fmt: skip
MAX_FLOWS = 10_000


def classify(payload: bytes) -> str:
    """``rtp``, ``rtcp``, ``stun``, ``sip`` or ``other`` for a UDP payload."""
    if len(payload) >= 20 and payload[4:8] == b"\x21\x12\xa4\x42" and payload[0] < 2:
        return "stun"
    if len(payload) >= 8 and payload[0] >> 6 == 2:
        return "rtcp" if 192 <= payload[1] <= 223 else "rtp"
    if payload in (b"\r\n", b"\r\n\r\n") or payload.startswith(_SIP_STARTS):
        return "sip"
    return "other"


@dataclass(slots=True)
class Flow:
    src: str
    dst: str
    kind: str
    packets: int = 0
    ip_bytes: int = 0
    first_ns: int = 0
    last_ns: int = 0

    @property
    def seconds(self) -> float:
        return (self.last_ns - self.first_ns) / 1e9

    def bytes_per_minute(self, seconds: float | None = None) -> float:
        """Bytes per minute over ``seconds`` (the call's media time), default the flow's span."""
        span = self.seconds if seconds is None else seconds
        return self.ip_bytes * 60.0 / span if span > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "src": self.src,
            "dst": self.dst,
            "kind": self.kind,
            "packets": self.packets,
            "ip_bytes": self.ip_bytes,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class WireUsage:
    flows: tuple[Flow, ...]

    def of(self, kind: str) -> list[Flow]:
        return [f for f in self.flows if f.kind == kind]

    def total(self, kind: str) -> int:
        return sum(f.ip_bytes for f in self.flows if f.kind == kind)


def _ip_length(linktype: int, frame: bytes) -> int:
    link = _ip_from_link(linktype, frame)
    if link is None:
        return 0
    _et, off = link
    if len(frame) < off + 8:
        return 0
    if frame[off] >> 4 == 4:
        return int.from_bytes(frame[off + 2 : off + 4], "big")
    return 40 + int.from_bytes(frame[off + 4 : off + 6], "big")


def measure_capture(path: str | Path, *, sip_ports: Iterable[int] = ()) -> WireUsage:
    """Flows of a capture, classified as in the module docstring. TCP segments count as SIP
    when either port is in ``sip_ports`` (or 5060/5061), else as ``tcp``."""
    ports = {5060, 5061, *sip_ports}
    flows: dict[tuple[str, str, str], Flow] = {}
    try:
        frames = iter_frames(path)
        for ts, lt, frame in frames:
            ip = decode_ip(lt, frame)
            if ip is None or ip[0] not in (6, 17) or len(ip[3]) < 8:
                continue
            proto, src, dst, l4 = ip
            sport, dport = (l4[0] << 8) | l4[1], (l4[2] << 8) | l4[3]
            if proto == 17:
                kind = classify(l4[8:])
            else:
                kind = "sip" if sport in ports or dport in ports else "tcp"
            key = (f"{src}:{sport}", f"{dst}:{dport}", kind)
            flow = flows.get(key)
            if flow is None:
                if len(flows) >= MAX_FLOWS:
                    raise CaptureError(f"more than {MAX_FLOWS} flows in {path}")
                flow = flows[key] = Flow(key[0], key[1], kind, first_ns=ts)
            flow.packets += 1
            flow.ip_bytes += _ip_length(lt, frame)
            flow.last_ns = ts
    except OSError as exc:
        raise CaptureError(f"cannot read capture {path}: {exc.strerror}") from None
    return WireUsage(tuple(flows.values()))


def rtp_datagrams(path: str | Path, *, max_packets: int = 1_000_000) -> dict[str, list[bytes]]:
    """The IPv4 RTP datagrams each sender ("addr:port") sent, in capture order: what a header
    compressor on the sender's radio link sees (packets lost later included)."""
    out: dict[str, list[bytes]] = {}
    n = 0
    for _ts, lt, frame in iter_frames(path):
        link = _ip_from_link(lt, frame)
        if link is None or link[0] != 0x0800 or len(frame) < link[1] + 28:
            continue
        ip = frame[link[1] :]
        if ip[9] != 17 or ip[0] != 0x45:
            continue
        ip = ip[: int.from_bytes(ip[2:4], "big")]
        if classify(ip[28:]) != "rtp":
            continue
        key = f"{'.'.join(map(str, ip[12:16]))}:{int.from_bytes(ip[20:22], 'big')}"
        out.setdefault(key, []).append(ip)
        n += 1
        if n >= max_packets:
            break
    return out
