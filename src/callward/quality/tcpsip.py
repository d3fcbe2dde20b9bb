"""SIP over TCP in captures: in-order segment reassembly per flow, then RFC 3261 §18.3 framing.

Why minimal: analysis only needs the SIP messages, not a full TCP state machine. Segments are
accepted in sequence order per direction; a retransmission (sequence already consumed) is
dropped, a gap (lost capture data) resets the flow so framing restarts at the next message.
Buffers are bounded so a hostile capture cannot grow memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from callward.errors import CallwardError

__all__ = ["TcpSipReassembler"]

MAX_BUFFER = 256 * 1024
MAX_FLOWS = 4096


@dataclass(slots=True)
class _Flow:
    next_seq: int
    buf: bytearray


class TcpSipReassembler:
    def __init__(self) -> None:
        self.flows: dict[tuple[str, int, str, int], _Flow] = {}

    def feed(
        self, flow: tuple[str, int, str, int], seq: int, flags: int, payload: bytes
    ) -> list[bytes]:
        """Complete SIP messages that this segment finishes (possibly none)."""
        f = self.flows.get(flow)
        if flags & 0x02:  # SYN: the stream starts after it
            self.flows[flow] = _Flow((seq + 1) & 0xFFFFFFFF, bytearray())
            return []
        if not payload:
            return []
        if f is None:
            if not _starts_sip(payload):
                return []  # mid-stream join: wait for a segment that starts a message
            if len(self.flows) >= MAX_FLOWS:
                self.flows.pop(next(iter(self.flows)))
            f = self.flows[flow] = _Flow(seq, bytearray())
        delta = (seq - f.next_seq) & 0xFFFFFFFF
        if delta >= 1 << 31:  # starts before what we consumed: a retransmission
            skip = (f.next_seq - seq) & 0xFFFFFFFF
            if skip >= len(payload):
                return []
            payload = payload[skip:]
            seq = f.next_seq
        elif delta:  # a hole (capture lost data): restart framing at a message boundary
            f.buf.clear()
            if not _starts_sip(payload):
                f.next_seq = (seq + len(payload)) & 0xFFFFFFFF
                return []
        f.next_seq = (seq + len(payload)) & 0xFFFFFFFF
        f.buf += payload
        out: list[bytes] = []
        from callward.sip import frame_stream  # loads the SIP stack only for SIP over TCP

        while f.buf:
            try:
                msg, used = frame_stream(bytes(f.buf))
            except CallwardError:
                f.buf.clear()
                break
            if msg is None:
                if used:
                    del f.buf[:used]
                    continue
                break
            out.append(msg)
            del f.buf[:used]
        if len(f.buf) > MAX_BUFFER:
            f.buf.clear()
        return out


def _starts_sip(p: bytes) -> bool:
    from callward.quality.fastpath import looks_like_sip

    return looks_like_sip(p.lstrip(b"\r\n"))
