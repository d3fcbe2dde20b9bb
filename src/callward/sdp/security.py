"""Media security attributes: SDES ``a=crypto`` (RFC 4568), DTLS-SRTP ``a=fingerprint`` /
``a=setup`` (RFC 8122, RFC 5763, RFC 8842) and ZRTP ``a=zrtp-hash`` (RFC 6189 §8).

Keys are bytes here and base64 only on the wire; generating one takes an injected ``rng``
(``os.urandom`` by default) so tests are deterministic and the core stays free of I/O.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from callward.errors import SdpError
from callward.sdp.model import MediaDescription, SessionDescription, is_digits

__all__ = [
    "SRTP_KEY_SALT_LENGTHS",
    "CryptoAttribute",
    "CryptoKey",
    "Fingerprint",
    "Setup",
    "answer_setup",
    "generate_crypto",
    "media_crypto",
    "media_fingerprints",
    "media_setup",
    "parse_crypto",
    "parse_fingerprint",
    "zrtp_hashes",
]

# Master key + master salt lengths in bytes, i.e. the decoded length of an inline key.
SRTP_KEY_SALT_LENGTHS: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 16 + 14,  # RFC 4568 §6.2.1
    "AES_CM_128_HMAC_SHA1_32": 16 + 14,  # RFC 4568 §6.2.2
    "F8_128_HMAC_SHA1_80": 16 + 14,  # RFC 4568 §6.2.3
    "AES_192_CM_HMAC_SHA1_80": 24 + 14,  # RFC 6188 §7.1
    "AES_192_CM_HMAC_SHA1_32": 24 + 14,
    "AES_256_CM_HMAC_SHA1_80": 32 + 14,
    "AES_256_CM_HMAC_SHA1_32": 32 + 14,
    "AEAD_AES_128_GCM": 16 + 12,  # RFC 7714 §14.2: 96-bit master salt
    "AEAD_AES_256_GCM": 32 + 12,
}
_SALT = {s: (12 if s.startswith("AEAD") else 14) for s in SRTP_KEY_SALT_LENGTHS}


@dataclass(frozen=True, slots=True)
class CryptoKey:
    """One ``inline:<key||salt>[|lifetime][|MKI:length]`` key parameter (RFC 4568 §6.1)."""

    key_salt: bytes
    lifetime: str | None = None
    mki: str | None = None

    def __str__(self) -> str:
        text = "inline:" + base64.b64encode(self.key_salt).decode("ascii")
        if self.lifetime is not None:
            text += "|" + self.lifetime
        if self.mki is not None:
            text += "|" + self.mki
        return text


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """``a=crypto:<tag> <suite> <key-params> [<session-params>]`` (RFC 4568 §9.1)."""

    tag: int
    suite: str
    keys: tuple[CryptoKey, ...]
    session_params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= 999_999_999 or not self.keys:
            raise SdpError("a=crypto needs a 1-9 digit tag and a key", rule="RFC 4568 §9.1")

    @property
    def known_suite(self) -> bool:
        return self.suite in SRTP_KEY_SALT_LENGTHS

    @property
    def master_key(self) -> bytes:
        return self.keys[0].key_salt[: len(self.keys[0].key_salt) - _SALT.get(self.suite, 14)]

    @property
    def master_salt(self) -> bytes:
        return self.keys[0].key_salt[len(self.master_key) :]

    @property
    def value(self) -> str:
        keys = ";".join(str(k) for k in self.keys)
        params = "".join(" " + p for p in self.session_params)
        return f"{self.tag} {self.suite} {keys}{params}"


def _decode_key(b64: str, suite: str) -> bytes:
    b64 = b64.strip()
    try:
        # Some phones drop the '=' padding; RFC 4568 §6.1 uses RFC 3548 base64 with it.
        raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SdpError("a=crypto inline key is not base64", rule="RFC 4568 §6.1") from None
    want = SRTP_KEY_SALT_LENGTHS.get(suite)
    if want is not None and len(raw) != want:
        raise SdpError(
            f"a=crypto {suite} key is {len(raw)} bytes, expected {want}", rule="RFC 4568 §6.1"
        )
    return raw


def parse_crypto(value: str) -> CryptoAttribute:
    """Parse an ``a=crypto`` value. Unknown suites parse (so they can be skipped by policy);
    a known suite with a key of the wrong length is an error."""
    fields = value.split()
    if len(fields) < 3 or not is_digits(fields[0], 9):
        raise SdpError("a=crypto needs <tag> <suite> <key-params>", rule="RFC 4568 §9.1")
    tag, suite = int(fields[0]), fields[1]
    keys: list[CryptoKey] = []
    for kp in fields[2].split(";"):
        method, sep, info = kp.partition(":")
        if method != "inline" or not sep:
            raise SdpError("a=crypto key method must be inline", rule="RFC 4568 §6.1")
        parts = info.split("|")
        if len(parts) > 3:
            raise SdpError("a=crypto key has too many '|' parts", rule="RFC 4568 §6.1")
        lifetime = mki = None
        for p in parts[1:]:
            if ":" in p:
                mki = p
            else:
                lifetime = p
        keys.append(CryptoKey(_decode_key(parts[0], suite), lifetime, mki))
    return CryptoAttribute(tag, suite, tuple(keys), tuple(fields[3:]))


def generate_crypto(
    tag: int, suite: str, rng: Callable[[int], bytes] = os.urandom
) -> CryptoAttribute:
    """A fresh key for our side of an SDES exchange (RFC 4568 §6.1: each direction has its
    own key; the answerer never reuses the offerer's)."""
    length = SRTP_KEY_SALT_LENGTHS.get(suite)
    if length is None:
        raise SdpError(f"unknown SRTP crypto suite {suite}", rule="RFC 4568 §6.2")
    key = rng(length)
    if len(key) != length:
        raise SdpError("rng returned a short key", rule="RFC 4568 §6.1", status_hint=500)
    return CryptoAttribute(tag, suite, (CryptoKey(key),))


def media_crypto(md: MediaDescription) -> tuple[CryptoAttribute, ...]:
    """Every well-formed ``a=crypto`` of a stream, in offer order; malformed lines are
    skipped (RFC 4568 §7.5: an answerer ignores crypto attributes it cannot use)."""
    out: list[CryptoAttribute] = []
    for v in md.attribute_values("crypto"):
        try:
            out.append(parse_crypto(v))
        except SdpError:
            continue
    return tuple(out)


_HASH_LENGTHS = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """``a=fingerprint:<hash-func> <XX:XX:...>`` (RFC 8122 §5) of a DTLS certificate."""

    hash_function: str
    value: str

    def __post_init__(self) -> None:
        want = _HASH_LENGTHS.get(self.hash_function.lower())
        octets = self.value.split(":")
        ok = all(len(o) == 2 and all(c in "0123456789abcdefABCDEF" for c in o) for o in octets)
        if want is None or not ok or len(octets) != want:
            raise SdpError(
                f"bad fingerprint {self.hash_function} ({len(octets)} octets)",
                rule="RFC 8122 §5",
            )

    @classmethod
    def of_digest(cls, hash_function: str, digest: bytes) -> Fingerprint:
        return cls(hash_function, ":".join(f"{b:02X}" for b in digest))

    @property
    def attribute_value(self) -> str:
        return f"{self.hash_function} {self.value}"


def parse_fingerprint(value: str) -> Fingerprint:
    fields = value.split()
    if len(fields) != 2:
        raise SdpError("a=fingerprint needs <hash-func> <fingerprint>", rule="RFC 8122 §5")
    return Fingerprint(fields[0].lower(), fields[1].upper())


def media_fingerprints(sd: SessionDescription, md: MediaDescription) -> tuple[Fingerprint, ...]:
    """Media-level fingerprints, else session-level ones (RFC 8122 §5 allows both)."""
    values = md.attribute_values("fingerprint") or tuple(
        a.value for a in sd.attributes if a.name == "fingerprint" and a.value is not None
    )
    out: list[Fingerprint] = []
    for v in values:
        try:
            out.append(parse_fingerprint(v))
        except SdpError:
            continue
    return tuple(out)


class Setup(StrEnum):
    """``a=setup`` roles (RFC 4145 §4): who opens the DTLS association."""

    ACTIVE = "active"
    PASSIVE = "passive"
    ACTPASS = "actpass"
    HOLDCONN = "holdconn"


def media_setup(sd: SessionDescription, md: MediaDescription) -> Setup | None:
    v = md.attribute("setup") or sd.attribute("setup")
    try:
        return Setup(v.strip().lower()) if v else None
    except ValueError:
        return None


def answer_setup(offered: Setup | None) -> Setup:
    """RFC 5763 §5 / RFC 8842 §5.3: an offer says actpass, the answerer takes ``active``
    (it then starts the handshake at once, saving a round trip); otherwise take the role the
    offerer left. A missing a=setup means active (RFC 4145 §4 default)."""
    if offered is None or offered is Setup.ACTIVE:
        return Setup.PASSIVE
    if offered is Setup.HOLDCONN:
        return Setup.HOLDCONN
    return Setup.ACTIVE


def zrtp_hashes(md: MediaDescription) -> tuple[str, ...]:
    """``a=zrtp-hash`` values verbatim: a relay passes them through untouched (RFC 6189 §8)."""
    return md.attribute_values("zrtp-hash")
