"""SRTP/SRTCP (RFC 3711, RFC 7714) protect/unprotect through libsrtp (``pylibsrtp``), keyed from
SDES inline key material (RFC 4568 §6.1).

One :class:`SrtpContext` per direction of a leg: outbound contexts protect what we send,
inbound contexts unprotect what we receive (with libsrtp's replay window, RFC 3711 §3.3.2).
Every libsrtp failure is translated to :class:`~callward.errors.MediaError` at this boundary;
``MediaError.reason`` tells authentication failures from replays so a relay can count them
separately.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from enum import StrEnum

import pylibsrtp

from callward.errors import MediaError

__all__ = [
    "SrtpContext",
    "SrtpError",
    "SrtpKeying",
    "SrtpProfile",
]


class SrtpProfile(StrEnum):
    """Crypto suites as named in SDP ``a=crypto`` (RFC 4568 §6.2, RFC 7714 §14.2)."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"
    AEAD_AES_128_GCM = "AEAD_AES_128_GCM"

    @property
    def key_length(self) -> int:
        return 16

    @property
    def salt_length(self) -> int:
        # RFC 7714 §12: GCM uses a 96-bit master salt; AES-CM uses 112 bits (RFC 3711 §8.2)
        return 12 if self is SrtpProfile.AEAD_AES_128_GCM else 14

    @property
    def tag_length(self) -> int:
        return {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4}.get(self.value, 16)

    @property
    def _libsrtp(self) -> int:
        profiles: dict[SrtpProfile, int] = {
            SrtpProfile.AES_CM_128_HMAC_SHA1_80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            SrtpProfile.AES_CM_128_HMAC_SHA1_32: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
            SrtpProfile.AEAD_AES_128_GCM: pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
        }
        return profiles[self]


class SrtpError(MediaError):
    """An SRTP/SRTCP packet was rejected. ``reason`` is "auth", "replay" or "other"."""

    def __init__(self, message: str, *, reason: str = "other") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SrtpKeying:
    """Master key and salt for one direction, with the suite they belong to."""

    profile: SrtpProfile
    master_key: bytes
    master_salt: bytes

    def __post_init__(self) -> None:
        if len(self.master_key) != self.profile.key_length:
            raise MediaError(f"{self.profile} needs a {self.profile.key_length}-byte master key")
        if len(self.master_salt) != self.profile.salt_length:
            raise MediaError(f"{self.profile} needs a {self.profile.salt_length}-byte master salt")

    @classmethod
    def generate(cls, profile: SrtpProfile = SrtpProfile.AES_CM_128_HMAC_SHA1_80) -> SrtpKeying:
        """Fresh random keying (RFC 4568 §6.1: a new key for every offer/answer)."""
        return cls(
            profile,
            secrets.token_bytes(profile.key_length),
            secrets.token_bytes(profile.salt_length),
        )

    @classmethod
    def from_sdes(cls, suite: str, key_params: str) -> SrtpKeying:
        """From an ``a=crypto`` suite and key-params, e.g. ``inline:<base64>|2^31``.

        RFC 4568 §6.1: ``inline:`` key||salt base64, optional ``|lifetime`` and ``|MKI:len``.
        libsrtp as wrapped here cannot match MKIs, so an MKI is refused (the offer/answer layer
        then picks another crypto line); several key-params separated by ``;`` are not
        supported either.
        """
        try:
            profile = SrtpProfile(suite.strip().upper())
        except ValueError:
            raise MediaError(f"unsupported SRTP crypto suite {suite!r}") from None
        text = key_params.strip()
        if ";" in text:
            raise MediaError("multiple SDES key-params are not supported")
        if not text.lower().startswith("inline:"):
            raise MediaError("SDES key-params must start with 'inline:' (RFC 4568 §6.1)")
        parts = text[len("inline:") :].split("|")
        for extra in parts[1:]:
            if ":" in extra:
                raise MediaError("SDES key with an MKI is not supported")
            if not (extra.startswith("2^") and extra[2:].isdigit()) and not extra.isdigit():
                raise MediaError(f"bad SDES key lifetime {extra!r}")
        try:
            material = base64.b64decode(parts[0], validate=True)
        except (binascii.Error, ValueError):
            raise MediaError("SDES inline key is not valid base64") from None
        need = profile.key_length + profile.salt_length
        if len(material) != need:
            raise MediaError(f"SDES inline key is {len(material)} bytes, {profile} needs {need}")
        return cls(profile, material[: profile.key_length], material[profile.key_length :])

    @property
    def inline(self) -> str:
        """The ``inline:`` key-params for an ``a=crypto`` line."""
        return "inline:" + base64.b64encode(self.master_key + self.master_salt).decode("ascii")


def _translate(exc: Exception, what: str) -> SrtpError:
    text = str(exc)
    if "authentication" in text:
        reason = "auth"
    elif "replay" in text:
        reason = "replay"
    else:
        reason = "other"
    return SrtpError(f"{what} failed: {text}", reason=reason)


class SrtpContext:
    """SRTP state for one direction. ``inbound=True`` accepts any SSRC from the peer (the
    SSRC is learnt from the first packet, RFC 3711 §3.2.3 "late binding")."""

    def __init__(self, keying: SrtpKeying, *, inbound: bool, replay_window: int = 1024) -> None:
        if not 64 <= replay_window <= 0x7FFF:
            raise MediaError("SRTP replay window must be 64-32767 packets")
        self.inbound = inbound
        self.replay_window = replay_window
        self.keying = keying
        self._min_rtp = 12 + keying.profile.tag_length
        self._min_rtcp = 8 + 4 + keying.profile.tag_length
        self._session = self._make_session(keying)
        self.packets = 0
        self.rejected = 0

    def _make_session(self, keying: SrtpKeying) -> pylibsrtp.Session:
        policy = pylibsrtp.Policy(
            key=keying.master_key + keying.master_salt,
            ssrc_type=(
                pylibsrtp.Policy.SSRC_ANY_INBOUND
                if self.inbound
                else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
            ),
            srtp_profile=keying.profile._libsrtp,
        )
        policy.window_size = self.replay_window
        return pylibsrtp.Session(policy=policy)

    def rekey(self, keying: SrtpKeying) -> None:
        """Switch to new master keying (a re-INVITE with a new ``a=crypto``, RFC 4568 §7.1.4):
        libsrtp keeps no usable state across keys, so the session is rebuilt and the
        rollover counter and replay window restart."""
        self._session = self._make_session(keying)
        self.keying = keying
        self._min_rtp = 12 + keying.profile.tag_length
        self._min_rtcp = 8 + 4 + keying.profile.tag_length

    def _run(self, fn_name: str, data: bytes) -> bytes:
        try:
            out: bytes = getattr(self._session, fn_name)(bytes(data))
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            self.rejected += 1
            raise _translate(exc, fn_name) from None
        self.packets += 1
        return out

    def protect(self, rtp: bytes) -> bytes:
        if self.inbound:
            raise MediaError("inbound SRTP context cannot protect")
        if len(rtp) < 12:
            raise MediaError("RTP packet shorter than its header")
        return self._run("protect", rtp)

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        if self.inbound:
            raise MediaError("inbound SRTP context cannot protect")
        if len(rtcp) < 8:
            raise MediaError("RTCP packet shorter than header + SSRC")
        return self._run("protect_rtcp", rtcp)

    def unprotect(self, srtp: bytes) -> bytes:
        if not self.inbound:
            raise MediaError("outbound SRTP context cannot unprotect")
        if len(srtp) < self._min_rtp:
            raise SrtpError("SRTP packet too short", reason="other")
        return self._run("unprotect", srtp)

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        if not self.inbound:
            raise MediaError("outbound SRTP context cannot unprotect")
        if len(srtcp) < self._min_rtcp:
            raise SrtpError("SRTCP packet too short", reason="other")
        return self._run("unprotect_rtcp", srtcp)
