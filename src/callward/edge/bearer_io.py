"""The I/O half of :mod:`callward.edge.bearer`: fetching the issuer's JWKS over HTTP (httpx),
and a verifier that fetches when the cache asks for it (the edge's Bearer scheme and the web's
phone API both use it)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from callward.edge.bearer import BearerClaims, BearerPolicy, BearerVerifier, KeysNeeded
from callward.errors import AuthError

__all__ = ["JwksFetcher", "policy_from_config"]


def policy_from_config(cfg: object) -> BearerPolicy | None:
    """The :class:`BearerPolicy` of an ``identity`` config section, None when Bearer is off."""
    issuer = getattr(cfg, "issuer", None)
    if not issuer:
        return None
    return BearerPolicy(
        issuer=issuer,
        audience=str(cfg.audience),  # type: ignore[attr-defined]
        jwks_uri=getattr(cfg, "jwks_uri", None) or f"{issuer.rstrip('/')}/jwks",
        required_scope=str(cfg.sip_scope),  # type: ignore[attr-defined]
        leeway=float(cfg.leeway),  # type: ignore[attr-defined]
        tenants=frozenset(getattr(cfg, "tenants", ()) or ()),
    )


class JwksFetcher:
    """Owns a :class:`BearerVerifier` and fetches its JWKS when it asks (first use, unknown
    ``kid`` after a rotation, ``jwks_max_age``), never more than the cache allows."""

    def __init__(
        self,
        verifier: BearerVerifier,
        clock: Callable[[], float],
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 3.0,
    ) -> None:
        self.verifier = verifier
        self._clock = clock
        self._http = http or httpx.AsyncClient(timeout=timeout, trust_env=False)
        self.fetches = 0

    async def fetch(self) -> None:
        cache = self.verifier.cache
        cache.fetch_started(self._clock())
        self.fetches += 1
        try:
            resp = await self._http.get(self.verifier.policy.jwks_uri)
            if resp.status_code != 200:
                raise AuthError(f"JWKS endpoint answered {resp.status_code}")
            cache.install(resp.content, self._clock())
        except httpx.HTTPError as exc:
            cache.fetch_failed(self._clock())
            raise AuthError(f"JWKS unreachable: {type(exc).__name__}") from None

    async def verify(self, token: str) -> BearerClaims:
        """Verify, fetching the JWKS once when the verifier needs it. AuthError when the token
        is refused or the keys cannot be had (then the caller answers 401/503)."""
        try:
            return self.verifier.verify(token, self._clock())
        except KeysNeeded:
            try:
                await self.fetch()
            except AuthError:
                if self.verifier.cache.keys is None:
                    raise
            return self.verifier.verify(token, self._clock())

    async def aclose(self) -> None:
        await self._http.aclose()
