"""Where a UA's request credentials come from: a small pluggable interface, sans-IO.

The registration manager (:mod:`callward.ua.registration`) asks a :class:`CredentialSource` for
headers twice: *before* sending (``preemptive``: credentials computed from the last challenge, so
a refresh costs one round trip, RFC 7616 §3.4 "nc") and *after* a 401/407 (``answer``). A token
source (a Bearer header, RFC 8898) plugs in by implementing the same two methods.

Never logged: a source holds secrets.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

from callward.errors import AuthError
from callward.sip.auth import Challenge, answer_challenge, best_challenges
from callward.sip.message import Request, Response

__all__ = ["CredentialSource", "DigestCredentials", "NoCredentials"]

Header = tuple[str, str]

# A nonce is reused for at most this many requests (RFC 7616 §3.4: the server may bound nc).
MAX_NONCE_USES = 10_000


class CredentialSource(Protocol):
    """Credentials for outgoing requests."""

    def preemptive(self, request: Request) -> list[Header]:
        """Headers to add before the first send (may be empty)."""
        ...

    def answer(self, request: Request, response: Response) -> list[Header] | None:
        """Headers answering a 401/407 to ``request``; None when we cannot answer it."""
        ...


class NoCredentials:
    """A phone without credentials (lab registrars that do not challenge)."""

    def preemptive(self, request: Request) -> list[Header]:
        return []

    def answer(self, request: Request, response: Response) -> list[Header] | None:
        return None


@dataclass(slots=True)
class _Remembered:
    header: str  # Authorization | Proxy-Authorization
    challenge: Challenge
    cnonce: str
    nc: int  # last nonce-count used


class DigestCredentials:
    """Digest username/password (RFC 3261 §22) that remembers the last challenge per realm and
    answers the next request with it, counting ``nc`` up, instead of waiting for a new 401."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password
        self._remembered: dict[str, _Remembered] = {}

    def __repr__(self) -> str:  # never show the password
        return f"DigestCredentials(username={self.username!r})"

    def forget(self) -> None:
        self._remembered.clear()

    def _headers(self, request: Request) -> list[Header]:
        out: list[Header] = []
        for realm, r in list(self._remembered.items()):
            if r.nc >= MAX_NONCE_USES:
                del self._remembered[realm]
                continue
            r.nc += 1
            creds = answer_challenge(
                r.challenge,
                username=self.username,
                password=self._password,
                method=request.method,
                uri=str(request.uri),
                body=request.body,
                nc=r.nc,
                cnonce=r.cnonce,
            )
            out.append((r.header, str(creds)))
        return out

    def preemptive(self, request: Request) -> list[Header]:
        # Only challenges that carry qop can be reused safely (nc protects against replay).
        return self._headers(request)

    def answer(self, request: Request, response: Response) -> list[Header] | None:
        if response.status not in (401, 407):
            return None
        try:
            best = best_challenges(response)
        except AuthError:
            return None
        header = "Proxy-Authorization" if response.status == 407 else "Authorization"
        self._remembered.update(
            {
                realm: _Remembered(header, c, secrets.token_hex(8), 0)
                for realm, c in best.items()
                if c.qop
            }
        )
        if any(not c.qop for c in best.values()):  # RFC 2069 challenges: answer once, never reuse
            fresh = {
                realm: _Remembered(header, c, secrets.token_hex(8), 0)
                for realm, c in best.items()
                if not c.qop
            }
            saved, self._remembered = self._remembered, {**self._remembered, **fresh}
            try:
                return self._headers(request)
            finally:
                self._remembered = saved
        return self._headers(request)
