"""Digest authentication for the registrar and proxy (RFC 3261 §22.4, RFC 7616, RFC 8760).

Only hashes are stored: HA1 = H(username:realm:password) per algorithm, so a leaked subscriber
table does not reveal passwords. Nonces are stateless: ``<hex time>.<hmac>`` signed with a
secret shared by every edge node, so any node can verify a nonce another node issued and no
nonce table is needed (an expired-but-genuine nonce gets ``stale=true``, §22.4 / RFC 7616 §3.3).

This lives in the edge until ``callward.sip.auth`` lands; the helpers are pure functions.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from callward.sip.headers import AuthHeader

__all__ = [
    "ALGORITHMS",
    "Challenge",
    "DigestVerdict",
    "compute_response",
    "ha1",
    "make_challenge",
    "make_nonce",
    "verify",
]

# RFC 8760 §2: algorithm name → hash function. "-sess" variants are not offered.
ALGORITHMS: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256"}


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(ALGORITHMS[algorithm], text.encode("utf-8")).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2)."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def compute_response(
    *,
    algorithm: str,
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest of RFC 7616 §3.4.1 (and RFC 2069 compatibility when qop is absent)."""
    if qop == "auth-int":
        body_hash = hashlib.new(ALGORITHMS[algorithm], body).hexdigest()
        ha2 = _h(algorithm, f"{method}:{uri}:{body_hash}")
    else:
        ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1_hex}:{nonce}:{ha2}")


def make_nonce(secret: bytes, realm: str, now: float) -> str:
    stamp = f"{int(now):x}"
    mac = hmac.new(secret, f"{stamp}:{realm}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{stamp}.{mac}"


def _nonce_age(secret: bytes, realm: str, nonce: str, now: float) -> float | None:
    """Age in seconds of a genuine nonce; None when forged or malformed."""
    stamp, dot, mac = nonce.partition(".")
    if not dot or len(stamp) > 12 or not stamp.isalnum():
        return None
    expected = hmac.new(secret, f"{stamp}:{realm}".encode(), hashlib.sha256).hexdigest()[:32]
    if not hmac.compare_digest(expected, mac):
        return None
    try:
        issued = int(stamp, 16)
    except ValueError:
        return None
    return now - issued


@dataclass(frozen=True, slots=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str
    stale: bool = False

    def __str__(self) -> str:
        stale = ", stale=true" if self.stale else ""
        return (
            f'Digest realm="{self.realm}", nonce="{self.nonce}", algorithm={self.algorithm}, '
            f'qop="auth"{stale}'
        )


def make_challenge(
    secret: bytes, realm: str, now: float, algorithms: tuple[str, ...], *, stale: bool = False
) -> list[Challenge]:
    """One challenge per algorithm in the configured order of preference (RFC 8760 §2.4)."""
    nonce = make_nonce(secret, realm, now)
    return [Challenge(realm, nonce, alg, stale) for alg in algorithms]


@dataclass(frozen=True, slots=True)
class DigestVerdict:
    ok: bool
    stale: bool = False
    reason: str = ""  # why it failed: for metrics and logs, never contains credentials


def verify(
    creds: AuthHeader,
    *,
    method: str,
    body: bytes,
    realm: str,
    secret: bytes,
    now: float,
    nonce_ttl: float,
    ha1_for: dict[str, str],
) -> DigestVerdict:
    """Check (Proxy-)Authorization credentials. ``ha1_for`` maps algorithm → stored HA1 of the
    user named in the credentials (the caller looked the user up)."""
    if creds.scheme.lower() != "digest":
        return DigestVerdict(False, reason="scheme")
    if (creds.get("realm") or "") != realm:
        return DigestVerdict(False, reason="realm")
    algorithm = creds.get("algorithm") or "MD5"
    algorithm = {"md5": "MD5", "sha-256": "SHA-256"}.get(algorithm.lower(), algorithm)
    stored = ha1_for.get(algorithm)
    if stored is None:
        return DigestVerdict(False, reason="algorithm")
    nonce = creds.get("nonce") or ""
    age = _nonce_age(secret, realm, nonce, now)
    if age is None or age < -5:
        return DigestVerdict(False, reason="nonce")
    uri = creds.get("uri")
    response = creds.get("response")
    if uri is None or response is None:
        return DigestVerdict(False, reason="params")
    qop = creds.get("qop")
    if qop is not None and qop not in ("auth", "auth-int"):
        return DigestVerdict(False, reason="qop")
    expected = compute_response(
        algorithm=algorithm,
        ha1_hex=stored,
        nonce=nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=creds.get("nc"),
        cnonce=creds.get("cnonce"),
        body=body,
    )
    if not hmac.compare_digest(expected, response.lower()):
        return DigestVerdict(False, reason="response")
    if age > nonce_ttl:
        # Right password, old nonce: tell the client to retry without asking the user (§22.4).
        return DigestVerdict(False, stale=True, reason="stale")
    return DigestVerdict(True)
