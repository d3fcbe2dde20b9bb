"""Contact discovery with truncated, salted hashes of phone numbers (what the phone sends and
what the server matches), and what that does and does not protect.

The phone sends, for each E.164 number in its address book that it has not sent before,
``HMAC-SHA-256(salt, "+<digits>")`` truncated to :data:`PREFIX_BYTES` bytes; never the number,
never a name. The server holds the same truncation for its reachable subscribers and answers
only the matches.

What this protects
    * Names, labels and every other address-book field never leave the phone.
    * Numbers are not sent in the clear: a passive observer of stored requests or a leaked
      request log sees 48-bit values, and per-deployment salts stop precomputed tables built
      for another deployment.
    * Truncation makes the value ambiguous on its own; the server keeps no request content,
      only a per-subscriber daily count used for rate limiting.

What it does NOT protect (be honest)
    * Phone numbers have little entropy (~10^10 per country plan). Anyone who knows the salt,
      and the server always does, can hash every possible number in minutes and invert any
      prefix. Hashing is **not** anonymisation against the server or a salt holder.
    * The salt is given to every authenticated phone, so a malicious client can enumerate
      which numbers are registered; only the per-subscriber daily limit
      (``identity.discovery_daily_limit``) slows that down.
    * Real protection of the address book against the server needs private set intersection
      or a trusted enclave (e.g. Signal's SGX-based discovery). Not implemented here.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["PREFIX_BYTES", "discovery_hash", "is_e164"]

PREFIX_BYTES = 6  # 48 bits: ~3e-9 false-match chance per lookup against 1e6 subscribers


def is_e164(number: str) -> bool:
    return number.startswith("+") and number[1:].isdigit() and 2 <= len(number) <= 16


def discovery_hash(salt: bytes, number: str) -> str:
    """The hex prefix the phone sends for ``number`` (E.164 with '+')."""
    mac = hmac.new(salt, number.encode("ascii"), hashlib.sha256).digest()
    return mac[:PREFIX_BYTES].hex()
