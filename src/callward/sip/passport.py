"""PASSporT tokens (RFC 8225) with the SHAKEN extension (RFC 8588), ES256 only.

A PASSporT is a JWS compact serialization ``BASE64URL(header).BASE64URL(claims).BASE64URL(sig)``
whose JSON is in the canonical form of RFC 8225 §9 (keys sorted, no whitespace), so that the
verifier can rebuild the signed bytes from the SIP request alone (the "compact form" of
RFC 8224 §7). The signature is ES256 (ECDSA P-256 / SHA-256, RFC 7518 §3.4: raw ``r || s``).

Pure functions over bytes and keys; certificate handling is in :mod:`callward.sip.stir_shaken`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from callward.errors import AuthError

__all__ = [
    "ATTESTATIONS",
    "MAX_TOKEN_BYTES",
    "Passport",
    "PassportError",
    "b64url_decode",
    "b64url_encode",
    "canonical_json",
    "decode_passport",
    "sign_passport",
    "verify_signature",
]

ATTESTATIONS = ("A", "B", "C")  # RFC 8588 §4: full, partial, gateway
MAX_TOKEN_BYTES = 4096  # a SHAKEN PASSporT is ~500 bytes; refuse anything absurd early


class PassportError(AuthError):
    """A PASSporT that cannot be decoded or verified; ``status`` is the SIP answer
    (RFC 8224 §6.2.2: 436 Bad Identity Info, 437 Unsupported Credential, 438 Invalid Identity
    Header, 403 Stale Date)."""

    def __init__(self, message: str, *, status: int = 438) -> None:
        super().__init__(message)
        self.status = status


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not text or len(text) % 4 == 1 or not all(c.isalnum() or c in "-_" for c in text):
        raise PassportError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise PassportError("not base64url") from None


def canonical_json(obj: Any) -> bytes:
    """RFC 8225 §9: lexicographically sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Passport:
    """A decoded (not yet trusted) PASSporT."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes  # ``header.claims`` as sent: what the signature covers
    signature: bytes  # raw r || s

    @property
    def x5u(self) -> str:
        v = self.header.get("x5u")
        return v if isinstance(v, str) else ""

    @property
    def attest(self) -> str:
        v = self.claims.get("attest")
        return v if isinstance(v, str) else ""

    @property
    def iat(self) -> int:
        v = self.claims.get("iat")
        if isinstance(v, bool) or not isinstance(v, int):
            raise PassportError("iat is not an integer NumericDate")
        return v

    @property
    def orig_tn(self) -> str:
        orig = self.claims.get("orig")
        tn = orig.get("tn") if isinstance(orig, dict) else None
        if not isinstance(tn, str):
            raise PassportError("orig.tn missing")
        return tn

    @property
    def dest_tns(self) -> tuple[str, ...]:
        dest = self.claims.get("dest")
        tns = dest.get("tn") if isinstance(dest, dict) else None
        if not isinstance(tns, list) or not all(isinstance(t, str) for t in tns):
            return ()
        return tuple(tns)


def sign_passport(
    key: ec.EllipticCurvePrivateKey,
    *,
    x5u: str,
    orig_tn: str,
    dest_tns: list[str],
    iat: int,
    attest: str,
    origid: str,
) -> str:
    """A SHAKEN PASSporT (RFC 8588 §4-5) in JWS compact form."""
    if attest not in ATTESTATIONS:
        raise ValueError(f"attestation must be one of {ATTESTATIONS}, got {attest!r}")
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("ES256 needs a P-256 key")
    header = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": x5u}
    claims = {
        "attest": attest,
        "dest": {"tn": list(dest_tns)},
        "iat": int(iat),
        "orig": {"tn": orig_tn},
        "origid": origid,
    }
    signing_input = (
        b64url_encode(canonical_json(header)) + "." + b64url_encode(canonical_json(claims))
    )
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing_input + "." + b64url_encode(sig)


def decode_passport(token: str) -> Passport:
    """Split and decode (no trust yet). Raises :class:`PassportError` (438) on any defect."""
    if len(token) > MAX_TOKEN_BYTES:
        raise PassportError("PASSporT too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise PassportError("PASSporT is not a three-part JWS compact serialization")
    h64, c64, s64 = parts
    try:
        header = json.loads(b64url_decode(h64))
        claims = json.loads(b64url_decode(c64)) if c64 else {}
    except (ValueError, RecursionError):
        raise PassportError("PASSporT header or claims are not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise PassportError("PASSporT header or claims are not JSON objects")
    if header.get("alg") != "ES256":
        raise PassportError(f"unsupported alg {str(header.get('alg'))[:20]!r}", status=437)
    if header.get("typ") not in ("passport", None):
        raise PassportError("typ is not passport")
    sig = b64url_decode(s64)
    if len(sig) != 64:
        raise PassportError("ES256 signature is not 64 bytes")
    return Passport(header, claims, f"{h64}.{c64}".encode("ascii"), sig)


def verify_signature(
    passport: Passport, public_key: ec.EllipticCurvePublicKey, signing_input: bytes | None = None
) -> None:
    """Check the ES256 signature over ``signing_input`` (default: the token's own)."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise PassportError("certificate key is not P-256", status=437)
    r = int.from_bytes(passport.signature[:32], "big")
    s = int.from_bytes(passport.signature[32:], "big")
    data = passport.signing_input if signing_input is None else signing_input
    try:
        public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise PassportError("PASSporT signature does not verify") from None
