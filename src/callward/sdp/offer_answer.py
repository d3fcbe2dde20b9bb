"""The RFC 3264 offer/answer engine: make offers, answer offers, and read the outcome.

Pure functions over frozen values; the stateful side (re-offers, glare, version numbers)
is :class:`callward.sdp.session.OfferAnswerSession`.

Rules applied, by RFC 3264 section:

* §6: the answer has exactly as many m= lines as the offer, in the same order; a stream we do
  not take gets port 0 (and keeps the offered formats, since at least one is required).
* §6.1: payload type numbers of the offer are kept in the answer; direction is mirrored
  (sendonly <-> recvonly); formats are listed in our policy's preference order unless the
  policy says to keep the offer's order (the RECOMMENDED default of §6.1 when there is no
  reason to prefer another; a tenant's codec policy is such a reason).
* §8.4 / RFC 2543: ``c=0.0.0.0`` is read as hold (the peer will not receive).
* RFC 4733 §2.5.1: telephone-event is negotiated with the clock rate of the chosen codec.
* RFC 5761 §5.1.1: rtcp-mux is answered only when offered and allowed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from callward.errors import LocalProtocolError, SdpError
from callward.sdp.codecs import Codec, media_codecs, media_maxptime, media_ptime
from callward.sdp.model import (
    Attribute,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SessionDescription,
)
from callward.sdp.policy import (
    DEFAULT_SECURITY_POLICY,
    SecurityChoice,
    SecurityMode,
    SecurityPolicy,
    choose_stream_security,
    is_rtp_profile,
)
from callward.sdp.security import (
    CryptoAttribute,
    Fingerprint,
    Setup,
    answer_setup,
    generate_crypto,
    media_crypto,
)

__all__ = [
    "DEFAULT_CODEC_POLICY",
    "CodecPolicy",
    "CodecSpec",
    "LocalMedia",
    "create_answer",
    "create_offer",
    "effective_direction",
]


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """A codec we are willing to use. ``payload_type`` is what our own offers use;
    ``passthrough`` marks codecs we can negotiate but not transcode (G.729: the relay only
    forwards it, so both legs must agree on it)."""

    name: str
    clock_rate: int
    channels: int = 1
    payload_type: int = 96
    fmtp: str | None = None
    passthrough: bool = False

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.name.lower(), self.clock_rate, self.channels)

    def codec(self) -> Codec:
        return Codec(self.payload_type, self.name, self.clock_rate, self.channels, self.fmtp)


@dataclass(frozen=True, slots=True)
class CodecPolicy:
    """Codec preferences for a tenant/network, best first, plus packetization rules.

    ``ptime`` is what we ask for when the offer says nothing or asks for more than
    ``maxptime``; ``single_codec`` answers with one voice codec (plus telephone-event and CN),
    which spares a relay mid-call codec switches.
    """

    codecs: tuple[CodecSpec, ...] = (
        CodecSpec("PCMU", 8000, payload_type=0),
        CodecSpec("PCMA", 8000, payload_type=8),
        # RFC 7587 §6.1: the receiver's preferences; FEC on, 24 kbit/s is ample for voice.
        CodecSpec("opus", 48000, 2, 111, "useinbandfec=1;maxaveragebitrate=24000"),
        CodecSpec("G729", 8000, payload_type=18, fmtp="annexb=no", passthrough=True),
        CodecSpec("telephone-event", 8000, payload_type=101, fmtp="0-16"),
        CodecSpec("telephone-event", 48000, payload_type=110, fmtp="0-16"),
        CodecSpec("CN", 8000, payload_type=13),
    )
    ptime: int = 20
    maxptime: int = 60
    rtcp_mux: bool = True
    honor_offer_order: bool = False
    single_codec: bool = True

    def spec_for(self, codec: Codec) -> CodecSpec | None:
        key = codec.key
        for s in self.codecs:
            if s.key == key:
                return s
        return None

    def rank(self, codec: Codec) -> int:
        key = codec.key
        for i, s in enumerate(self.codecs):
            if s.key == key:
                return i
        return len(self.codecs)


DEFAULT_CODEC_POLICY = CodecPolicy()


@dataclass(frozen=True, slots=True)
class LocalMedia:
    """Where we receive media and what we present: the address for ``c=``, one RTP port per
    stream we accept (in m= order), the ``o=`` identity, our DTLS certificate fingerprint
    (needed to answer or offer DTLS-SRTP) and ZRTP hashes to pass through from the other leg.
    """

    address: str
    ports: tuple[int, ...]
    username: str = "callward"
    session_id: str = "1"
    fingerprint: Fingerprint | None = None
    zrtp_hashes: tuple[str, ...] = ()

    @property
    def addrtype(self) -> str:
        return "IP6" if ":" in self.address else "IP4"

    def origin(self, version: int = 1) -> Origin:
        return Origin(self.username, self.session_id, version, "IN", self.addrtype, self.address)


def effective_direction(sd: SessionDescription, md: MediaDescription) -> Direction:
    """The author's direction, with RFC 2543 hold (``c=0.0.0.0``) meaning "do not send to me".
    (RFC 3264 §8.4 explains the legacy form; we honour it so old PBXs' hold works.)"""
    d = sd.direction_of(md)
    conn = sd.connection_for(md)
    # With ICE, 0.0.0.0 (port 9) is only a placeholder until candidates arrive (RFC 8840
    # §4.1.1), not hold.
    ice = md.has("ice-ufrag") or sd.has("ice-ufrag")
    if conn is not None and conn.is_legacy_hold and not ice:
        d = Direction.of(sends=d.sends, receives=False)
    return d


def _reject(md: MediaDescription) -> MediaDescription:
    # RFC 3264 §6: port 0, same media and proto, formats as offered (at least one needed).
    return MediaDescription(md.media, 0, md.proto, md.formats)


def _codec_attrs(codecs: list[Codec]) -> list[Attribute]:
    out: list[Attribute] = []
    for c in codecs:
        out.append(Attribute("rtpmap", c.rtpmap))
        if c.fmtp:
            out.append(Attribute("fmtp", f"{c.payload_type} {c.fmtp}"))
    return out


def _answer_fmtp(offered: Codec, spec: CodecSpec) -> str | None:
    name = offered.name.lower()
    if name == "telephone-event":
        # RFC 4733 §2.4.1: answer with the events we support out of those offered; echoing
        # the offered list is always a subset of the 0-16 we handle.
        return offered.fmtp or spec.fmtp
    if name == "g729":
        # RFC 4856 §2.1.9: annexb defaults to yes; both sides must agree, so a
        # passthrough relay echoes the offerer's choice.
        return offered.fmtp
    return spec.fmtp if spec.fmtp is not None else offered.fmtp


def _select_codecs(offered: tuple[Codec, ...], policy: CodecPolicy) -> list[Codec]:
    """Voice codecs we share with the offer, then telephone-event and CN at the voice
    codec's clock rate, keeping the offer's payload type numbers (RFC 3264 §6.1)."""
    voice = [
        c
        for c in offered
        if not c.is_dtmf and not c.is_comfort_noise and policy.spec_for(c) is not None
    ]
    if not policy.honor_offer_order:
        voice.sort(key=policy.rank)  # stable: ties keep offer order
    if not voice:
        return []
    if policy.single_codec:
        voice = voice[:1]
    rates = {c.clock_rate for c in voice}
    extras = [
        c
        for c in offered
        if (c.is_dtmf or c.is_comfort_noise)
        and c.clock_rate in rates
        and policy.spec_for(c) is not None
    ]
    seen_dtmf: set[int] = set()
    kept: list[Codec] = []
    for c in extras:  # one telephone-event per clock rate (RFC 4733 §7.1.1)
        if c.is_dtmf:
            if c.clock_rate in seen_dtmf:
                continue
            seen_dtmf.add(c.clock_rate)
        kept.append(c)
    out: list[Codec] = []
    for c in [*voice, *kept]:
        spec = policy.spec_for(c)
        assert spec is not None
        out.append(
            Codec(c.payload_type, spec.name, c.clock_rate, c.channels, _answer_fmtp(c, spec))
        )
    return out


def _ptime(md: MediaDescription, policy: CodecPolicy) -> int:
    offered = media_ptime(md)
    cap = min(policy.maxptime, media_maxptime(md) or policy.maxptime)
    p = offered if offered is not None else policy.ptime
    return max(10, min(p, cap))


def _security_attrs(
    choice: SecurityChoice,
    local: LocalMedia,
    rng: Callable[[int], bytes],
    prev: MediaDescription | None = None,
) -> tuple[list[Attribute], CryptoAttribute | None]:
    if choice.mode is SecurityMode.SDES_SRTP:
        rc = choice.remote_crypto
        assert rc is not None
        old = media_crypto(prev) if prev is not None and not prev.rejected else ()
        ours = next(
            (c for c in old if (c.tag, c.suite) == (rc.tag, rc.suite)), None
        ) or generate_crypto(rc.tag, rc.suite, rng)
        return [Attribute("crypto", ours.value)], ours
    if choice.mode is SecurityMode.DTLS_SRTP:
        if local.fingerprint is None:
            raise LocalProtocolError("DTLS-SRTP chosen but LocalMedia has no fingerprint")
        role = answer_setup(choice.remote_setup)
        return [
            Attribute("fingerprint", local.fingerprint.attribute_value),
            Attribute("setup", role.value),
        ], None
    if choice.mode is SecurityMode.ZRTP:
        return [Attribute("zrtp-hash", h) for h in local.zrtp_hashes], None
    return [], None


def create_answer(
    offer: SessionDescription,
    local: LocalMedia,
    *,
    codecs: CodecPolicy = DEFAULT_CODEC_POLICY,
    security: SecurityPolicy = DEFAULT_SECURITY_POLICY,
    origin: Origin | None = None,
    hold: bool = False,
    rng: Callable[[int], bytes] = os.urandom,
    previous: SessionDescription | None = None,
) -> SessionDescription:
    """Answer ``offer`` (RFC 3264 §6).

    ``previous`` is our last SDP in this session: its SDES keys are reused so an unchanged
    re-offer (session refresh) does not rekey. Raises SdpError(488) with a Warning-ready
    reason when no stream can be accepted: 305 no common codec, 302 security policy,
    304 media type."""
    # Without our own certificate we cannot do DTLS; without the other leg's zrtp-hash there is
    # no ZRTP endpoint behind us and "pass-through" would really be plain RTP. Drop those modes.
    unable = set()
    if local.fingerprint is None:
        unable.add(SecurityMode.DTLS_SRTP)
    if not local.zrtp_hashes:
        unable.add(SecurityMode.ZRTP)
    if unable & set(security.preference):
        security = replace(
            security, preference=tuple(m for m in security.preference if m not in unable)
        )
    answer_media: list[MediaDescription] = []
    first_error: SdpError | None = None
    ports = iter(local.ports)
    for i, md in enumerate(offer.media):
        prev = previous.media[i] if previous is not None and i < len(previous.media) else None
        if md.rejected:
            answer_media.append(_reject(md))
            continue
        try:
            answer_media.append(
                _answer_stream(offer, md, local, ports, codecs, security, hold, rng, prev)
            )
        except SdpError as exc:
            if exc.status_hint != 488:
                raise
            first_error = first_error or exc
            answer_media.append(_reject(md))
    # RFC 3264 §5/§6: an offer with no m= lines is valid and gets an answer with none; an
    # offer whose every stream we refuse is a 488 with the first reason.
    if offer.media and all(m.rejected for m in answer_media):
        if first_error is not None:
            raise first_error
        raise SdpError("offer has no stream to accept", warn_code=304)
    return SessionDescription(
        origin=origin or local.origin(),
        session_name="-",
        connection=Connection(local.address, "IN", local.addrtype),
        media=tuple(answer_media),
    )


def _answer_stream(
    offer: SessionDescription,
    md: MediaDescription,
    local: LocalMedia,
    ports: Iterator[int],
    codecs: CodecPolicy,
    security: SecurityPolicy,
    hold: bool,
    rng: Callable[[int], bytes],
    prev: MediaDescription | None,
) -> MediaDescription:
    if md.media != "audio":
        raise SdpError(f"media type {md.media} not available", warn_code=304)
    if not is_rtp_profile(md.proto):
        raise SdpError(f"transport {md.proto} not supported", warn_code=302)
    chosen = _select_codecs(media_codecs(md), codecs)
    if not chosen:
        names = " ".join(str(c) for c in media_codecs(md)) or " ".join(md.formats)
        raise SdpError(
            f"Incompatible media format: no common codec in offer ({names})"[:200],
            rule="RFC 3264 §6",
            warn_code=305,
        )
    choice = choose_stream_security(offer, md, security)
    port = next(ports, None)
    if port is None:
        raise SdpError("no local port left for another stream", warn_code=370)
    attrs = _codec_attrs(chosen)
    attrs.append(Attribute("ptime", str(_ptime(md, codecs))))
    attrs.append(Attribute("maxptime", str(codecs.maxptime)))
    if codecs.rtcp_mux and md.has("rtcp-mux"):
        attrs.append(Attribute("rtcp-mux"))
    sec_attrs, _ = _security_attrs(choice, local, rng, prev)
    attrs.extend(sec_attrs)
    mirrored = effective_direction(offer, md).reversed()
    if hold:
        mirrored = Direction.of(sends=mirrored.sends, receives=False)
    attrs.append(Attribute(mirrored.value))
    return MediaDescription(
        md.media,
        port,
        md.proto,
        tuple(str(c.payload_type) for c in chosen),
        attributes=tuple(attrs),
    )


def create_offer(
    local: LocalMedia,
    *,
    codecs: CodecPolicy = DEFAULT_CODEC_POLICY,
    security: SecurityPolicy = DEFAULT_SECURITY_POLICY,
    origin: Origin | None = None,
    hold: bool = False,
    legacy_hold: bool = False,
    rng: Callable[[int], bytes] = os.urandom,
    previous: SessionDescription | None = None,
    direction: Direction | None = None,
) -> SessionDescription:
    """An offer with one audio stream per local port. ``hold`` offers sendonly (RFC 3264
    §8.4); ``legacy_hold`` also writes ``c=0.0.0.0`` for RFC 2543 peers. With ``previous``
    (our last SDP) the security material is reused so a re-offer does not rekey; ``direction``
    overrides the attribute (the session uses it for §8.4 "recvonly on hold -> inactive")."""
    mode = _offer_mode(local, security)
    prev_audio = [m for m in previous.media if m.media == "audio"] if previous else []
    media: list[MediaDescription] = []
    for i, port in enumerate(local.ports):
        attrs = _codec_attrs([s.codec() for s in codecs.codecs])
        attrs.append(Attribute("ptime", str(codecs.ptime)))
        attrs.append(Attribute("maxptime", str(codecs.maxptime)))
        if codecs.rtcp_mux:
            attrs.append(Attribute("rtcp-mux"))
        proto = "RTP/AVP"
        if mode is SecurityMode.SDES_SRTP:
            proto = "RTP/SAVP"
            old = media_crypto(prev_audio[i]) if i < len(prev_audio) else ()
            cryptos = old or tuple(
                generate_crypto(tag, suite, rng)
                for tag, suite in enumerate(security.sdes_suites, 1)
            )
            attrs.extend(Attribute("crypto", c.value) for c in cryptos)
        elif mode is SecurityMode.DTLS_SRTP:
            assert local.fingerprint is not None
            proto = "UDP/TLS/RTP/SAVP"
            attrs.append(Attribute("fingerprint", local.fingerprint.attribute_value))
            attrs.append(Attribute("setup", Setup.ACTPASS.value))
        elif mode is SecurityMode.ZRTP:
            attrs.extend(Attribute("zrtp-hash", h) for h in local.zrtp_hashes)
        held = Direction.SENDONLY if hold or legacy_hold else Direction.SENDRECV
        attrs.append(Attribute((direction or held).value))
        fmts = tuple(str(s.payload_type) for s in codecs.codecs)
        media.append(MediaDescription("audio", port, proto, fmts, attributes=tuple(attrs)))
    address = "0.0.0.0" if legacy_hold and local.addrtype == "IP4" else local.address
    return SessionDescription(
        origin=origin or local.origin(),
        session_name="-",
        connection=Connection(address, "IN", local.addrtype),
        media=tuple(media),
    )


def _offer_mode(local: LocalMedia, security: SecurityPolicy) -> SecurityMode:
    for mode in security.preference:
        if mode is SecurityMode.DTLS_SRTP and local.fingerprint is not None:
            return mode
        if mode is SecurityMode.SDES_SRTP and security.sdes_suites:
            return mode
        if mode is SecurityMode.ZRTP and local.zrtp_hashes:
            return mode
    if security.plain_allowed:
        return SecurityMode.PLAIN
    raise LocalProtocolError("security policy allows no mode we can offer")
