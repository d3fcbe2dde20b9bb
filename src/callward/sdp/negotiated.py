"""Reading a completed offer/answer exchange: per-stream settings for the media plane
(:class:`NegotiatedStream`) and the compact ``summary()`` used in events.

RFC 3264 §6.1: the answer's first format is what the answerer will send and prefers to
receive; RFC 4568 §7.1.2 pairs crypto lines by tag; RFC 5763 §5 pairs DTLS setup roles.
"""

from __future__ import annotations

from dataclasses import dataclass

from callward.errors import SdpError
from callward.sdp.codecs import Codec, media_codecs, media_ptime
from callward.sdp.model import Direction, MediaDescription, SessionDescription, is_digits
from callward.sdp.offer_answer import DEFAULT_CODEC_POLICY, CodecPolicy, effective_direction
from callward.sdp.policy import SecurityMode, is_rtp_profile
from callward.sdp.security import (
    CryptoAttribute,
    Fingerprint,
    Setup,
    media_crypto,
    media_fingerprints,
    media_setup,
    zrtp_hashes,
)

__all__ = ["NegotiatedStream", "negotiate", "stream_security", "summary"]


@dataclass(frozen=True, slots=True)
class NegotiatedStream:
    """The outcome of one accepted stream, from our side: where to send, what to send,
    how it is protected and which way media flows (``direction`` is what *we* do)."""

    index: int
    media: str
    proto: str
    remote_address: str
    remote_port: int
    remote_rtcp_port: int
    rtcp_mux: bool
    codec: Codec
    telephone_event: Codec | None
    comfort_noise: Codec | None
    ptime: int
    direction: Direction
    security: SecurityMode
    local_crypto: CryptoAttribute | None = None
    remote_crypto: CryptoAttribute | None = None
    remote_fingerprints: tuple[Fingerprint, ...] = ()
    local_setup: Setup | None = None
    zrtp_hashes: tuple[str, ...] = ()
    passthrough: bool = False

    @property
    def on_hold(self) -> bool:
        return self.direction is not Direction.SENDRECV


def stream_security(sd: SessionDescription, md: MediaDescription) -> SecurityMode:
    """What protection an SDP stream describes (used for answers and summaries)."""
    proto = md.proto.upper()
    if proto.startswith("UDP/TLS/") and media_fingerprints(sd, md):
        return SecurityMode.DTLS_SRTP
    if media_crypto(md):
        return SecurityMode.SDES_SRTP
    if zrtp_hashes(md):
        return SecurityMode.ZRTP
    return SecurityMode.PLAIN


def _rtcp_port(md: MediaDescription) -> int:
    v = md.attribute("rtcp")  # RFC 3605: a=rtcp:<port> [<nettype> <addrtype> <address>]
    if v:
        head = v.split(" ", 1)[0]
        if is_digits(head, 5) and int(head) <= 65535:
            return int(head)
    return md.port + 1  # RFC 3550 §11


def negotiate(
    offer: SessionDescription,
    answer: SessionDescription,
    *,
    we_offered: bool,
    codecs: CodecPolicy = DEFAULT_CODEC_POLICY,
) -> tuple[NegotiatedStream, ...]:
    """Read a completed exchange into per-stream settings. Raises SdpError when the answer
    breaks RFC 3264 §6 (different m= count, a format that was not offered)."""
    if len(answer.media) != len(offer.media):
        raise SdpError(
            f"answer has {len(answer.media)} m= lines, offer had {len(offer.media)}",
            rule="RFC 3264 §6",
        )
    out: list[NegotiatedStream] = []
    for i, (om, am) in enumerate(zip(offer.media, answer.media, strict=True)):
        if om.rejected or am.rejected or not is_rtp_profile(am.proto):
            continue
        offered = {c.payload_type: c for c in media_codecs(om)}
        answer_maps = {c.payload_type: c for c in media_codecs(am)}
        answered: list[Codec] = []
        for f in am.formats:
            if not is_digits(f, 3):
                continue
            pt = int(f)
            if pt not in offered:
                raise SdpError(f"answer uses payload type {pt} not offered", rule="RFC 3264 §6.1")
            # A dynamic PT may be listed without rtpmap in the answer: it means the offer's.
            answered.append(answer_maps.get(pt, offered[pt]))
        voice = [c for c in answered if not c.is_dtmf and not c.is_comfort_noise]
        if not voice:
            raise SdpError("answer has no voice codec", rule="RFC 3264 §6.1", warn_code=305)
        if we_offered:
            # §7: the offerer sends with the answer's most preferred format.
            codec = voice[0]
        else:
            # §6.1: the answerer sends with the offer's most preferred format that the answer
            # also lists (the offer's Codec carries the offerer's receive fmtp).
            listed = {c.payload_type for c in voice}
            codec = next(c for c in offered.values() if c.payload_type in listed)
        dtmf = next((c for c in answered if c.is_dtmf and c.clock_rate == codec.clock_rate), None)
        cn = next(
            (c for c in answered if c.is_comfort_noise and c.clock_rate == codec.clock_rate), None
        )
        remote_sd, rm = (answer, am) if we_offered else (offer, om)
        local_sd, lm = (offer, om) if we_offered else (answer, am)
        conn = remote_sd.connection_for(rm)
        if conn is None:
            raise SdpError(f"stream {i} has no connection address", rule="RFC 8866 §5.7")
        mine = effective_direction(local_sd, lm)
        theirs = effective_direction(remote_sd, rm)
        direction = Direction.of(
            sends=mine.sends and theirs.receives, receives=mine.receives and theirs.sends
        )
        mode = stream_security(answer, am)
        local_crypto = remote_crypto = None
        if mode is SecurityMode.SDES_SRTP:
            ac = media_crypto(am)[0]
            oc = next((c for c in media_crypto(om) if c.tag == ac.tag), None)
            if oc is None or oc.suite != ac.suite:
                raise SdpError(
                    f"answer crypto tag {ac.tag} does not match the offer", rule="RFC 4568 §7.1.2"
                )
            local_crypto, remote_crypto = (oc, ac) if we_offered else (ac, oc)
        # a=ptime is the receiver's wish (RFC 8866 §6.4): we send with the peer's.
        ptime = media_ptime(rm) or codecs.ptime
        spec = codecs.spec_for(codec)
        out.append(
            NegotiatedStream(
                index=i,
                media=am.media,
                proto=am.proto,
                remote_address=conn.host,
                remote_port=rm.port,
                remote_rtcp_port=rm.port
                if (om.has("rtcp-mux") and am.has("rtcp-mux"))
                else _rtcp_port(rm),
                rtcp_mux=om.has("rtcp-mux") and am.has("rtcp-mux"),
                codec=codec,
                telephone_event=dtmf,
                comfort_noise=cn,
                ptime=ptime,
                direction=direction,
                security=mode,
                local_crypto=local_crypto,
                remote_crypto=remote_crypto,
                remote_fingerprints=media_fingerprints(remote_sd, rm)
                if mode is SecurityMode.DTLS_SRTP
                else (),
                local_setup=_local_setup(offer, om, answer, am, we_offered)
                if mode is SecurityMode.DTLS_SRTP
                else None,
                zrtp_hashes=zrtp_hashes(rm),
                passthrough=spec.passthrough if spec is not None else True,
            )
        )
    return tuple(out)


def _local_setup(
    offer: SessionDescription,
    om: MediaDescription,
    answer: SessionDescription,
    am: MediaDescription,
    we_offered: bool,
) -> Setup:
    answered = media_setup(answer, am) or Setup.ACTIVE
    if not we_offered:
        return answered
    return {Setup.ACTIVE: Setup.PASSIVE, Setup.PASSIVE: Setup.ACTIVE}.get(answered, answered)


def summary(sd: SessionDescription) -> str:
    """Compact text for events and CDRs, e.g. ``PCMU/8000 srtp-sdes`` or
    ``opus/48000/2 dtls-srtp sendonly``; streams joined by ", "; ``rejected`` if none is
    active. Holds no address or identity (privacy.md)."""
    parts: list[str] = []
    for md in sd.media:
        if md.rejected:
            continue
        codecs = [c for c in media_codecs(md) if not c.is_dtmf and not c.is_comfort_noise]
        head = str(codecs[0]) if codecs else f"{md.media}:{md.proto}"
        text = f"{head} {stream_security(sd, md).value}"
        d = effective_direction(sd, md)
        if d is not Direction.SENDRECV:
            text += f" {d.value}"
        parts.append(text)
    return ", ".join(parts) if parts else "rejected"
