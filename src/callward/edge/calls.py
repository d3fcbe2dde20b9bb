"""Call (dialog) bookkeeping at the edge: events and RFC 4028 session timers.

The proxy is not a dialog party, but it sees every request and response that Record-Route
brings back through it, which is enough to emit CallStarted/Answered/Ended and to supervise
session timers: a dialog whose session interval passes with no refresh (re-INVITE/UPDATE 2xx)
is stale (a phone lost coverage mid-call); the edge tears it down with BYEs to both sides and a
``CallEnded(reason="session-expired")`` so billing and media resources do not leak.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from callward.sip.peer import Peer

__all__ = ["CallState", "sdp_summary"]


@dataclass(slots=True)
class CallState:
    call_id: str
    caller: str  # AOR-ish "user@host" (personal data: events only, never logs)
    callee: str
    started: float
    caller_peer: Peer
    caller_contact: str = ""
    caller_from: str = ""  # From header value (with tag)
    invite_cseq: int = 1
    answered: bool = False
    callee_peer: Peer | None = None
    callee_contact: str = ""
    callee_to: str = ""  # To header value (with tag) from the 2xx
    session_expires: int = 0  # 0: not supervised
    expires_at: float = 0.0
    refresher: str = ""
    inserted_se: bool = False  # we added Session-Expires to the INVITE (RFC 4028 §8.1)
    uac_timer: bool = False  # the caller said Supported: timer
    hidden_routes: tuple[str, ...] = ()  # internal Record-Route values hidden from outside


_RTPMAP = re.compile(rb"^a=rtpmap:\d+ ([A-Za-z0-9\-_.]+/\d+)", re.M)


def sdp_summary(body: bytes) -> str:
    """A short, non-personal description of an SDP offer/answer: first codec and the media
    security in use (for events and CDRs). Addresses are deliberately left out."""
    if not body or b"m=" not in body:
        return ""
    m = _RTPMAP.search(body)
    codec = m.group(1).decode("ascii", "replace") if m else ""
    if not codec:
        mline = re.search(rb"^m=audio \d+ [A-Z/]+ (\d+)", body, re.M)
        static = {b"0": "PCMU/8000", b"8": "PCMA/8000", b"9": "G722/8000", b"18": "G729/8000"}
        codec = static.get(mline.group(1), "") if mline else ""
    if b"a=crypto:" in body:
        sec = "srtp-sdes"
    elif b"a=fingerprint:" in body:
        sec = "dtls-srtp"
    else:
        sec = "rtp"
    return f"{codec} {sec}".strip()
