"""The SDP a basic phone needs (RFC 4566 §5, RFC 3264 §5-6), sans-IO.

Two flavours of one audio stream with static G.711 payload types:

* **plain RTP** (``RTP/AVP``), written by hand in a few lines: what SIPp scenarios, baresip
  without an SRTP module and other lab peers expect;
* **SDES-SRTP** (``RTP/SAVP`` with ``a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:...``, RFC 4568),
  built and read with the full :mod:`callward.sdp` offer/answer engine so the phone follows the
  same security policy as the edge and relay.

The answerer answers in kind: an SDES offer gets an SDES answer (fresh key, RFC 4568 §6.1), a
plain offer a plain answer, unless ``require_srtp`` says plain media is not acceptable (488).
:func:`negotiated_audio` reads a completed exchange into the keys and address the media plane
needs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from callward.errors import CallwardError
from callward.sdp import (
    CodecPolicy,
    CodecSpec,
    LocalMedia,
    NegotiatedStream,
    SecurityMode,
    SecurityPolicy,
    create_answer,
    create_offer,
    negotiate,
    parse_sdp,
    serialize_sdp,
)

__all__ = [
    "SRTP_SUITE",
    "AudioEndpoint",
    "answer_sdp",
    "audio_endpoint",
    "negotiated_audio",
    "offer_sdp",
]

# RFC 3551 §6 static payload types we can send (G.711 only: no codec library needed).
_STATIC = {0: "PCMU/8000", 8: "PCMA/8000"}
_SPECS = {0: CodecSpec("PCMU", 8000, payload_type=0), 8: CodecSpec("PCMA", 8000, payload_type=8)}

#: The one suite the phone offers and accepts: RFC 4568 §6.2.1's mandatory-to-implement suite,
#: which callward.rtp.srtp keys and the usage planner prices.
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
_SDES = SecurityPolicy(preference=(SecurityMode.SDES_SRTP,), sdes_suites=(SRTP_SUITE,))


def _codecs(pts: tuple[int, ...]) -> CodecPolicy:
    # No rtcp-mux: the phone sends no RTCP, so there is nothing to multiplex (RFC 5761).
    return CodecPolicy(
        codecs=tuple(_SPECS[p] for p in pts if p in _SPECS), rtcp_mux=False, single_codec=True
    )


@dataclass(frozen=True, slots=True)
class AudioEndpoint:
    """Where the peer wants our RTP and in which payload types (first is preferred)."""

    host: str
    port: int
    payload_types: tuple[int, ...]


def _sdp(host: str, port: int, session_id: int, version: int, pts: tuple[int, ...]) -> bytes:
    ip = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=callward {session_id} {version} IN {ip} {host}",
        "s=callward",
        f"c=IN {ip} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(p) for p in pts)}",
    ]
    lines += [f"a=rtpmap:{p} {_STATIC[p]}" for p in pts if p in _STATIC]
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


def offer_sdp(
    host: str,
    port: int,
    session_id: int,
    *,
    pts: tuple[int, ...] = (0, 8),
    srtp: bool = False,
    rng: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """An RFC 3264 §5 offer for one G.711 audio stream; ``srtp`` offers RTP/SAVP with one
    SDES crypto line keyed from ``rng`` (RFC 4568 §6.1)."""
    if not srtp:
        return _sdp(host, port, session_id, 1, pts)
    local = LocalMedia(host, (port,), session_id=str(session_id))
    return serialize_sdp(create_offer(local, codecs=_codecs(pts), security=_SDES, rng=rng)).encode()


def _offers_sdes(offer: bytes) -> bool | None:
    """True when the first audio stream is RTP/SAVP (SDES), False for plain; None if unusable."""
    try:
        sd = parse_sdp(offer)
    except CallwardError:
        return None
    for md in sd.media:
        if md.media == "audio" and not md.rejected:
            return "SAVP" in md.proto.upper()
    return None


def answer_sdp(
    offer: bytes,
    host: str,
    port: int,
    session_id: int,
    *,
    require_srtp: bool = False,
    rng: Callable[[int], bytes] = os.urandom,
) -> bytes | None:
    """An RFC 3264 §6 answer in the offer's kind (SDES-SRTP or plain RTP), with the offer's
    payload types we support in the offer's order; None when nothing is acceptable (the caller
    answers 488): no common codec, an unusable crypto suite, or plain RTP when
    ``require_srtp``."""
    sdes = _offers_sdes(offer)
    if sdes:
        local = LocalMedia(host, (port,), session_id=str(session_id))
        try:
            answer = create_answer(parse_sdp(offer), local, codecs=_codecs((0, 8)), security=_SDES,
                                   rng=rng)  # fmt: skip
        except CallwardError:
            return None
        return serialize_sdp(answer).encode()
    if require_srtp:
        return None
    remote = audio_endpoint(offer)
    if remote is None:
        return None
    common = tuple(p for p in remote.payload_types if p in _STATIC)
    if not common:
        return None
    return _sdp(host, port, session_id, 1, common)


def negotiated_audio(local: bytes, remote: bytes, *, we_offered: bool) -> NegotiatedStream | None:
    """The first accepted audio stream of a completed exchange, from our side: where to send,
    which codec, and for SDES the crypto line for each direction (``local_crypto`` keys what
    we send, ``remote_crypto`` what we receive, RFC 4568 §6.1). None when the exchange has no
    usable audio or breaks RFC 3264 (the caller falls back to :func:`audio_endpoint`)."""
    try:
        mine, theirs = parse_sdp(local), parse_sdp(remote)
        offer, answer = (mine, theirs) if we_offered else (theirs, mine)
        streams = negotiate(offer, answer, we_offered=we_offered, codecs=_codecs((0, 8)))
    except CallwardError:
        return None
    return next((s for s in streams if s.media == "audio"), None)


def audio_endpoint(sdp: bytes) -> AudioEndpoint | None:
    """The first audio stream's connection address, port and payload types; None when the body
    has no usable audio stream. Media-level ``c=`` overrides session-level (RFC 4566 §5.7)."""
    try:
        text = sdp.decode("utf-8")
    except UnicodeDecodeError:
        return None
    host: str | None = None
    port: int | None = None
    pts: tuple[int, ...] = ()
    in_audio = False
    for line in text.splitlines():
        if line.startswith("m="):
            if in_audio:
                break
            parts = line[2:].split()
            if len(parts) >= 4 and parts[0] == "audio" and parts[1].isdigit():
                in_audio = True
                port = int(parts[1])
                pts = tuple(int(p) for p in parts[3:] if p.isdigit() and int(p) < 128)
        elif line.startswith("c="):
            parts = line[2:].split()
            if len(parts) == 3 and (in_audio or host is None):
                host = parts[2].split("/")[0]
    if not in_audio or host is None or port is None or not 0 < port < 65536:
        return None
    return AudioEndpoint(host, port, pts)
