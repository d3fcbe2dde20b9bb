"""RFC 8898 Bearer as an edge :class:`~callward.edge.hooks.AuthScheme`, next to Digest.

* Challenges: every 401/407 carries ``Bearer realm=..., scope=..., authz_server=<issuer>``
  besides the Digest challenges (RFC 8898 §3.2, RFC 3261 §22.1), so a phone picks the scheme
  it has credentials for.
* Verification (:class:`~callward.edge.bearer.BearerVerifier`): signature against the issuer's
  JWKS, ``iss``, ``aud``, ``exp``/``nbf`` with leeway, scope, tenant.
* Questions (answered by the adapter, :class:`~callward.edge.pending.Query`):
  :class:`JwksFetch` when the verifier needs keys (first use, a ``kid`` rotated in, max age),
  and :class:`IdentityLookup` on **every** request: the token says who logged in, the directory
  says which AOR that subject has today and whether it was revoked. A renumbering or a
  revocation therefore applies to the next request, not at the token's expiry.
* Outcome: ``Authenticated(username=<user part of the AOR>, tenant, "Bearer")`` when the
  subject's AOR is the request's (To for REGISTER, From for calls; else 403), ``AuthRefused()``
  (challenge again: expired, bad signature, unknown key) or ``AuthRefused(403, ...)`` for a
  revoked or unprovisioned subject.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import ClassVar

from callward.edge.bearer import (
    BearerClaims,
    BearerRejected,
    BearerVerifier,
    bearer_challenge,
    bearer_token,
)
from callward.edge.directory import Identity
from callward.edge.hooks import Authenticated, AuthRefused
from callward.edge.pending import Query, ask
from callward.edge.registrar import aor_of
from callward.errors import AuthError, SipParseError, StoreError
from callward.sip.message import Request
from callward.sip.uri import SipURI

__all__ = ["BearerScheme", "IdentityLookup", "JwksFetch"]


@dataclass(frozen=True, slots=True)
class JwksFetch(Query):
    """Answer: the JWKS document (``bytes``) from ``uri``."""

    timeout: ClassVar[float] = 5.0
    uri: str


@dataclass(frozen=True, slots=True)
class IdentityLookup(Query):
    """Answer: ``Identity | None`` for an OAuth subject (the identity directory)."""

    subject: str


class BearerScheme:
    scheme = "Bearer"

    def __init__(self, realm: str, verifier: BearerVerifier) -> None:
        self.realm = realm
        self.verifier = verifier
        self.refused = 0

    @staticmethod
    def _header(proxy: bool) -> str:
        return "Proxy-Authorization" if proxy else "Authorization"

    def _token(self, request: Request, proxy: bool) -> str | None:
        for value in request.headers.get_lines(self._header(proxy)):
            if value.lstrip()[:7].lower() == "bearer ":
                return bearer_token(value)
        return None

    def has_credentials(self, request: Request, *, proxy: bool) -> bool:
        return any(
            v.lstrip()[:7].lower() == "bearer "
            for v in request.headers.get_lines(self._header(proxy))
        )

    def challenges(
        self, request: Request, now: float, *, proxy: bool, stale: bool = False
    ) -> list[tuple[str, str]]:
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        return [(name, bearer_challenge(self.realm, self.verifier.policy))]

    def verify(
        self, request: Request, now: float, *, proxy: bool
    ) -> Generator[Query, object, Authenticated | AuthRefused]:
        token = self._token(request, proxy)
        if token is None:
            self.refused += 1
            return AuthRefused()
        try:
            claims = yield from self._verify(token, now)
        except BearerRejected:
            self.refused += 1
            return AuthRefused()
        except (AuthError, StoreError):
            # no keys could be had: the IdP is down and nothing is cached; try again later
            return AuthRefused(503, "Identity Provider Unavailable")
        ident: Identity | None = yield from ask(
            IdentityLookup(claims.subject), (Identity, type(None))
        )
        if not isinstance(ident, Identity) or ident.revoked or ident.tenant != claims.tenant:
            self.refused += 1
            return AuthRefused(403, "Subject Revoked Or Unknown")
        try:
            uri = request.to.uri if request.method == "REGISTER" else request.from_.uri
        except SipParseError:
            return AuthRefused(403, "Token Does Not Match AOR")
        if not isinstance(uri, SipURI) or aor_of(uri) != ident.aor.lower():
            return AuthRefused(403, "Token Does Not Match AOR")
        return Authenticated(ident.aor.split("@", 1)[0], ident.tenant, self.scheme)

    def _verify(self, token: str, now: float) -> Generator[Query, object, BearerClaims]:
        cache = self.verifier.cache
        try:
            return self.verifier.verify(token, now)
        except BearerRejected:
            raise
        except AuthError:  # KeysNeeded: fetch (rate-limited by the cache), then decide
            if not cache.fetching:
                cache.fetch_started(now)
            try:
                raw = yield from ask(JwksFetch(self.verifier.policy.jwks_uri), bytes)
                cache.install(raw, now)
            except (StoreError, AuthError):
                cache.fetch_failed(now)
                if cache.keys is None:
                    raise
            return self.verifier.verify(token, now)
