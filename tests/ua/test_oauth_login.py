"""Browser sign-in of the phone (authorization code + PKCE, loopback redirect: RFC 8252,
RFC 7636) against the real local IdP (benchmarks/oauth_idp.py, authlib) on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from hypothesis import given
from hypothesis import strategies as st

from callward.errors import AuthError, ConfigError
from callward.ua.oauth_login import (
    AuthCodeLogin,
    callback_code,
    discover,
    pkce_pair,
    s256_challenge,
)
from callward.ua.tokens import OAuthClient, TokenSource
from oauth_idp import LocalIdP
from oauth_idp_authcode import browser_sign_in


@pytest.fixture
def idp() -> Iterator[LocalIdP]:
    server = LocalIdP(access_ttl=60.0).start()
    server.add_user("alice", "alice-pw")
    yield server
    server.stop()


def test_s256_matches_authlib() -> None:
    # authlib's RFC 7636 §4.2 implementation is the independent reference.
    assert s256_challenge("a" * 43) == create_s256_code_challenge("a" * 43)
    for _ in range(20):
        v, c = pkce_pair()
        assert len(v) == 43 and c == create_s256_code_challenge(v)
    assert len({pkce_pair()[0] for _ in range(50)}) == 50


def test_callback_code_checks_state() -> None:
    assert callback_code("/callback?code=abc&state=s1", "s1") == "abc"
    assert callback_code("/favicon.ico", "s1") is None
    with pytest.raises(AuthError, match="wrong state"):
        callback_code("/callback?code=abc&state=evil", "s1")
    with pytest.raises(AuthError, match="access_denied"):
        callback_code("/callback?error=access_denied&state=s1", "s1")
    with pytest.raises(AuthError, match="without a code"):
        callback_code("/callback?state=s1", "s1")


async def test_discover(idp: LocalIdP) -> None:
    meta = await discover(idp.issuer + "/")
    assert meta.token_endpoint == f"{idp.issuer}/token"
    assert meta.authorization_endpoint == f"{idp.issuer}/authorize"
    # The same server under another name: its metadata names another issuer (RFC 8414 §3.3).
    with pytest.raises(ConfigError, match="another issuer"):
        await discover(f"http://localhost:{idp.port}")
    with pytest.raises(ConfigError, match="loopback only"):
        await discover("http://idp.example.com")


def _login(idp: LocalIdP, otp: str | None = None, seen: list[str] | None = None) -> AuthCodeLogin:
    async def show(url: str) -> None:
        if seen is not None:
            seen.append(url)
        code = otp or idp.totp("alice")
        asyncio.get_running_loop().run_in_executor(
            None, browser_sign_in, url, "alice", "alice-pw", code
        )

    return AuthCodeLogin(f"{idp.issuer}/authorize", show, "sip", timeout=15)


def _source(idp: LocalIdP, login: Any) -> TokenSource:
    return TokenSource(OAuthClient(f"{idp.issuer}/token", idp.client_id, "sip"), login=login)


async def test_browser_sign_in_with_pkce_and_totp(idp: LocalIdP) -> None:
    seen: list[str] = []
    source = _source(idp, _login(idp, seen=seen))
    try:
        value = await source.authorization("REGISTER", timeout=20)
        assert value.startswith("Bearer ey")
        assert idp.stats.code_exchanges == 1 and idp.stats.logins == 1
        assert "code_challenge_method=S256" in seen[0]
        assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in seen[0]
        # the grant from the code refreshes like any other (rotation on)
        source.token_refused()
        assert await source.access_token(timeout=10) != value[7:]
        assert idp.stats.refreshes == 1
    finally:
        await source.aclose()


async def test_wrong_totp_is_refused(idp: LocalIdP) -> None:
    source = _source(idp, _login(idp, otp="000000"))
    try:
        with pytest.raises(AuthError, match="access_denied"):
            await source.login()
        assert source.core.grant is None and idp.stats.code_exchanges == 0
    finally:
        await source.aclose()


def _code(idp: LocalIdP, challenge: str | None, redirect: str) -> httpx.Response:
    params = {"response_type": "code", "client_id": idp.client_id, "redirect_uri": redirect,
              "scope": "sip", "state": "st"}  # fmt: skip
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    form = {**params, "username": "alice", "password": "alice-pw", "otp": idp.totp("alice")}
    return httpx.post(f"{idp.issuer}/authorize", data=form, trust_env=False)


def test_idp_requires_pkce_and_loopback_redirect(idp: LocalIdP) -> None:
    loopback = "http://127.0.0.1:45678/callback"
    assert _code(idp, None, loopback).status_code == 400  # no code without a PKCE challenge
    assert _code(idp, s256_challenge("x" * 43), "https://evil.example/callback").status_code == 400
    assert idp.stats.code_exchanges == 0


async def test_code_replay_and_wrong_verifier(idp: LocalIdP) -> None:
    redirect = "http://127.0.0.1:45679/callback"
    verifier, challenge = pkce_pair()
    location = httpx.URL(_code(idp, challenge, redirect).headers["Location"])
    code = location.params["code"]
    client = OAuthClient(f"{idp.issuer}/token", idp.client_id, "sip")
    try:
        with pytest.raises(AuthError, match="invalid_grant"):  # an attacker without the verifier
            await client.exchange_code(code, pkce_pair()[0], redirect)
        first = await client.exchange_code(code, verifier, redirect)
        with pytest.raises(AuthError, match="invalid_grant"):  # the code is good once
            await client.exchange_code(code, verifier, redirect)
        assert idp.stats.code_replays == 1
        # RFC 6749 §4.1.2: what the first exchange produced is revoked
        with pytest.raises(AuthError, match="invalid_grant"):
            await client.refresh(first["refresh_token"])
    finally:
        await client.aclose()


@given(st.text(max_size=300))
def test_callback_code_fuzz(target: str) -> None:
    # hostile request targets: a code, None, or AuthError; nothing else escapes
    try:
        code = callback_code(target, "s1")
    except AuthError:
        return
    assert code is None or 0 < len(code) <= 1024


async def test_redirect_listener_survives_garbage(idp: LocalIdP) -> None:
    seen: list[str] = []

    async def show(url: str) -> None:
        seen.append(url)
        port = int(url.split("redirect_uri=http%3A%2F%2F127.0.0.1%3A", 1)[1].split("%2F")[0])
        for junk in (b"\x00\xff garbage\r\n\r\n", b"POST /callback HTTP/1.1\r\n\r\n",
                     b"GET /callback?code=x&state=wrong HTTP/1.1\r\n\r\n"):  # fmt: skip
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(junk)
            await writer.drain()
            assert (await reader.read(100)).startswith(b"HTTP/1.1 4")
            writer.close()

    source = _source(idp, AuthCodeLogin(f"{idp.issuer}/authorize", show, "sip", timeout=5))
    try:  # the wrong state ends the attempt with AuthError: no code from someone else is used
        with pytest.raises(AuthError, match="wrong state"):
            await source.login()
    finally:
        await source.aclose()
