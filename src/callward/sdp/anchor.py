"""Media anchoring for a B2BUA/relay: rewrite one leg's offer for the other leg.

When the edge anchors media in the relay, leg B must see the relay's address and ports, the
relay's own SRTP keys (each leg is keyed separately, RFC 4568 §6.1: keys are never reused
across associations) and no trace of leg A's addresses (``o=``, ``c=``, ``a=rtcp``, ICE
candidates: topology hiding, privacy.md). Codecs, payload type numbers, ptime, direction and
``a=zrtp-hash`` (ZRTP runs end to end, RFC 6189 §8) are carried over unchanged, so that the
relay can forward G.729 and other passthrough codecs untouched.

Flow (all sans-IO)::

    offer_b = anchor_offer(offer_a, relay_b_media, security=policy_b)
    streams_b = negotiate(offer_b, answer_b, we_offered=True)
    relay_a_media = replace(relay_a_media, zrtp_hashes=streams_b[0].zrtp_hashes)  # if ZRTP
    answer_a = create_answer(offer_a, relay_a_media, codecs=follow_codecs(streams_b),
                             security=policy_a)
    streams_a = negotiate(offer_a, answer_a, we_offered=False)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from callward.errors import SdpError
from callward.sdp.codecs import Codec
from callward.sdp.model import Attribute, Connection, MediaDescription, Origin, SessionDescription
from callward.sdp.negotiated import NegotiatedStream
from callward.sdp.offer_answer import DEFAULT_CODEC_POLICY, CodecPolicy, CodecSpec, LocalMedia
from callward.sdp.policy import (
    DEFAULT_SECURITY_POLICY,
    SecurityMode,
    SecurityPolicy,
    choose_stream_security,
    is_rtp_profile,
)
from callward.sdp.security import CryptoAttribute, generate_crypto

__all__ = ["anchor_answer", "anchor_offer", "follow_codecs"]

# Attributes that describe leg A's transport or keys: never copied to leg B.
_LEG_LOCAL = frozenset(
    {
        "crypto",
        "fingerprint",
        "setup",
        "tls-id",
        "connection",
        "rtcp",
        "candidate",
        "remote-candidates",
        "end-of-candidates",
        "ice-ufrag",
        "ice-pwd",
        "ice-options",
        "ice-lite",
        "ice-mismatch",
        "ssrc",
        "ssrc-group",
        "msid",
        "msid-semantic",
        "mid",
        "group",
        "label",
        "extmap",
        "rtcp-fb",
        "rtcp-rsize",
        "zrtp-hash",
    }
)


def _anchor_stream(
    offer: SessionDescription,
    md: MediaDescription,
    port: int,
    security: SecurityPolicy,
    rng: Callable[[int], bytes],
) -> MediaDescription:
    # What leg A offered decides whether ZRTP can pass; leg B's policy decides its keying.
    inbound = choose_stream_security(offer, md, _accept_any(security))
    attrs = [a for a in md.attributes if a.name not in _LEG_LOCAL]
    direction = [a for a in attrs if a.value is None and a.name in _DIRECTIONS]
    body = [a for a in attrs if a not in direction]
    if inbound.mode is SecurityMode.ZRTP and SecurityMode.ZRTP in security.preference:
        proto = "RTP/AVPF" if md.proto.upper().endswith("AVPF") else "RTP/AVP"
        body.extend(Attribute("zrtp-hash", h) for h in inbound.zrtp_hashes)
    elif SecurityMode.SDES_SRTP in security.preference and security.sdes_suites:
        proto = "RTP/SAVPF" if md.proto.upper().endswith("F") else "RTP/SAVP"
        body.extend(
            Attribute("crypto", generate_crypto(tag, suite, rng).value)
            for tag, suite in enumerate(security.sdes_suites, 1)
        )
    elif security.plain_allowed:
        proto = "RTP/AVPF" if md.proto.upper().endswith("F") else "RTP/AVP"
    else:
        raise SdpError(
            "leg policy allows no keying the relay can do (SDES, ZRTP pass-through or plain)",
            rule="security policy",
            warn_code=302,
        )
    return MediaDescription(md.media, port, proto, md.formats, attributes=(*body, *direction))


_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})


def _accept_any(policy: SecurityPolicy) -> SecurityPolicy:
    """Leg A's offer was already vetted by leg A's policy; here we only classify it."""
    return SecurityPolicy(
        preference=(SecurityMode.ZRTP, SecurityMode.SDES_SRTP, SecurityMode.DTLS_SRTP),
        sdes_suites=tuple(sorted({*policy.sdes_suites, *DEFAULT_SECURITY_POLICY.sdes_suites})),
        allow_plain_rtp=True,
        trusted_leg=True,
    )


def anchor_offer(
    offer: SessionDescription,
    local: LocalMedia,
    *,
    security: SecurityPolicy = DEFAULT_SECURITY_POLICY,
    origin: Origin | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> SessionDescription:
    """Leg A's offer rewritten for leg B through the relay at ``local``: one port per
    anchored audio stream, in m= order; other streams go out as port 0 (RFC 3264 §8.2 keeps
    their slot). Raises SdpError(488) when no audio stream can be anchored."""
    ports = iter(local.ports)
    media: list[MediaDescription] = []
    for md in offer.media:
        port = None
        if not md.rejected and md.media == "audio" and is_rtp_profile(md.proto):
            port = next(ports, None)
        if port is None:
            media.append(MediaDescription(md.media, 0, md.proto, md.formats))
            continue
        media.append(_anchor_stream(offer, md, port, security, rng))
    if all(m.rejected for m in media):
        raise SdpError("no audio stream to anchor", warn_code=304)
    return SessionDescription(
        origin=origin or local.origin(),
        session_name="-",
        connection=Connection(local.address, "IN", local.addrtype),
        media=tuple(media),
    )


def anchor_answer(
    answer: SessionDescription,
    offer: SessionDescription,
    local: LocalMedia,
    *,
    crypto: CryptoAttribute | None = None,
    rtcp_mux: bool = False,
    origin: Origin | None = None,
) -> SessionDescription:
    """Leg B's answer rewritten as the answer to leg A's ``offer`` through the relay at
    ``local`` (what a media proxy such as rtpengine does on ``answer``).

    One m= line per offered one, same order (RFC 3264 §6). An anchored stream keeps what B
    answered (formats, ptime, direction, fmtp) with the relay's port, A's transport profile
    (so RTP/SAVP <-> RTP/AVP bridging is invisible to A), the relay's own ``crypto`` (its tag
    must be the one A offered, RFC 4568 §7.1.2) and ``a=rtcp-mux`` when the relay muxes toward
    A (RFC 5761 §5.1.1); B's addresses, keys and candidates never reach A."""
    ports = iter(local.ports)
    media: list[MediaDescription] = []
    for i, md_off in enumerate(offer.media):
        md_ans = answer.media[i] if i < len(answer.media) else None
        port = None
        if not md_off.rejected and md_off.media == "audio" and is_rtp_profile(md_off.proto):
            port = next(ports, None)
        if port is None or md_ans is None or md_ans.rejected:
            media.append(MediaDescription(md_off.media, 0, md_off.proto, md_off.formats))
            continue
        attrs = [a for a in md_ans.attributes if a.name not in _LEG_LOCAL and a.name != "rtcp-mux"]
        direction = [a for a in attrs if a.value is None and a.name in _DIRECTIONS]
        body = [a for a in attrs if a not in direction]
        if crypto is not None:
            body.append(Attribute("crypto", crypto.value))
        if rtcp_mux:
            body.append(Attribute("rtcp-mux"))
        media.append(
            MediaDescription(
                md_ans.media, port, md_off.proto, md_ans.formats, attributes=(*body, *direction)
            )
        )
    if all(m.rejected for m in media):
        raise SdpError("no audio stream to anchor in the answer", warn_code=304)
    return SessionDescription(
        origin=origin or local.origin(),
        session_name="-",
        connection=Connection(local.address, "IN", local.addrtype),
        media=tuple(media),
    )


def follow_codecs(
    streams: Iterable[NegotiatedStream], base: CodecPolicy = DEFAULT_CODEC_POLICY
) -> CodecPolicy:
    """A codec policy that accepts only what the other leg settled on (voice codec,
    telephone-event, CN), so both legs of a relayed call carry the same payload format."""
    chosen: list[Codec] = []
    for s in streams:
        chosen.extend(c for c in (s.codec, s.telephone_event, s.comfort_noise) if c is not None)
    specs: list[CodecSpec] = []
    for c in chosen:
        base_spec = base.spec_for(c)
        specs.append(
            CodecSpec(
                c.name,
                c.clock_rate,
                c.channels,
                c.payload_type,
                base_spec.fmtp if base_spec is not None else None,
                passthrough=base_spec.passthrough if base_spec is not None else True,
            )
        )
    return CodecPolicy(
        codecs=tuple(specs),
        ptime=base.ptime,
        maxptime=base.maxptime,
        rtcp_mux=base.rtcp_mux,
        honor_offer_order=base.honor_offer_order,
        single_codec=True,
    )
