"""The SDP a basic phone needs (RFC 4566 §5, RFC 3264 §5-6), sans-IO.

Two flavours of one audio stream (Opus and/or G.711 by :class:`MediaPrefs`, with the RFC 7587
Opus parameters and CN for G.711 VAD):

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
from dataclasses import dataclass, replace

from callward.errors import CallwardError
from callward.media.voice import VoiceSettings
from callward.sdp import (
    Codec,
    CodecPolicy,
    CodecSpec,
    LocalMedia,
    NegotiatedStream,
    SecurityMode,
    SecurityPolicy,
    create_answer,
    create_offer,
    media_codecs,
    negotiate,
    parse_sdp,
    serialize_sdp,
)
from callward.sdp.codecs import media_maxptime, media_ptime
from callward.sdp.policy import choose_security
from callward.sdp.security import Fingerprint

__all__ = [
    "G711_ONLY",
    "SRTP_SUITE",
    "AudioEndpoint",
    "MediaPrefs",
    "answer_sdp",
    "audio_endpoint",
    "negotiated_audio",
    "offer_sdp",
    "prefs_for",
    "voice_settings",
]

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


OPUS_PT = 111  # the dynamic payload type our offers give Opus (RFC 7587 §7)
CN_PT = 13  # RFC 3551 Table 4: static CN/8000
_STATIC = {"pcmu": 0, "pcma": 8}


@dataclass(frozen=True, slots=True)
class MediaPrefs:
    """What the phone offers and accepts: codecs by preference (``opus``, ``pcmu``, ``pcma``),
    the ptime we want to receive, and the Opus receive parameters of RFC 7587 §6.1
    (``maxaveragebitrate``, ``useinbandfec``, ``usedtx``). ``dtx`` with G.711 offers CN/8000
    (RFC 3389) so the peer may send comfort noise instead of silence. RTCP is sent, and
    multiplexed on the RTP port when the peer agrees (RFC 5761)."""

    codecs: tuple[str, ...] = ("pcmu", "pcma")
    ptime: int = 20
    maxptime: int = 60
    bitrate: int = 16000
    fec: bool = True
    dtx: bool = False
    rtcp_mux: bool = True

    def __post_init__(self) -> None:
        if not self.codecs or any(c not in ("opus", "pcmu", "pcma") for c in self.codecs):
            raise CallwardError(f"codecs {self.codecs}: expected opus, pcmu and/or pcma")
        if self.ptime not in (10, 20, 40, 60) or not self.ptime <= self.maxptime <= 120:
            raise CallwardError(f"ptime {self.ptime}/maxptime {self.maxptime} not usable")
        if not 6000 <= self.bitrate <= 510000:
            raise CallwardError(f"Opus bitrate {self.bitrate} outside 6000-510000")

    @property
    def opus_fmtp(self) -> str:
        return (
            f"maxplaybackrate=16000;sprop-maxcapturerate=16000;"
            f"maxaveragebitrate={self.bitrate};useinbandfec={int(self.fec)};"
            f"usedtx={int(self.dtx)}"
        )

    def specs(self) -> tuple[CodecSpec, ...]:
        out = []
        for c in self.codecs:
            if c == "opus":
                out.append(CodecSpec("opus", 48000, 2, OPUS_PT, self.opus_fmtp))
            else:
                out.append(CodecSpec(c.upper(), 8000, payload_type=_STATIC[c]))
        if self.dtx and any(c in _STATIC for c in self.codecs):
            out.append(CodecSpec("CN", 8000, payload_type=CN_PT))
        return tuple(out)


G711_ONLY = MediaPrefs()


def _codecs(prefs: MediaPrefs) -> CodecPolicy:
    return CodecPolicy(
        codecs=prefs.specs(),
        ptime=prefs.ptime,
        maxptime=prefs.maxptime,
        rtcp_mux=prefs.rtcp_mux,
        single_codec=True,
    )


@dataclass(frozen=True, slots=True)
class AudioEndpoint:
    """Where the peer wants our RTP and in which payload types (first is preferred)."""

    host: str
    port: int
    payload_types: tuple[int, ...]


def _sdp(
    host: str, port: int, session_id: int, version: int, specs: tuple[CodecSpec, ...],
    prefs: MediaPrefs, ptime: int | None = None, direction: str = "sendrecv",
) -> bytes:  # fmt: skip
    ip = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=callward {session_id} {version} IN {ip} {host}",
        "s=callward",
        f"c=IN {ip} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(s.payload_type) for s in specs)}",
    ]
    for s in specs:
        lines.append(f"a=rtpmap:{s.codec().rtpmap}")
        if s.fmtp:
            lines.append(f"a=fmtp:{s.payload_type} {s.fmtp}")
    lines += [f"a=ptime:{ptime or prefs.ptime}", f"a=maxptime:{prefs.maxptime}"]
    if prefs.rtcp_mux:
        lines.append("a=rtcp-mux")
    lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


def offer_sdp(
    host: str,
    port: int,
    session_id: int,
    *,
    pts: tuple[int, ...] | None = None,
    srtp: bool = False,
    dtls: Fingerprint | None = None,
    prefs: MediaPrefs = G711_ONLY,
    rng: Callable[[int], bytes] = os.urandom,
    version: int = 1,
    hold: bool = False,
) -> bytes:
    """An RFC 3264 §5 offer for one audio stream with ``prefs``' codecs; ``srtp`` offers
    RTP/SAVP with one SDES crypto line keyed from ``rng`` (RFC 4568 §6.1); ``dtls`` (our
    certificate's fingerprint) offers UDP/TLS/RTP/SAVP with ``a=setup:actpass`` (RFC 5763 §5).
    A re-offer passes the next ``version`` (RFC 3264 §8: o= version grows); ``hold`` offers
    sendonly. ``pts`` (static G.711 payload types) is the older way to pick codecs."""
    if pts is not None:
        names = tuple(n for p in pts for n, v in _STATIC.items() if v == p)
        prefs = replace(prefs, codecs=names or prefs.codecs)
    if dtls is not None or srtp:
        local = LocalMedia(host, (port,), session_id=str(session_id), fingerprint=dtls)
        policy = _DTLS if dtls is not None else _SDES
        offer = create_offer(local, codecs=_codecs(prefs), security=policy, rng=rng,
                             origin=local.origin(version), hold=hold)  # fmt: skip
        return serialize_sdp(offer).encode()
    return _sdp(host, port, session_id, version, prefs.specs(), prefs,
                direction="sendonly" if hold else "sendrecv")  # fmt: skip


def answer_sdp(
    offer: bytes,
    host: str,
    port: int,
    session_id: int,
    *,
    require_srtp: bool = False,
    dtls: Fingerprint | None = None,
    prefs: MediaPrefs = G711_ONLY,
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
            answer = create_answer(parsed, local, codecs=_codecs(prefs), security=policy,
                                   rng=rng, origin=local.origin(version))  # fmt: skip
        except CallwardError:
            return None
        return serialize_sdp(answer).encode()
    try:
        md = next(m for m in parsed.media if m.media == "audio" and not m.rejected)
    except StopIteration:
        return None
    codec_policy = _codecs(prefs)
    offered = media_codecs(md)
    # the offer's voice codecs we support, in the offer's order, with its payload types
    # (lab peers expect every common codec back), plus CN when we do VAD
    chosen = [
        c
        for c in offered
        if not c.is_dtmf and not c.is_comfort_noise and codec_policy.spec_for(c) is not None
    ]
    if not chosen:
        return None
    specs = [_answer_spec(c, codec_policy) for c in chosen]
    cn = next((c for c in offered if c.is_comfort_noise and c.clock_rate == 8000), None)
    if cn is not None and prefs.dtx and any(c.clock_rate == 8000 for c in chosen):
        specs.append(CodecSpec("CN", 8000, payload_type=cn.payload_type))
    cap = min(prefs.maxptime, media_maxptime(md) or prefs.maxptime)
    ptime = max(10, min(media_ptime(md) or prefs.ptime, cap))
    mux = replace(prefs, rtcp_mux=prefs.rtcp_mux and md.has("rtcp-mux"))
    return _sdp(host, port, session_id, version, tuple(specs), mux, ptime,
                _answer_direction(offer))  # fmt: skip


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


def _answer_spec(offered: Codec, policy: CodecPolicy) -> CodecSpec:
    spec = policy.spec_for(offered)
    assert spec is not None
    return replace(spec, payload_type=offered.payload_type)


def negotiated_audio(
    local: bytes, remote: bytes, *, we_offered: bool, prefs: MediaPrefs = G711_ONLY
) -> NegotiatedStream | None:
    """The first accepted audio stream of a completed exchange, from our side: where to send,
    which codec, and for SDES the crypto line for each direction (``local_crypto`` keys what
    we send, ``remote_crypto`` what we receive, RFC 4568 §6.1). None when the exchange has no
    usable audio or breaks RFC 3264 (the caller falls back to :func:`audio_endpoint`)."""
    try:
        mine, theirs = parse_sdp(local), parse_sdp(remote)
        offer, answer = (mine, theirs) if we_offered else (theirs, mine)
        streams = negotiate(offer, answer, we_offered=we_offered, codecs=_codecs(prefs))
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


def voice_settings(stream: NegotiatedStream, prefs: MediaPrefs) -> VoiceSettings:
    """What to send on a negotiated stream: the codec and ptime agreed, and for Opus the
    lesser of our bitrate and the peer's ``maxaveragebitrate``, FEC when the peer can use it
    (``useinbandfec=1``) and DTX when we want it and the peer accepts it (``usedtx=1``), the
    receiver's parameters of RFC 7587 §6.1. G.711 uses VAD + CN when CN was agreed."""
    name = stream.codec.name.lower()
    if name not in ("opus", "pcmu", "pcma"):
        raise CallwardError(f"cannot send {stream.codec}: only Opus and G.711 are encoded")
    if name != "opus":
        ptime = stream.ptime if stream.ptime in (20, 40, 60) else 20
        cn = stream.comfort_noise
        return VoiceSettings(
            name, stream.codec.payload_type, ptime, dtx=prefs.dtx and cn is not None,
            cn_payload_type=cn.payload_type if cn is not None else CN_PT,
        )  # fmt: skip
    fmtp = stream.codec.fmtp_params()
    peer_max = fmtp.get("maxaveragebitrate", "")
    bitrate = min(prefs.bitrate, int(peer_max)) if peer_max.isdigit() else prefs.bitrate
    ptime = stream.ptime if stream.ptime in (10, 20, 40, 60) else 20
    return VoiceSettings(
        "opus", stream.codec.payload_type, ptime, max(6000, min(64000, bitrate)),
        fec=prefs.fec and fmtp.get("useinbandfec") == "1",
        dtx=prefs.dtx and fmtp.get("usedtx") == "1",
    )  # fmt: skip


def prefs_for(codec: str, bitrate: int, ptime: int, fec: bool, dtx: bool = True) -> MediaPrefs:
    """What to offer for an optimiser's choice (``usage/optimise.py``): that codec first,
    the others after it as fallbacks for peers without it."""
    order = (codec, *(c for c in ("opus", "pcmu", "pcma") if c != codec))
    return MediaPrefs(codecs=order, ptime=ptime, bitrate=bitrate if codec == "opus" else 16000,
                      fec=fec, dtx=dtx)  # fmt: skip
