"""ICE-lite on the phone's media port (RFC 8445 §2.5, RFC 8839 §5.3): for a peer that insists
on ICE (a WebRTC browser), the phone offers or answers ``a=ice-lite`` with one host candidate —
its RTP port — and answers the peer's connectivity checks there (short-term credentials:
USERNAME ``ours:theirs``, MESSAGE-INTEGRITY keyed with our ice-pwd, RFC 8489 §9.1). The full
agent (the browser) is controlling and nominates; DTLS-SRTP then runs on the same port
(RFC 7983 demultiplexing: STUN is claimed here, DTLS by :class:`~callward.ua.media_security.
DtlsMedia`, the rest is RTP/RTCP)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from aioice import stun as _stun

from callward.nat.stun import is_stun
from callward.ua.media import RtpEndpoint

__all__ = ["IceLite"]

Demux = Callable[[bytes, tuple[str, int]], bool]


class IceLite:
    """Our ICE-lite credentials and the responder for one media port."""

    def __init__(self) -> None:
        self.ufrag = secrets.token_hex(4)
        self.pwd = secrets.token_hex(16)  # 32 chars >= the 22 RFC 8839 §5.4 asks
        self.checks = 0  # valid Binding requests answered
        self.rejected = 0  # STUN we dropped: wrong USERNAME or MESSAGE-INTEGRITY
        self.nominated: tuple[str, int] | None = None  # where USE-CANDIDATE came from
        self._endpoint: RtpEndpoint | None = None
        self._next: Demux | None = None

    def session_lines(self) -> list[str]:
        return ["a=ice-lite"]

    def media_lines(self, host: str, port: int) -> list[str]:
        # One host candidate: foundation 1, component 1, type preference 126 (RFC 8445 §5.1.2).
        priority = (126 << 24) | (65535 << 8) | 255
        return [
            f"a=ice-ufrag:{self.ufrag}",
            f"a=ice-pwd:{self.pwd}",
            f"a=candidate:1 1 udp {priority} {host} {port} typ host",
            "a=end-of-candidates",
        ]

    def attach(self, endpoint: RtpEndpoint) -> None:
        """Claim STUN on ``endpoint``; everything else goes to the demultiplexer already there
        (DTLS). Call after the DTLS adapter installed itself."""
        self._endpoint = endpoint
        self._next = endpoint.demux
        endpoint.demux = self._demux

    def _demux(self, data: bytes, addr: tuple[str, int]) -> bool:
        if not is_stun(data):
            return self._next(data, addr) if self._next is not None else False
        reply = self.answer(data, addr)
        if reply is not None and self._endpoint is not None:
            self._endpoint._sendto(reply, addr)
        return True

    def answer(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        """The Binding success for a valid check from ``source``; None (dropped) otherwise."""
        try:
            msg = _stun.parse_message(data)
        except Exception:  # aioice raises ValueError, struct.error, IndexError, ...
            self.rejected += 1
            return None
        if msg.message_method != _stun.Method.BINDING or msg.message_class != _stun.Class.REQUEST:
            return None  # indications (consent keep-alives without a response), responses
        username = msg.attributes.get("USERNAME", "")
        key = self.pwd.encode()
        if not str(username).startswith(f"{self.ufrag}:"):
            self.rejected += 1
            return None
        if not msg.check_message_integrity(key):
            self.rejected += 1
            return None
        self.checks += 1
        if "USE-CANDIDATE" in msg.attributes:
            self.nominated = source
        resp = _stun.Message(
            _stun.Method.BINDING,
            _stun.Class.RESPONSE,
            transaction_id=msg.transaction_id,
            attributes={"XOR-MAPPED-ADDRESS": source},
        )
        resp.add_message_integrity(key)
        resp.add_fingerprint()
        return bytes(resp)
