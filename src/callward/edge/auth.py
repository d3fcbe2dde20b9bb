"""Authentication at the edge (RFC 3261 §22): an :class:`Authenticator` over pluggable
:class:`~callward.edge.hooks.AuthScheme` objects, and the Digest scheme (RFC 7616 / RFC 8760
through :class:`callward.sip.auth.DigestVerifier`) whose subscriber lookups are questions the
core asks (:class:`~callward.edge.pending.SubscriberLookup`), never store calls."""

from __future__ import annotations

from collections.abc import Generator
from typing import Protocol

from callward.edge.hooks import Authenticated, AuthRefused, AuthScheme
from callward.edge.pending import Query, subscriber
from callward.edge.subscribers import Subscriber
from callward.errors import AuthError
from callward.sip.auth import AuthOutcome, Credentials, DigestAlgorithm, DigestVerifier
from callward.sip.message import Request, Response, make_response
from callward.sip.peer import Peer

__all__ = ["AuthGuard", "Authenticator", "DigestScheme"]


class DigestScheme:
    """HTTP Digest with stateless HMAC nonces; one verifier per header pair (401/Authorization
    for REGISTER, 407/Proxy-* for calls), sharing the secret."""

    scheme = "Digest"

    def __init__(
        self, realm: str, secret: bytes, algorithms: tuple[str, ...], nonce_ttl: float
    ) -> None:
        self.realm = realm
        algs = tuple(DigestAlgorithm.parse(a) for a in algorithms)
        self._known: Subscriber | None = None  # the subscriber fetched for the current verify
        self._www = DigestVerifier(
            realm, secret, self._ha1, algorithms=algs, qop=("auth",), nonce_ttl=nonce_ttl
        )
        self._proxy = DigestVerifier(
            realm,
            secret,
            self._ha1,
            algorithms=algs,
            qop=("auth",),
            nonce_ttl=nonce_ttl,
            proxy=True,
        )

    def _verifier(self, proxy: bool) -> DigestVerifier:
        return self._proxy if proxy else self._www

    def _ha1(self, username: str, realm: str, alg: DigestAlgorithm) -> str | None:
        sub = self._known
        if sub is None or sub.username != username or realm != self.realm:
            return None
        return sub.ha1_for().get(alg.value)

    def _credentials(self, request: Request, proxy: bool) -> Credentials | None:
        for value in request.headers.get_lines(self._verifier(proxy).credentials_header):
            if not value.lstrip().lower().startswith("digest"):
                continue
            try:
                creds = Credentials.parse(value)
            except AuthError:
                return None
            if creds.realm == self.realm:
                return creds
        return None

    def has_credentials(self, request: Request, *, proxy: bool) -> bool:
        header = self._verifier(proxy).credentials_header
        return any(
            v.lstrip().lower().startswith("digest") for v in request.headers.get_lines(header)
        )

    def challenges(
        self, request: Request, now: float, *, proxy: bool, stale: bool = False
    ) -> list[tuple[str, str]]:
        verifier = self._verifier(proxy)
        return [(verifier.challenge_header, str(c)) for c in verifier.challenges(now, stale=stale)]

    def verify(
        self, request: Request, now: float, *, proxy: bool
    ) -> Generator[Query, object, Authenticated | AuthRefused]:
        creds = self._credentials(request, proxy)
        sub = (yield from subscriber(creds.username, self.realm)) if creds is not None else None
        self._known = sub
        try:
            result = self._verifier(proxy).verify(request, now)
        finally:
            self._known = None
        if result.outcome is AuthOutcome.MISSING:
            return AuthRefused()
        if result.outcome is AuthOutcome.STALE:
            return AuthRefused(stale=True)
        if not result.ok or result.username is None:
            if result.reason == "nonce not issued by us":
                return AuthRefused()
            return AuthRefused(403)
        return Authenticated(result.username, sub.tenant if sub is not None else "default")


class AuthGuard(Protocol):
    """Sees every verification outcome and may turn it into a refusal (failed-auth lockout:
    :class:`callward.edge.security.EdgeSecurity`)."""

    def checked(
        self,
        request: Request,
        source: Peer | None,
        outcome: Authenticated | AuthRefused,
        now: float,
    ) -> Authenticated | AuthRefused: ...


class Authenticator:
    """Runs the scheme whose credentials a request carries; challenges with all of them when it
    carries none. ``schemes`` is the core's hook list (others append, e.g. Bearer); ``guard``
    (optional) rules on every outcome."""

    def __init__(self, schemes: list[AuthScheme], guard: AuthGuard | None = None) -> None:
        self.schemes = schemes
        self.guard = guard

    def challenge(
        self, request: Request, now: float, *, proxy: bool, stale: bool = False
    ) -> Response:
        """401 (407 for the proxy) with every scheme's challenges (RFC 8760 §2.4 order)."""
        extra = [
            line
            for s in self.schemes
            for line in s.challenges(request, now, proxy=proxy, stale=stale)
        ]
        return make_response(request, 407 if proxy else 401, to_tag="cw-auth", extra=extra)

    def authenticate(
        self, request: Request, now: float, *, proxy: bool, username: str | None = None
    ) -> Generator[Query, object, Authenticated | Response]:
        """Who sent ``request``, or the response refusing it. ``username`` (when given) must
        match the credentials' user (§22.4: a user may only register or call as itself)."""
        outcome: Authenticated | AuthRefused = AuthRefused()
        for scheme in self.schemes:
            if scheme.has_credentials(request, proxy=proxy):
                outcome = yield from scheme.verify(request, now, proxy=proxy)
                if self.guard is not None:
                    outcome = self.guard.checked(request, None, outcome, now)
                break
        if isinstance(outcome, AuthRefused):
            if outcome.status:
                return make_response(request, outcome.status, outcome.reason, to_tag="cw-auth")
            return self.challenge(request, now, proxy=proxy, stale=outcome.stale)
        if username is not None and username != outcome.username:
            return make_response(request, 403, "Credentials Do Not Match AOR", to_tag="cw-auth")
        return outcome
