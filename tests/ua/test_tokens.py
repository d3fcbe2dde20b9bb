"""TokenSource over real HTTP against the local IdP (benchmarks/oauth_idp.py) on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pyotp
import pytest

from callward.errors import AuthError
from callward.ua.token_refresh import RefreshPolicy, TokenState
from callward.ua.tokens import Login, OAuthClient, TokenSource
from oauth_idp import LocalIdP


@pytest.fixture
def idp() -> AsyncIterator[LocalIdP]:
    server = LocalIdP(access_ttl=3.0).start()
    server.add_user("alice", "pw")
    yield server
    server.stop()


def _source(idp: LocalIdP, *, otp: bool = True, **kw: object) -> TokenSource:
    secret = idp.users["alice"].totp_secret

    async def code() -> str | None:
        return pyotp.TOTP(secret).now() if otp else None

    return TokenSource(
        OAuthClient(f"{idp.issuer}/token", idp.client_id, "sip"),
        login=Login("alice", "pw", code),
        policy=RefreshPolicy(ahead=0.3, skew=0.5, backoff_base=0.2, backoff_cap=0.8),
        **kw,  # type: ignore[arg-type]
    )


async def test_login_then_bearer_header(idp: LocalIdP) -> None:
    source = _source(idp)
    value = await source.authorization("REGISTER", timeout=5)
    assert value.startswith("Bearer ey") and source.logins == 1
    assert idp.stats.logins == 1
    await source.aclose()


async def test_single_flight_many_callers_one_refresh(idp: LocalIdP) -> None:
    source = _source(idp)
    await source.access_token(timeout=5)
    source.token_refused()  # the edge said invalid_token: every caller now needs a new one
    tokens = await asyncio.gather(*(source.access_token(timeout=5) for _ in range(50)))
    assert len(set(tokens)) == 1
    assert idp.stats.refreshes == 1 and idp.stats.reuse_detected == 0
    await source.aclose()


async def test_refresh_ahead_keeps_token_alive(idp: LocalIdP) -> None:
    source = _source(idp)
    first = await source.access_token(timeout=5)
    await asyncio.sleep(2.4)  # 3 s lifetime, refresh from ~1.6 s on
    assert idp.stats.refreshes >= 1
    assert await source.access_token(timeout=0.05) != first  # no wait: already refreshed
    await source.aclose()


async def test_outage_waits_then_one_refresh(idp: LocalIdP) -> None:
    source = _source(idp)
    await source.access_token(timeout=5)
    idp.stop()  # the IdP is gone for ~3.5 s, longer than the token lives
    await asyncio.sleep(3.5)
    waiting = asyncio.gather(*(source.access_token(timeout=10) for _ in range(20)))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # nobody got the dead token
    idp.start()
    tokens = await waiting
    assert len(set(tokens)) == 1
    assert idp.stats.refreshes == 1 and idp.stats.reuse_detected == 0
    await source.aclose()


async def test_revoked_family_falls_back_to_totp_login(idp: LocalIdP) -> None:
    source = _source(idp)
    await source.access_token(timeout=5)
    idp.revoke_family(next(iter(idp.refresh_tokens.values())).family)
    source.token_refused()
    await source.access_token(timeout=5)
    assert source.logins == 2 and idp.stats.logins == 2
    await source.aclose()


async def test_no_second_factor_no_weaker_login(idp: LocalIdP) -> None:
    source = _source(idp, otp=False)
    with pytest.raises(AuthError, match="second factor"):
        await source.access_token(timeout=5)
    assert idp.stats.token_requests == 0  # no password-only attempt went out
    assert source.state is TokenState.EMPTY
    await source.aclose()


async def test_revoked_subject_refused(idp: LocalIdP) -> None:
    source = _source(idp)
    await source.access_token(timeout=5)
    idp.revoke_subject(idp.users["alice"].subject)
    source.token_refused()
    with pytest.raises(AuthError, match="refused"):
        await source.access_token(timeout=5)
    await source.aclose()


async def test_new_login_revokes_the_previous_session(idp: LocalIdP) -> None:
    """A second login (re-authentication, privilege change) is a new session: the previous
    refresh token is revoked at the IdP (RFC 7009), so a copy of it is worthless."""
    secret = idp.users["alice"].totp_secret

    async def code() -> str:
        return pyotp.TOTP(secret).now()

    client = OAuthClient(f"{idp.issuer}/token", idp.client_id, "sip",
                         revocation_endpoint=f"{idp.issuer}/revoke")  # fmt: skip
    source = TokenSource(client, login=Login("alice", "pw", code))
    try:
        await source.login()
        old = source.core.refresh_token
        assert old is not None
        await source.login()
        assert source.revoked_previous == 1 and source.core.refresh_token != old
        with pytest.raises(AuthError, match="invalid_grant"):
            await client.refresh(old)  # the old session is dead server-side
        assert await source.access_token(timeout=10)  # the new one lives
        source.token_refused()
        assert await source.access_token(timeout=10)  # and refreshes
    finally:
        await source.aclose()
