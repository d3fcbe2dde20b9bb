"""SRTP-only policy at the edge: an offer whose media would travel as plain RTP is refused.

RFC 3261 §21.4.26 ``488 Not Acceptable Here`` with a ``Warning`` (§20.43; code 399,
"miscellaneous", since no 3xx warn-code names the transport protocol) is what a UAS answers
when it cannot accept the session description; the edge answers it for its users when
``edge.srtp_policy`` says the leg must be secured:

- ``optional``: no check (plain RTP passes);
- ``untrusted``: offers from sources not in ``edge.trusted`` must secure every active media
  stream;
- ``always``: every offer must.

A stream is secure when its proto is an SRTP profile (RFC 3711 ``RTP/SAVP``, RFC 5124
``RTP/SAVPF``, RFC 5764 ``UDP/TLS/RTP/SAVP[F]``, TCP/TLS variants); a disabled stream (port 0)
carries nothing. An offer with ``RTP/AVP`` plus ``a=crypto`` is still plain RTP on the wire
(the proto is what the answerer honours, RFC 4568 §5.1.1 "best effort" is not SRTP-only).
A body that is not SDP is left alone (no media offered). Pure functions: the proxy asks.
"""

from __future__ import annotations

from typing import Literal

from callward.errors import SdpError
from callward.sdp.parser import parse_sdp
from callward.sip.message import Request

__all__ = ["SRTP_POLICIES", "SrtpPolicy", "plain_rtp_streams", "srtp_refusal"]

SrtpPolicy = Literal["optional", "untrusted", "always"]
SRTP_POLICIES: tuple[str, ...] = ("optional", "untrusted", "always")

_SECURE = frozenset(
    {
        "RTP/SAVP",
        "RTP/SAVPF",
        "UDP/TLS/RTP/SAVP",
        "UDP/TLS/RTP/SAVPF",
        "TCP/TLS/RTP/SAVP",
        "TCP/TLS/RTP/SAVPF",
        "TCP/DTLS/RTP/SAVP",
        "TCP/DTLS/RTP/SAVPF",
    }
)
_RTP = frozenset({"RTP/AVP", "RTP/AVPF", "TCP/RTP/AVP", "TCP/RTP/AVPF"})


def plain_rtp_streams(body: bytes) -> int:
    """How many active streams of an SDP body would carry plain RTP; -1 if unparseable."""
    try:
        sd = parse_sdp(body)
    except SdpError:
        return -1
    return sum(1 for m in sd.media if m.port != 0 and m.proto.upper() in _RTP)


def srtp_refusal(
    request: Request, *, policy: str, trusted: bool, host: str
) -> tuple[int, str, tuple[tuple[str, str], ...]] | None:
    """``(488, reason, (Warning,))`` when ``request`` offers plain RTP against ``policy``."""
    if policy == "optional" or (policy == "untrusted" and trusted):
        return None
    if request.method not in ("INVITE", "UPDATE") or not request.body:
        return None
    ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/sdp":
        return None
    plain = plain_rtp_streams(request.body)
    if plain == 0:
        return None
    text = (
        "SRTP required: offer RTP/SAVP, RTP/SAVPF or UDP/TLS/RTP/SAVPF"
        if plain > 0
        else "unreadable session description"
    )
    return 488, "Not Acceptable Here", (("Warning", f'399 {host} "{text}"'),)
