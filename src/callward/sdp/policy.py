"""Media security policy: which of SDES-SRTP, DTLS-SRTP, ZRTP pass-through or plain RTP a
stream gets, from the peer's capabilities (what its offer says) and the tenant's policy.

The rule that matters most: plain RTP is never chosen unless the policy explicitly allows it
*and* the leg is marked trusted (a legacy PBX on a private interconnect). Everything else is
a 488 whose Warning says why (RFC 3261 §20.43 code 302 "Incompatible transport protocol").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from callward.errors import SdpError
from callward.sdp.model import MediaDescription, SessionDescription
from callward.sdp.security import (
    CryptoAttribute,
    Fingerprint,
    Setup,
    media_crypto,
    media_fingerprints,
    media_setup,
    zrtp_hashes,
)

__all__ = [
    "DEFAULT_SECURITY_POLICY",
    "PROFILES",
    "SecurityChoice",
    "SecurityMode",
    "SecurityPolicy",
    "choose_security",
    "choose_stream_security",
    "is_rtp_profile",
]

# Transport protocols of RTP streams (RFC 3551, RFC 3711 §12, RFC 4585, RFC 5124, RFC 5764).
PROFILES = frozenset(
    {"RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF"}
)


def is_rtp_profile(proto: str) -> bool:
    return proto.upper() in PROFILES


class SecurityMode(StrEnum):
    """How a stream's media is protected; the value is what ``summary()`` prints."""

    DTLS_SRTP = "dtls-srtp"  # same words as edge.calls.sdp_summary
    SDES_SRTP = "srtp-sdes"
    ZRTP = "zrtp"
    PLAIN = "rtp"


# RFC 4568 §6.3 session parameters we can honour. Anything weakening protection
# (UNENCRYPTED_SRTP, UNAUTHENTICATED_SRTP, ...) or unknown makes us skip that crypto line;
# parameters starting with '-' are optional by definition (§6.3.7) and ignorable.
_OK_SESSION_PARAMS = ("WSH=", "FEC_ORDER=")


def _usable(c: CryptoAttribute, suites: tuple[str, ...]) -> bool:
    return c.suite in suites and all(
        p.startswith("-") or p.startswith(_OK_SESSION_PARAMS) for p in c.session_params
    )


@dataclass(frozen=True, slots=True)
class SecurityPolicy:
    """A tenant's (or a leg's) media security policy.

    ``preference`` lists the protected modes we accept, best first. ``sdes_suites`` are the
    crypto suites we accept, in the order our offers list them. Plain RTP needs both
    ``allow_plain_rtp`` and ``trusted_leg``.
    """

    preference: tuple[SecurityMode, ...] = (
        SecurityMode.DTLS_SRTP,
        SecurityMode.SDES_SRTP,
        SecurityMode.ZRTP,
    )
    # The suites callward.rtp.srtp (pylibsrtp) can key; AEAD_AES_256_GCM parses but is not
    # offered or accepted by default because the relay could not use it.
    sdes_suites: tuple[str, ...] = (
        "AES_CM_128_HMAC_SHA1_80",
        "AEAD_AES_128_GCM",
        "AES_CM_128_HMAC_SHA1_32",
    )
    allow_plain_rtp: bool = False
    trusted_leg: bool = False

    @property
    def plain_allowed(self) -> bool:
        return self.allow_plain_rtp and self.trusted_leg


DEFAULT_SECURITY_POLICY = SecurityPolicy()


@dataclass(frozen=True, slots=True)
class SecurityChoice:
    """The outcome for one stream, with the peer's material the relay needs: the crypto line
    we accepted (its key protects what the peer sends), its DTLS fingerprints and setup role,
    or the ZRTP hashes to pass through untouched."""

    mode: SecurityMode
    remote_crypto: CryptoAttribute | None = None
    remote_fingerprints: tuple[Fingerprint, ...] = ()
    remote_setup: Setup | None = None
    zrtp_hashes: tuple[str, ...] = ()


def _refuse(reason: str) -> SdpError:
    return SdpError(reason, rule="security policy", warn_code=302, status_hint=488)


def choose_stream_security(
    sd: SessionDescription, md: MediaDescription, policy: SecurityPolicy
) -> SecurityChoice:
    """Pick the protection for one offered stream, or raise SdpError(488, warn 302)."""
    proto = md.proto.upper()
    if proto not in PROFILES:
        raise _refuse(f"transport {md.proto} is not an RTP profile")
    dtls_profile = proto.startswith("UDP/TLS/")
    secure_profile = "SAVP" in proto
    fingerprints = media_fingerprints(sd, md)
    cryptos = media_crypto(md)
    zrtp = zrtp_hashes(md)
    sdes_offered = bool(cryptos) and not dtls_profile
    for mode in policy.preference:
        if mode is SecurityMode.DTLS_SRTP and dtls_profile and fingerprints:
            return SecurityChoice(
                mode, remote_fingerprints=fingerprints, remote_setup=media_setup(sd, md)
            )
        if mode is SecurityMode.SDES_SRTP and sdes_offered:
            for c in cryptos:  # the offerer lists its preference first (RFC 4568 §7.1.1)
                if _usable(c, policy.sdes_suites):
                    return SecurityChoice(mode, remote_crypto=c)
        if mode is SecurityMode.ZRTP and zrtp and not secure_profile:
            return SecurityChoice(mode, zrtp_hashes=zrtp)
    if policy.plain_allowed and not secure_profile:
        return SecurityChoice(SecurityMode.PLAIN)
    if dtls_profile and not fingerprints:
        raise _refuse("DTLS-SRTP offered without a=fingerprint (RFC 5763 §5)")
    if sdes_offered and SecurityMode.SDES_SRTP in policy.preference:
        suites = ", ".join(sorted({c.suite for c in cryptos}))
        raise _refuse(f"no acceptable SRTP crypto suite offered ({suites})")
    if secure_profile and not sdes_offered and not dtls_profile:
        raise _refuse(f"{md.proto} offered without a=crypto (RFC 4568 §7.1.1)")
    if not policy.allow_plain_rtp:
        raise _refuse("plain RTP is not allowed by policy; offer SRTP (SDES or DTLS) or ZRTP")
    if not policy.trusted_leg:
        raise _refuse("plain RTP is only allowed on a trusted leg")
    raise _refuse(f"no media security mode in common for {md.proto}")


def choose_security(offer: SessionDescription, policy: SecurityPolicy) -> SecurityChoice:
    """Security for the offer's first active audio stream (a call's voice)."""
    for md in offer.media:
        if md.media == "audio" and not md.rejected:
            return choose_stream_security(offer, md, policy)
    raise SdpError("offer has no active audio stream", warn_code=304, status_hint=488)
