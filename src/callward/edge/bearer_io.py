"""The I/O half of :mod:`callward.edge.bearer`: fetching the issuer's JWKS over HTTP (httpx),
and a verifier that fetches when the cache asks for it (the edge's Bearer scheme and the web's
phone API both use it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from callward.edge.bearer import BearerClaims, BearerPolicy, BearerVerifier, KeysNeeded
from callward.edge.bearer_scheme import BearerScheme, IdentityLookup, JwksFetch
from callward.edge.directory import SqliteDirectory
from callward.errors import AuthError

__all__ = ["EdgeBearer", "JwksFetcher", "get_jwks", "install_bearer", "policy_from_config"]


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
        jwks_refetch=float(getattr(cfg, "jwks_refetch", 5.0)),
        jwks_max_age=float(getattr(cfg, "jwks_max_age", 3600.0)),
    )


async def get_jwks(http: httpx.AsyncClient, uri: str) -> bytes:
    """The JWKS document at ``uri`` (one GET); AuthError when it cannot be had."""
    try:
        resp = await http.get(uri)
    except httpx.HTTPError as exc:
        raise AuthError(f"JWKS unreachable: {type(exc).__name__}") from None
    if resp.status_code != 200:
        raise AuthError(f"JWKS endpoint answered {resp.status_code}")
    return resp.content


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
            cache.install(await get_jwks(self._http, self.verifier.policy.jwks_uri), self._clock())
        except AuthError:
            cache.fetch_failed(self._clock())
            raise

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


class EdgeBearer:
    """The Bearer scheme of one edge node and what answers its questions."""

    def __init__(self, scheme: BearerScheme, directory: SqliteDirectory) -> None:
        self.scheme = scheme
        self.directory = directory
        self._http = httpx.AsyncClient(timeout=JwksFetch.timeout - 0.5, trust_env=False)
        self._inflight: asyncio.Future[object] | None = None

    async def fetch_jwks(self, query: object) -> object:
        """One GET at a time: questions arriving while it runs share its answer."""
        assert isinstance(query, JwksFetch)
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._get(query))
        return await asyncio.shield(self._inflight)

    async def _get(self, query: JwksFetch) -> object:
        try:
            return await get_jwks(self._http, query.uri)
        except AuthError as exc:
            return exc  # an exception as the answer fails the question (edge.pending)

    def lookup(self, query: object) -> object:
        assert isinstance(query, IdentityLookup)
        return self.directory.by_subject(query.subject)

    async def aclose(self) -> None:
        await self._http.aclose()
        self.directory.close()


def install_bearer(cfg: Any, core: Any, server: Any) -> EdgeBearer | None:
    """Append the RFC 8898 Bearer scheme to ``core.hooks.auth_schemes`` (after Digest) and
    register the answers to its questions on ``server``, when ``identity.issuer`` is set."""
    policy = policy_from_config(cfg.identity)
    if policy is None:
        return None
    path = Path(cfg.identity.directory)
    if not path.is_absolute():
        path = Path(cfg.storage.data_dir) / path
    bearer = EdgeBearer(BearerScheme(core.settings.realm, BearerVerifier(policy)),
                        SqliteDirectory(path))  # fmt: skip
    core.hooks.auth_schemes.append(bearer.scheme)
    server.answer_with(JwksFetch, bearer.fetch_jwks)
    server.answer_with(IdentityLookup, bearer.lookup, inline=True)
    return bearer
