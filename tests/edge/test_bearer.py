"""BearerVerifier against tokens and JWKS of the real local IdP (benchmarks/oauth_idp.py)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey

from callward.edge.bearer import (
    BearerPolicy,
    BearerRejected,
    BearerVerifier,
    KeysNeeded,
    bearer_challenge,
    bearer_token,
)
from callward.errors import AuthError
from oauth_idp import LocalIdP

NOW = 1_800_000_000.0
_RANDOM_JWKS = {
    "keys": [ECKey.generate_key("P-256", parameters={"kid": "k"}).as_dict(private=False)]
}


class Clock:
    t = NOW

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def idp() -> LocalIdP:
    clock = Clock()
    server = LocalIdP(access_ttl=300.0, clock=clock)
    server.port = 8443  # not started: tokens come from handle(), the issuer URL is fixed
    server.add_user("alice", "pw", tenant="acme")
    return server


def _token(idp: LocalIdP, scope: str = "sip") -> str:
    status, body = idp.handle("POST", "/token", {
        "grant_type": "password", "username": "alice", "password": "pw",
        "otp": idp.totp("alice"), "client_id": idp.client_id, "scope": scope,
    })  # fmt: skip
    assert status == 200, body
    return str(body["access_token"])


def _verifier(idp: LocalIdP, **kw: object) -> BearerVerifier:
    policy = BearerPolicy(issuer=idp.issuer, audience=idp.audience,
                          jwks_uri=f"{idp.issuer}/jwks", **kw)  # type: ignore[arg-type]  # fmt: skip
    v = BearerVerifier(policy)
    v.cache.install(json.dumps(idp.jwks()), NOW)
    return v


def test_valid_token(idp: LocalIdP) -> None:
    claims = _verifier(idp).verify(_token(idp), NOW + 1)
    assert claims.subject == idp.users["alice"].subject
    assert claims.tenant == "acme" and "sip" in claims.scopes


def test_expiry_with_leeway(idp: LocalIdP) -> None:
    v = _verifier(idp, leeway=30.0)
    token = _token(idp)
    v.verify(token, NOW + 300 + 29)  # a verifier clock 29 s ahead still accepts
    with pytest.raises(BearerRejected, match="expired"):
        v.verify(token, NOW + 300 + 31)


def test_audience_issuer_scope_tenant(idp: LocalIdP) -> None:
    token = _token(idp)
    with pytest.raises(BearerRejected):
        BearerVerifier_with(idp, audience="sip:other.example").verify(token, NOW)
    with pytest.raises(BearerRejected):
        BearerVerifier_with(idp, issuer="https://evil.example").verify(token, NOW)
    with pytest.raises(BearerRejected) as info:
        _verifier(idp).verify(_token(idp, scope="sync"), NOW)
    assert info.value.error == "insufficient_scope"
    with pytest.raises(BearerRejected, match="tenant"):
        _verifier(idp, tenants=frozenset({"other"})).verify(token, NOW)


def BearerVerifier_with(idp: LocalIdP, **kw: str) -> BearerVerifier:
    fields = {"issuer": idp.issuer, "audience": idp.audience, "jwks_uri": "http://x/jwks", **kw}
    v = BearerVerifier(BearerPolicy(**fields))  # type: ignore[arg-type]
    v.cache.install(idp.jwks(), NOW)
    return v


def test_key_rotation_refetch_rate_limited(idp: LocalIdP) -> None:
    v = _verifier(idp)
    old = _token(idp)
    idp.rotate_keys(keep_old=False)
    new = _token(idp)
    with pytest.raises(KeysNeeded):  # unknown kid, cache fetched 31 s ago: fetch allowed
        v.verify(new, NOW + 31)
    v.cache.install(idp.jwks(), NOW + 31)
    assert v.verify(new, NOW + 31).subject
    with pytest.raises(BearerRejected, match="unknown"):  # old key gone from the JWKS
        v.verify(old, NOW + 31)
    # a made-up kid right after a fetch does not trigger another one
    forged = ECKey.generate_key("P-256", parameters={"kid": "made-up"})
    fake = jwt.encode({"alg": "ES256", "kid": "made-up"}, {"sub": "x"}, forged)
    with pytest.raises(BearerRejected):
        v.verify(fake, NOW + 32)


def test_forged_signature_and_alg_none(idp: LocalIdP) -> None:
    v = _verifier(idp)
    good = _token(idp)
    kid = json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))["kid"]
    forged = ECKey.generate_key("P-256", parameters={"kid": kid})
    claims = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))
    with pytest.raises(BearerRejected, match="signature"):
        v.verify(jwt.encode({"alg": "ES256", "kid": kid}, claims, forged), NOW)
    head = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": kid}).encode()).decode()
    with pytest.raises(BearerRejected, match="alg"):
        v.verify(f"{head.rstrip('=')}.{good.split('.')[1]}.", NOW)
    with pytest.raises(AuthError):
        BearerPolicy(issuer="a", audience="b", jwks_uri="c", algorithms=("HS256",))


def test_header_grammar() -> None:
    assert bearer_token("Bearer abc.def-_~+/=") == "abc.def-_~+/="
    assert bearer_token("bearer   xyz ") == "xyz"
    for bad in (None, "Digest x", "Bearer", "Bearer a b", "Bearer a,b", "Bearer é"):
        assert bearer_token(bad) is None
    p = BearerPolicy(issuer="https://idp", audience="sip:x", jwks_uri="https://idp/jwks")
    assert bearer_challenge("x", p, "invalid_token") == (
        'Bearer realm="x", scope="sip", authz_server="https://idp", error="invalid_token"'
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,40}"))  # fmt: skip
def test_hostile_tokens_only_auth_errors(token: str) -> None:
    p = BearerPolicy(issuer="https://idp", audience="sip:x", jwks_uri="https://idp/jwks")
    v = BearerVerifier(p)
    v.cache.install(_RANDOM_JWKS, NOW)
    with pytest.raises(AuthError):
        v.verify(token, NOW)


def test_jwks_garbage_refused() -> None:
    p = BearerPolicy(issuer="https://idp", audience="sip:x", jwks_uri="https://idp/jwks")
    v = BearerVerifier(p)
    for bad in (b"[]", b'{"keys": []}', b"{", b'{"keys": 3}', b"x" * 70000,
                b'{"keys": [{"kid": "a", "kty": "EC", "crv": "P-256", "x": "!", "y": "!"}]}'):  # fmt: skip
        with pytest.raises(AuthError):
            v.cache.install(bad, NOW)
