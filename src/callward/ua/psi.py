"""Private contact discovery with an elliptic-curve OPRF (Diffie-Hellman, "ECDH-PSI"), on
P-256 through ``cryptography``. What it protects, and what the hashed prefixes of
:mod:`callward.ua.sync` do not:

* a phone number space is small (~10^10 per country): a salted hash of a number is reversed by
  trying them all, offline, by whoever holds the salt (the server) or a leaked table. Here the
  phone's lookup value is ``F(x) = b·H(x)``, where ``b`` is a key only the server holds: the
  phone learns ``F`` only for numbers it asks about, *online*, one exchange per number and
  under the daily limit; an offline guess needs ``b``;
* the phone sends ``a·H(x)`` with a fresh random ``a`` per request (a uniformly random point:
  the server learns nothing about ``x``, not even whether two requests hold the same number)
  and un-blinds the answer with ``a⁻¹`` (scalar inverse modulo the group order);
* the server publishes, per tenant, a table of ``id = HKDF(F(y), "id")[:16]`` and the AOR
  sealed with AES-GCM under ``HKDF(F(y), "key")`` for every reachable subscriber number ``y``;
  a phone opens an entry only for a number it evaluated. The table is versioned (ETag), so
  the phone downloads it once and then revalidates with a bodiless 304.

What it does not hide: the server sees how many contacts a phone evaluates and when; the table
size tells the number of reachable subscribers of the tenant; a phone that evaluates many
numbers learns which are subscribers (the daily limit bounds that). Hash-to-curve is
try-and-increment (its running time depends on the number; it runs on the phone for its own
contacts, and on the server for its own directory), not RFC 9380's constant-time map.

Points travel compressed (33 bytes, SEC 1 §2.3.3); every multiplication uses only the
x-coordinate, which is the same for ``±P``, so the sign bit never matters.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from callward.errors import AuthError

__all__ = [
    "ORDER",
    "PsiQuery",
    "blind",
    "evaluate",
    "hash_to_point",
    "match_table",
    "oprf_key",
    "seal_entry",
    "unblind",
]

CURVE = ec.SECP256R1()
ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # SEC 2 §2.4.2
_FIELD = 2**256 - 2**224 + 2**192 + 2**96 - 1
MAX_POINTS = 500
POINT_BYTES = 33


def hash_to_point(number: str, domain: bytes = b"callward-psi-v1") -> bytes:
    """H(x): a P-256 point from an E.164 number by try-and-increment over SHA-256."""
    for counter in range(256):
        x = hashlib.sha256(domain + bytes([counter]) + number.encode()).digest()
        if int.from_bytes(x, "big") >= _FIELD:
            continue
        point = b"\x02" + x
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(CURVE, point)
        except ValueError:
            continue  # x is not on the curve (about half of all x): next counter
        return point
    raise AuthError("hash_to_point: no point after 256 tries")  # probability 2^-256


def _mul(scalar: int, point: bytes) -> bytes:
    """x(scalar · point) as a compressed point; AuthError for a point not on the curve."""
    if len(point) != POINT_BYTES:
        raise AuthError("PSI point: expected 33 bytes (SEC 1 compressed)")
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(CURVE, point)
        x = ec.derive_private_key(scalar, CURVE).exchange(ec.ECDH(), peer)
    except ValueError:
        raise AuthError("PSI point: not a point of P-256") from None
    return b"\x02" + x


def oprf_key(secret: bytes) -> int:
    """The server's scalar ``b`` in [1, n-1] from a secret (the discovery salt)."""
    wide = HKDF(hashes.SHA256(), 48, None, b"callward-psi-key").derive(secret)
    return int.from_bytes(wide, "big") % (ORDER - 1) + 1


def evaluate(b: int, points: list[bytes]) -> list[bytes]:
    """Server side: ``b · A`` for each blinded point (nothing is kept)."""
    if len(points) > MAX_POINTS:
        raise AuthError(f"PSI: at most {MAX_POINTS} points per request")
    return [_mul(b, p) for p in points]


def _derive(f: bytes, info: bytes, size: int) -> bytes:
    return HKDF(hashes.SHA256(), size, None, b"callward-psi-" + info).derive(f)


def seal_entry(b: int, number: str, aor: str) -> tuple[bytes, bytes]:
    """Server side: (id, sealed AOR) of one directory number for the published table."""
    f = _mul(b, hash_to_point(number))
    key = _derive(f, b"key", 16)
    return _derive(f, b"id", 16), AESGCM(key).encrypt(b"\x00" * 12, aor.encode(), b"aor")


@dataclass(frozen=True, slots=True)
class PsiQuery:
    """What the phone keeps between the request and the answer (never sent, never stored)."""

    contacts: tuple[str, ...]  # contact ids, in the order of the points
    inverse: int  # a⁻¹ mod n

    def __repr__(self) -> str:
        return f"PsiQuery({len(self.contacts)} contacts)"


def blind(contacts: Mapping[str, str]) -> tuple[PsiQuery, list[bytes]]:
    """Phone side: ``a · H(x)`` for each contact (contact id -> E.164 number), fresh ``a``."""
    if len(contacts) > MAX_POINTS:
        raise AuthError(f"PSI: at most {MAX_POINTS} contacts per request")
    a = secrets.randbelow(ORDER - 1) + 1
    ids = tuple(contacts)
    points = [_mul(a, hash_to_point(contacts[c])) for c in ids]
    return PsiQuery(ids, pow(a, -1, ORDER)), points


def unblind(query: PsiQuery, evaluated: list[bytes]) -> dict[str, bytes]:
    """Phone side: ``F(x) = a⁻¹ · (b · a · H(x))`` per contact id."""
    if len(evaluated) != len(query.contacts):
        raise AuthError("PSI answer: one point per contact expected")
    return {c: _mul(query.inverse, p) for c, p in zip(query.contacts, evaluated, strict=True)}


def match_table(values: Mapping[str, bytes], table: Mapping[bytes, bytes]) -> dict[str, str]:
    """Phone side: contact id -> AOR for every contact whose ``F`` opens a table entry."""
    out: dict[str, str] = {}
    for contact, f in values.items():
        sealed = table.get(_derive(f, b"id", 16))
        if sealed is None:
            continue
        try:
            aor = AESGCM(_derive(f, b"key", 16)).decrypt(b"\x00" * 12, sealed, b"aor")
        except InvalidTag:
            continue
        out[contact] = aor.decode("utf-8", "replace")
    return out
