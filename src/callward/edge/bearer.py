"""OAuth 2.0 access tokens on SIP requests (RFC 8898), the verifying side. Sans-IO.

RFC 8898 §3: a UA authenticates with ``Authorization: Bearer <token>`` (``Proxy-Authorization``
toward a proxy); a registrar or proxy that wants a token challenges with
``WWW-Authenticate: Bearer realm="...", scope="...", authz_server="<issuer>"`` next to its
Digest challenges (RFC 3261 §22.1, one header per scheme).

The token is a JWT access token (RFC 9068) signed by the issuer whose keys are published as a
JWKS (RFC 7517). :class:`BearerVerifier` checks, in order:

1. size (``max_token_bytes``) and shape (three base64url parts, a JSON header with ``kid``
   and an allowed ``alg``, never ``none``);
2. the signature, with the key named by ``kid`` from :class:`JwksCache`. An unknown ``kid`` is
   how a key rotation shows up: the verifier raises :class:`KeysNeeded` when the cache may fetch
   the JWKS again (at most once per ``jwks_refetch`` seconds, so a flood of made-up ``kid``
   values cannot make the edge hammer the IdP), else :class:`BearerRejected`;
3. the claims (RFC 7519 §4.1): ``iss`` is ours, ``aud`` contains ours, ``exp``/``nbf``/``iat``
   against ``now`` with ``leeway`` seconds of clock skew either way, ``sub`` present;
4. ``scope`` (space separated, RFC 8693 §4.2) contains ``required_scope``;
5. ``tenant`` (our private claim) is one of ``tenants`` when that set is not empty.

Who the subject *is* in SIP terms (its AOR, its MSISDN, whether it has been revoked since the
token was issued) is not in the token: :mod:`callward.edge.directory` answers that on every
request, so a renumbering or a revocation applies to the next request, not to the next token.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from callward.errors import AuthError

__all__ = [
    "BearerClaims",
    "BearerPolicy",
    "BearerRejected",
    "BearerVerifier",
    "JwksCache",
    "KeysNeeded",
    "bearer_challenge",
    "bearer_token",
]

MAX_JWKS_BYTES = 64 * 1024
MAX_JWKS_KEYS = 20


@dataclass(frozen=True, slots=True)
class BearerPolicy:
    issuer: str
    audience: str
    jwks_uri: str
    required_scope: str = "sip"
    leeway: float = 30.0
    algorithms: tuple[str, ...] = ("ES256", "RS256", "EdDSA")
    tenants: frozenset[str] = frozenset()
    max_token_bytes: int = 4096
    jwks_refetch: float = 5.0  # at most one on-demand JWKS fetch per this many seconds
    jwks_max_age: float = 3600.0  # then fetch again even without an unknown kid

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience or not self.jwks_uri:
            raise AuthError("bearer policy: issuer, audience and jwks_uri are required")
        if "none" in (a.lower() for a in self.algorithms) or any(
            a.startswith("HS") for a in self.algorithms
        ):
            # RFC 8725 §3.1/§3.2: no unsigned tokens, no shared-secret MACs with public keys
            raise AuthError("bearer policy: algorithms must be asymmetric signatures")
        if self.leeway < 0 or self.leeway > 300:
            raise AuthError(f"bearer policy: leeway {self.leeway!r}: expected 0..300 s")


class BearerRejected(AuthError):
    """The token is not acceptable. ``error`` is the RFC 6750 §3.1 code for the challenge."""

    def __init__(self, reason: str, *, error: str = "invalid_token") -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


class KeysNeeded(AuthError):
    """The token names a key the cache does not hold and may fetch: get the JWKS
    (:meth:`JwksCache.install`) and verify again."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"signing key {kid[:40]!r} not in the cached JWKS")
        self.kid = kid


@dataclass(frozen=True, slots=True)
class BearerClaims:
    subject: str
    tenant: str
    scopes: frozenset[str]
    expires_at: float
    client_id: str = ""
    token_id: str = ""


@dataclass
class JwksCache:
    """The issuer's public keys, with when they were fetched. Sans-IO: the adapter fetches
    when :meth:`wants_fetch` says so and calls :meth:`install` (or :meth:`fetch_failed`)."""

    policy: BearerPolicy
    keys: KeySet | None = None
    kids: frozenset[str] = frozenset()
    fetched_at: float | None = None
    _tried_at: float | None = field(default=None, repr=False)
    installs: int = 0
    fetching: bool = False  # a fetch is on the wire: verifiers of unknown kids wait for it

    def wants_fetch(self, now: float, kid: str | None = None) -> bool:
        if self._tried_at is not None and now - self._tried_at < self.policy.jwks_refetch:
            return False
        if self.keys is None or self.fetched_at is None:
            return True
        if now - self.fetched_at >= self.policy.jwks_max_age:
            return True
        return kid is not None and kid not in self.kids

    def fetch_started(self, now: float) -> None:
        self._tried_at = now
        self.fetching = True

    def fetch_failed(self, now: float) -> None:
        self._tried_at = now  # keep the old keys; try again after jwks_refetch
        self.fetching = False

    def install(self, raw: bytes | str | dict[str, Any], now: float) -> None:
        """Replace the keys with a JWKS document (RFC 7517 §5). AuthError when it is not one."""
        if isinstance(raw, bytes | str):
            if len(raw) > MAX_JWKS_BYTES:
                raise AuthError("JWKS larger than 64 KiB")
            try:
                raw = json.loads(raw)
            except ValueError:
                raise AuthError("JWKS: not JSON") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("keys"), list):
            raise AuthError("JWKS: expected an object with a 'keys' list")
        usable = [
            k for k in raw["keys"][:MAX_JWKS_KEYS]
            if isinstance(k, dict) and isinstance(k.get("kid"), str) and "d" not in k
            and k.get("use", "sig") == "sig"
        ]  # fmt: skip
        if not usable:
            raise AuthError("JWKS: no usable signing key")
        try:
            keys = KeySet.import_key_set({"keys": usable})
        except (JoseError, ValueError, TypeError) as exc:
            raise AuthError(f"JWKS: unusable key ({type(exc).__name__})") from None
        self.keys = keys
        self.kids = frozenset(str(k["kid"]) for k in usable)
        self.fetched_at = now
        self._tried_at = now
        self.fetching = False
        self.installs += 1


def bearer_token(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (RFC 6750 §2.1 b64token), or
    None when the value is another scheme or malformed."""
    if value is None:
        return None
    scheme, _, rest = value.strip().partition(" ")
    token = rest.strip()
    if scheme.lower() != "bearer" or not token or " " in token or "," in token:
        return None
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")
    return token if set(token) <= allowed else None


def bearer_challenge(realm: str, policy: BearerPolicy, error: str | None = None) -> str:
    """A ``WWW-Authenticate``/``Proxy-Authenticate`` Bearer challenge (RFC 8898 §3.2,
    RFC 6750 §3)."""
    parts = [
        f'Bearer realm="{realm}"',
        f'scope="{policy.required_scope}"',
        f'authz_server="{policy.issuer}"',
    ]
    if error:
        parts.append(f'error="{error}"')
    return ", ".join(parts)


def _b64json(part: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        obj = json.loads(raw)
    except (binascii.Error, ValueError):
        raise BearerRejected("token is not a JWT") from None
    if not isinstance(obj, dict):
        raise BearerRejected("token is not a JWT")
    return obj


class BearerVerifier:
    """See the module docstring."""

    def __init__(self, policy: BearerPolicy, cache: JwksCache | None = None) -> None:
        self.policy = policy
        self.cache = cache or JwksCache(policy)

    def header(self, token: str) -> dict[str, Any]:
        if len(token) > self.policy.max_token_bytes:
            raise BearerRejected(f"token longer than {self.policy.max_token_bytes} bytes")
        parts = token.split(".")
        if len(parts) != 3:
            raise BearerRejected("token is not a JWS compact serialization")
        head = _b64json(parts[0])
        if head.get("alg") not in self.policy.algorithms:
            raise BearerRejected(f"alg {str(head.get('alg'))[:20]!r} not accepted")
        if not isinstance(head.get("kid"), str):
            raise BearerRejected("token header has no kid")
        return head

    def verify(self, token: str, now: float) -> BearerClaims:
        p = self.policy
        kid = str(self.header(token)["kid"])
        if self.cache.wants_fetch(now, kid) or (self.cache.fetching and kid not in self.cache.kids):
            raise KeysNeeded(kid)
        if self.cache.keys is None or kid not in self.cache.kids:
            raise BearerRejected(f"signing key {kid[:40]!r} unknown to the issuer's JWKS")
        try:
            decoded = jwt.decode(token, self.cache.keys, algorithms=list(p.algorithms))
        except JoseError as exc:
            raise BearerRejected(f"bad signature ({type(exc).__name__})") from None
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            now=int(now),
            leeway=int(p.leeway),
            iss={"essential": True, "value": p.issuer},
            aud={"essential": True, "value": p.audience},
            sub={"essential": True},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            name = type(exc).__name__
            what = "expired" if name == "ExpiredTokenError" else f"claims refused ({name})"
            raise BearerRejected(f"token {what}: {str(exc)[:80]}") from None
        scope = claims.get("scope", "")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        if p.required_scope and p.required_scope not in scopes:
            raise BearerRejected(f"scope {p.required_scope!r} missing", error="insufficient_scope")
        tenant = claims.get("tenant", "default")
        if not isinstance(tenant, str) or not tenant or len(tenant) > 100:
            raise BearerRejected("tenant claim: expected a short string")
        if p.tenants and tenant not in p.tenants:
            raise BearerRejected(f"tenant {tenant!r} not served here")
        sub = claims["sub"]
        if not isinstance(sub, str) or not (0 < len(sub) <= 255):
            raise BearerRejected("sub claim: expected 1..255 characters")
        exp = claims["exp"]
        return BearerClaims(
            subject=sub,
            tenant=tenant,
            scopes=scopes,
            expires_at=float(exp),
            client_id=str(claims.get("client_id", ""))[:200],
            token_id=str(claims.get("jti", ""))[:200],
        )
