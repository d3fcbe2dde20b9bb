"""Keyed pseudonyms (HMAC-SHA-256) for subject identifiers.

A pseudonym lets stores index and look up a subject (a legal request "all CDRs of +4915..."),
without keeping the identifier itself in the clear. It is *keyed* (GDPR Art. 4(5)
pseudonymisation: the additional information, the key, is kept separately) so that a dictionary
attack over the small MSISDN space is impossible without the key; a plain hash of a phone number
is not a pseudonym because every E.164 number can be enumerated.

Identifiers are normalized first so ``sip:+4915112345678@a.example;user=phone``,
``tel:+49-151-1234-5678`` and ``+4915112345678`` are one subject.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field

from callward.errors import PolicyError

__all__ = ["Pseudonymizer", "normalize_subject"]

# RFC 3966 §3 visual separators inside a telephone-subscriber.
_VISUAL = re.compile(r"[-.() ]")
_PHONE = re.compile(r"^\+?[0-9]{3,20}$")
_MAX_SUBJECT = 512


def normalize_subject(identifier: str) -> str:
    """Return the canonical subject string for an MSISDN, TEL URI or SIP URI.

    Phone numbers (a TEL URI, a SIP URI whose user part is a phone number per RFC 3261 §19.1.1
    ``user=phone`` or simply digits) become ``+<digits>`` when they carry a ``+`` and ``<digits>``
    otherwise; any other SIP URI becomes ``user@host`` lower-cased (host is case-insensitive,
    RFC 3261 §19.1.4; we also fold the user part because subjects are matched, not routed).
    """
    text = identifier.strip()
    if not text or len(text) > _MAX_SUBJECT:
        raise PolicyError("subject: expected a non-empty MSISDN or URI of at most 512 characters")
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    low = text.lower()
    for scheme in ("sips:", "sip:", "tel:"):
        if low.startswith(scheme):
            text = text[len(scheme) :]
            break
    text = text.split(";", 1)[0].split("?", 1)[0]
    user, _, host = text.partition("@")
    candidate = _VISUAL.sub("", user)
    if _PHONE.match(candidate):
        return candidate
    if host:
        return f"{user.lower()}@{host.lower()}"
    return user.lower()


@dataclass(slots=True)
class Pseudonymizer:
    """HMAC-SHA-256 pseudonyms, truncated to 128 bits (hex), with a bounded memo.

    128 bits keeps collisions negligible at carrier scale (birthday bound ~2^64 subjects) while
    halving index size. The memo avoids recomputing hot subjects during bulk ingest.
    """

    key: bytes
    memo_size: int = 100_000
    _memo: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise PolicyError("pseudonym key: expected at least 16 bytes")

    def digest(self, identifier: str) -> bytes:
        """16-byte pseudonym (b'' for an empty identifier): the form stores index."""
        if not identifier:
            return b""
        hit = self._memo.get(identifier)
        if hit is not None:
            return hit
        subject = normalize_subject(identifier)
        digest = hmac.new(self.key, subject.encode("utf-8"), hashlib.sha256).digest()[:16]
        if len(self._memo) >= self.memo_size:
            self._memo.clear()
        self._memo[identifier] = digest
        return digest

    def pseudonym(self, identifier: str) -> str:
        """Pseudonym of the subject behind ``identifier`` as 32 hex digits ('' when empty)."""
        return self.digest(identifier).hex()
