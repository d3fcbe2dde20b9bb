"""The phone's token source: asyncio adapter of :class:`~callward.ua.token_refresh.TokenCore`.

Whoever sends a request that needs a token (REGISTER, INVITE, the sync and telemetry uploads)
awaits :meth:`TokenSource.authorization`, which returns an ``Authorization`` header value
(RFC 6750 §2.1 / RFC 8898 §3) for a token alive *now*::

    source = TokenSource(OAuthClient(token_endpoint, "callward-phone", "sip"), login=login)
    await source.login()                       # password + TOTP (a second factor, always)
    value = await source.authorization("REGISTER")   # "Bearer eyJ..."

* Refreshes run one at a time (one task, every waiter awaits it) and ahead of expiry (a
  background task sleeps until the core's deadline).
* While the IdP is unreachable the task retries with the core's backoff and jitter; callers
  whose token is still alive keep using it, callers whose token is dead wait: no request ever
  leaves with an expired token.
* When refresh fails for good the source re-authenticates through :class:`Login`, which needs a
  password *and* a TOTP code (RFC 6238). Without a second factor it raises
  :class:`~callward.errors.AuthError`; it never falls back to a password alone or to digest.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from callward.errors import AuthError
from callward.ua.keystore import Keystore
from callward.ua.token_refresh import (
    ReauthRequired,
    RefreshPolicy,
    TokenCore,
    TokenEvent,
    TokenGrant,
    TokenState,
    parse_token_response,
)

__all__ = [
    "Login",
    "OAuthClient",
    "Reauthenticator",
    "TokenSource",
    "TransientAuthError",
    "grant_from_record",
    "grant_record",
]

MAX_RESPONSE_BYTES = 64 * 1024
KEYSTORE_RECORD = "oauth-tokens"


class TransientAuthError(AuthError):
    """The IdP could not be reached or answered 5xx: try again later."""


class Reauthenticator(Protocol):
    """A full authentication at the IdP, always with a second factor: :class:`Login`
    (password + TOTP at the token endpoint, headless) or
    :class:`~callward.ua.oauth_login.AuthCodeLogin` (authorization code + PKCE through a
    browser, where the IdP asks for the TOTP code). Returns the token-endpoint answer."""

    async def authenticate(self, client: OAuthClient) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Login:
    """What a headless re-authentication needs. ``second_factor`` returns the current TOTP
    code (in an app: asks the user; in tests: ``pyotp.TOTP(secret).now``); None means "no code
    available", and then the login fails rather than trying anything weaker."""

    username: str
    password: str
    second_factor: Callable[[], Awaitable[str | None]]

    def __repr__(self) -> str:  # never print the password
        return f"Login(username={self.username!r})"

    async def authenticate(self, client: OAuthClient) -> dict[str, Any]:
        otp = await self.second_factor()
        if not otp:
            raise AuthError("re-authentication needs a second factor (TOTP); none available")
        return await client.password_with_otp(self.username, self.password, otp)


class OAuthClient:
    """The token endpoint over HTTP (httpx). Errors: :class:`TransientAuthError` for network
    failures and 5xx, :class:`AuthError` (permanent) for an RFC 6749 §5.2 error answer."""

    def __init__(
        self,
        token_endpoint: str,
        client_id: str,
        scope: str = "sip",
        *,
        timeout: float = 5.0,
        http: httpx.AsyncClient | None = None,
        revocation_endpoint: str | None = None,
    ) -> None:
        self.token_endpoint = token_endpoint
        self.revocation_endpoint = revocation_endpoint
        self.client_id = client_id
        self.scope = scope
        self._http = http or httpx.AsyncClient(timeout=timeout, trust_env=False)
        self.requests = 0

    async def _post(self, form: dict[str, str]) -> dict[str, Any]:
        self.requests += 1
        try:
            resp = await self._http.post(self.token_endpoint, data=form)
        except httpx.HTTPError as exc:
            raise TransientAuthError(f"token endpoint unreachable: {type(exc).__name__}") from None
        if len(resp.content) > MAX_RESPONSE_BYTES:
            raise TransientAuthError("token endpoint answer larger than 64 KiB")
        if resp.status_code >= 500:
            raise TransientAuthError(f"token endpoint answered {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            raise TransientAuthError("token endpoint answer is not JSON") from None
        if not isinstance(body, dict):
            raise TransientAuthError("token endpoint answer is not a JSON object")
        if resp.status_code != 200:
            error = str(body.get("error", resp.status_code))[:60]
            raise AuthError(f"token endpoint refused: {error}")
        return body

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        return await self._post(
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": self.client_id,
            }
        )

    async def password_with_otp(self, username: str, password: str, otp: str) -> dict[str, Any]:
        return await self._post(
            {
                "grant_type": "password",
                "username": username,
                "password": password,
                "otp": otp,
                "client_id": self.client_id,
                "scope": self.scope,
            }
        )

    async def exchange_code(self, code: str, verifier: str, redirect_uri: str) -> dict[str, Any]:
        """RFC 6749 §4.1.3 with the PKCE verifier (RFC 7636 §4.5)."""
        return await self._post(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "client_id": self.client_id,
            }
        )

    async def revoke(self, refresh_token: str) -> bool:
        """RFC 7009 revocation of a refresh token (and, at the IdP, its family); best effort:
        False when there is no endpoint or it cannot be reached."""
        if self.revocation_endpoint is None:
            return False
        try:
            resp = await self._http.post(self.revocation_endpoint, data={
                "token": refresh_token, "token_type_hint": "refresh_token",
                "client_id": self.client_id,
            })  # fmt: skip
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def aclose(self) -> None:
        await self._http.aclose()


def grant_record(grant: TokenGrant, mono_now: float, wall_now: float) -> dict[str, Any]:
    """A grant as a keystore record: its end moved from the monotonic to the wall clock."""
    return {
        "access_token": grant.access_token,
        "refresh_token": grant.refresh_token,
        "expires_at": wall_now + (grant.received_at + grant.expires_in - mono_now),
        "scope": grant.scope,
    }


def grant_from_record(record: dict[str, Any], mono_now: float, wall_now: float) -> TokenGrant:
    """The grant kept by :func:`grant_record`; an expired access token keeps a token that the
    core sees as dead (lifetime 1 ms), so the refresh token is used before anything else."""
    left = float(record["expires_at"]) - wall_now
    return TokenGrant(
        str(record["access_token"]), max(1e-3, left), mono_now if left > 0 else mono_now - 1.0,
        record.get("refresh_token"), str(record.get("scope", "")),
    )  # fmt: skip


class TokenSource:
    """See the module docstring. ``on_grant`` sees every new grant (to persist it in the
    keystore); ``on_event`` every core event (tests, metrics)."""

    def __init__(
        self,
        client: OAuthClient,
        *,
        login: Reauthenticator | None = None,
        policy: RefreshPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        on_grant: Callable[[TokenGrant], None] | None = None,
        on_event: Callable[[TokenEvent], None] | None = None,
        keystore: Keystore | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self._keystore = keystore
        self._wall = wall_clock
        self.core = TokenCore(policy, rand=rand)
        self._login = login
        self._clock = clock
        self._on_grant = on_grant
        self._on_event = on_event
        self._inflight: asyncio.Task[None] | None = None
        self._ahead: asyncio.Task[None] | None = None
        self.logins = 0
        self.revoked_previous = 0
        kept = keystore.get_json(KEYSTORE_RECORD) if keystore is not None else None
        if isinstance(kept, dict):
            self.core.load(grant_from_record(kept, clock(), wall_clock()))

    @property
    def state(self) -> TokenState:
        return self.core.state

    def load(self, grant: TokenGrant) -> None:
        """Tokens kept from an earlier run (the keystore)."""
        self.core.load(grant)
        self._arm()

    async def login(self) -> None:
        """Full authentication with a second factor (:class:`Reauthenticator`). AuthError when
        none is configured, no code is available or the IdP refuses (a wrong code is not
        retried here: the user types it again)."""
        if self._login is None:
            raise AuthError("re-authentication needed (refresh failed for good) and no login "
                            "with a second factor configured")  # fmt: skip
        previous = self.core.refresh_token
        body = await self._login.authenticate(self.client)
        grant = parse_token_response(body, self._clock())
        self.logins += 1
        self.core.load(grant)
        self._publish(grant)
        self._arm()
        if previous is not None and previous != grant.refresh_token:
            # a new login is a new session: the old one is revoked server-side (RFC 7009),
            # so a copy of the old refresh token (a lost backup, a thief) is dead too
            self.revoked_previous += await self.client.revoke(previous)

    async def access_token(self, *, timeout: float | None = None) -> str:
        """An access token alive now; waits for the refresh (or re-login) when it is not."""
        async with asyncio.timeout(timeout):
            while True:
                now = self._clock()
                token = self.core.access_token(now)
                if token is not None:
                    if self.core.wants_refresh(now):
                        self._refresh_in_background()
                    return token
                if self.core.state in (TokenState.EMPTY, TokenState.REAUTH):
                    await self._single(self.login)
                    continue
                await self._single(self._refresh_until_done)

    async def authorization(self, method: str = "REGISTER", *, timeout: float | None = None) -> str:
        """The ``Authorization``/``Proxy-Authorization`` value for a request: ``Bearer <t>``."""
        return f"Bearer {await self.access_token(timeout=timeout)}"

    def token_refused(self) -> None:
        """The server said ``invalid_token`` (401 with a Bearer challenge): refresh first."""
        self.core.invalidate(self._clock())

    # ---- internals

    async def _single(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.get_running_loop().create_task(fn())
        task = self._inflight
        await asyncio.shield(task)

    def _refresh_in_background(self) -> None:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.get_running_loop().create_task(self._refresh_until_done())
            self._inflight.add_done_callback(_swallow)

    async def _refresh_until_done(self) -> None:
        core = self.core
        while True:
            now = self._clock()
            token = core.begin_refresh(now)
            if token is None:
                if core.state is TokenState.BACKOFF:
                    deadline = core.get_timer()
                    await asyncio.sleep(max(0.0, (deadline or now) - now))
                    continue
                self._drain()
                return  # VALID (someone else refreshed) or REAUTH
            try:
                body = await self.client.refresh(token)
                grant = parse_token_response(body, self._clock())
            except TransientAuthError as exc:
                core.refresh_failed(self._clock(), permanent=False, reason=str(exc))
                self._drain()
                continue
            except AuthError as exc:
                core.refresh_failed(self._clock(), permanent=True, reason=str(exc))
                self._drain()
                return
            core.refresh_succeeded(grant)
            self._publish(grant)
            self._drain()
            self._arm()
            return

    def _publish(self, grant: TokenGrant) -> None:
        if self._keystore is not None:  # sealed at rest (AES-GCM), never in the clear
            self._keystore.put_json(
                KEYSTORE_RECORD, grant_record(grant, self._clock(), self._wall())
            )
        if self._on_grant is not None:
            self._on_grant(grant)

    def _drain(self) -> None:
        while (ev := self.core.next_event()) is not None:
            if self._on_event is not None:
                self._on_event(ev)
            if isinstance(ev, ReauthRequired) and self._keystore is not None:
                self._keystore.delete(KEYSTORE_RECORD)  # access_token() logs in again

    def _arm(self) -> None:
        """Sleep until the refresh-ahead deadline, then refresh (in the single flight)."""
        if self._ahead is not None:
            self._ahead.cancel()
        deadline = self.core.get_timer()
        if deadline is None:
            return

        async def ahead() -> None:
            await asyncio.sleep(max(0.0, deadline - self._clock()))
            if self.core.wants_refresh(self._clock()):
                self._refresh_in_background()

        try:
            self._ahead = asyncio.get_running_loop().create_task(ahead())
        except RuntimeError:  # loaded outside a loop: the first access_token() refreshes
            self._ahead = None

    async def aclose(self) -> None:
        for task in (self._ahead, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, AuthError):
                    pass
        await self.client.aclose()


def _swallow(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # a background failure shows up on the next access_token()
