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
from callward.sdp.policy import choose_security
from callward.sdp.security import Fingerprint

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
_DTLS = SecurityPolicy(preference=(SecurityMode.DTLS_SRTP,), sdes_suites=(SRTP_SUITE,))


def answer_policy(*, require_srtp: bool, dtls: bool) -> SecurityPolicy:
    """What the phone accepts in an offer (sdp/policy.py decides): DTLS-SRTP when we have a
    certificate, then SDES; plain RTP only when the phone was told plain is fine."""
    modes = (SecurityMode.DTLS_SRTP, SecurityMode.SDES_SRTP) if dtls else (SecurityMode.SDES_SRTP,)
    plain = not require_srtp
    return SecurityPolicy(
        preference=modes, sdes_suites=(SRTP_SUITE,), allow_plain_rtp=plain, trusted_leg=plain
    )


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


def _sdp(
    host: str,
    port: int,
    session_id: int,
    version: int,
    pts: tuple[int, ...],
    direction: str = "sendrecv",
) -> bytes:
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
    lines += ["a=ptime:20", f"a={direction}"]
    return ("\r\n".join(lines) + "\r\n").encode()


def offer_sdp(
    host: str,
    port: int,
    session_id: int,
    *,
    pts: tuple[int, ...] = (0, 8),
    srtp: bool = False,
    dtls: Fingerprint | None = None,
    rng: Callable[[int], bytes] = os.urandom,
    version: int = 1,
    hold: bool = False,
) -> bytes:
    """An RFC 3264 §5 offer for one G.711 audio stream; ``srtp`` offers RTP/SAVP with one
    SDES crypto line keyed from ``rng`` (RFC 4568 §6.1); ``dtls`` (our certificate's
    fingerprint) offers UDP/TLS/RTP/SAVP with ``a=setup:actpass`` (RFC 5763 §5). A re-offer
    passes the next ``version`` (RFC 3264 §8: o= version grows); ``hold`` offers sendonly."""
    if dtls is not None or srtp:
        local = LocalMedia(host, (port,), session_id=str(session_id), fingerprint=dtls)
        policy = _DTLS if dtls is not None else _SDES
        offer = create_offer(local, codecs=_codecs(pts), security=policy, rng=rng,
                             origin=local.origin(version), hold=hold)  # fmt: skip
        return serialize_sdp(offer).encode()
    return _sdp(host, port, session_id, version, pts, "sendonly" if hold else "sendrecv")


def answer_sdp(
    offer: bytes,
    host: str,
    port: int,
    session_id: int,
    *,
    require_srtp: bool = False,
    dtls: Fingerprint | None = None,
    rng: Callable[[int], bytes] = os.urandom,
    version: int = 1,
) -> bytes | None:
    """An RFC 3264 §6 answer in the offer's kind (DTLS-SRTP when we have a certificate
    fingerprint ``dtls``, SDES-SRTP or plain RTP), chosen by :func:`answer_policy`, with the
    offer's payload types we support in the offer's order; None when nothing is acceptable
    (the caller answers 488): no common codec, an unusable crypto suite, or plain RTP when
    ``require_srtp``."""
    policy = answer_policy(require_srtp=require_srtp, dtls=dtls is not None)
    try:
        parsed = parse_sdp(offer)
        mode = choose_security(parsed, policy).mode
    except CallwardError:
        return None
    if mode is not SecurityMode.PLAIN:
        local = LocalMedia(host, (port,), session_id=str(session_id), fingerprint=dtls)
        try:
            answer = create_answer(parsed, local, codecs=_codecs((0, 8)), security=policy,
                                   rng=rng, origin=local.origin(version))  # fmt: skip
        except CallwardError:
            return None
        return serialize_sdp(answer).encode()
    remote = audio_endpoint(offer)
    if remote is None:
        return None
    common = tuple(p for p in remote.payload_types if p in _STATIC)
    if not common:
        return None
    return _sdp(host, port, session_id, version, common, _answer_direction(offer))


# RFC 3264 §6.1: the answer's direction mirrors the offer's (hold: sendonly -> recvonly).
_MIRROR = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


def _answer_direction(offer: bytes) -> str:
    """Direction for a plain answer: the mirror of the first audio stream's attribute; an
    RFC 2543 hold (``c=0.0.0.0``) is treated as sendonly (RFC 3264 §8.4)."""
    text = offer.decode("utf-8", "replace")
    in_audio, direction = False, "sendrecv"
    for line in text.splitlines():
        if line.startswith("m="):
            if in_audio:
                break
            in_audio = line.startswith("m=audio")
        elif line.startswith("a=") and line[2:].strip() in ("sendonly", "recvonly", "inactive"):
            if in_audio or direction == "sendrecv":
                direction = line[2:].strip()
        elif line.startswith("c=") and line.split()[-1:] == ["0.0.0.0"]:
            direction = "sendonly"
    return _MIRROR.get(direction, "sendrecv")


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
