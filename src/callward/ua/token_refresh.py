"""When the phone refreshes its OAuth 2.0 access token, and what it may send meanwhile. Sans-IO.

The rules (issue 14; RFC 6749 §6, RFC 9700 §4.14, RFC 8898 §3):

* **Refresh ahead of expiry.** A token received with ``expires_in = L`` at local time ``t`` is
  refreshed from ``t + L·(1 - ahead)`` on (``ahead`` defaults to 20 %), long before it dies.
* **Clock skew.** Lifetimes are counted on the phone's own monotonic clock from the moment the
  token arrived, never from the server's ``exp`` (a phone whose wall clock is minutes off would
  otherwise send dead tokens or refresh in a loop), and the token is treated as dead ``skew``
  seconds before ``t + L``: transit time and the verifier's clock may be behind or ahead.
* **Never an expired token.** :meth:`TokenCore.access_token` returns ``None`` once the token is
  dead; the adapter then waits for the refresh instead of sending a request that must fail.
* **Single flight.** :meth:`TokenCore.begin_refresh` hands out the refresh token once; until
  the outcome is reported, further calls return ``None``. Refresh tokens rotate (each one is
  good for one exchange), so two concurrent refreshes would trip the server's reuse detection
  and revoke the whole family.
* **Outages.** A transient failure (no route, timeout, 5xx) schedules the next attempt with
  exponential backoff and full jitter (``base·2^n`` capped at ``cap``, a uniform fraction of it
  drawn from the injected ``rand``): many phones coming back from the same outage do not
  stampede the IdP.
* **For good.** ``invalid_grant`` (revoked, replayed or expired refresh token) is permanent: the
  core moves to :attr:`TokenState.REAUTH` and drops both tokens. What comes next is a full
  re-authentication with a second factor (:mod:`callward.ua.tokens`); the core offers nothing
  weaker.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from callward.errors import AuthError

__all__ = [
    "ReauthRequired",
    "RefreshDeferred",
    "RefreshPolicy",
    "TokenCore",
    "TokenEvent",
    "TokenGrant",
    "TokenRefreshed",
    "TokenState",
    "parse_token_response",
]

MAX_TOKEN_BYTES = 8192  # a JWT access token with a few claims is well under 2 KiB


class TokenState(enum.Enum):
    EMPTY = "empty"  # never logged in
    VALID = "valid"  # a live access token (maybe due for refresh)
    REFRESHING = "refreshing"  # one refresh on the wire
    BACKOFF = "backoff"  # the last refresh failed transiently; retry at a deadline
    REAUTH = "reauth"  # refresh failed for good: log in again (with a second factor)


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """Tokens from one token-endpoint answer. ``received_at`` is on the phone's clock."""

    access_token: str
    expires_in: float
    received_at: float
    refresh_token: str | None = None
    scope: str = ""

    def __post_init__(self) -> None:
        if not self.access_token or len(self.access_token) > MAX_TOKEN_BYTES:
            raise AuthError("access_token: expected 1..8192 characters")
        if not (0 < self.expires_in <= 366 * 86400):
            raise AuthError(f"expires_in {self.expires_in!r}: expected 1 s .. 1 year")


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    ahead: float = 0.2  # refresh when this share of the lifetime is left
    skew: float = 5.0  # a token is dead this many seconds before its nominal end
    backoff_base: float = 1.0
    backoff_cap: float = 30.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.ahead < 1.0):
            raise AuthError(f"ahead {self.ahead!r}: expected 0 <= ahead < 1")
        if self.skew < 0 or self.backoff_base <= 0 or self.backoff_cap < self.backoff_base:
            raise AuthError("skew >= 0 and 0 < backoff_base <= backoff_cap expected")


@dataclass(frozen=True, slots=True)
class TokenRefreshed:
    grant: TokenGrant


@dataclass(frozen=True, slots=True)
class RefreshDeferred:
    attempt: int
    retry_at: float
    reason: str


@dataclass(frozen=True, slots=True)
class ReauthRequired:
    reason: str


TokenEvent = TokenRefreshed | RefreshDeferred | ReauthRequired


def parse_token_response(body: Mapping[str, Any], now: float) -> TokenGrant:
    """A successful token-endpoint answer (RFC 6749 §5.1) as a :class:`TokenGrant`."""
    if str(body.get("token_type", "")).lower() != "bearer":
        raise AuthError(f"token_type {str(body.get('token_type'))[:20]!r}: expected Bearer")
    access = body.get("access_token")
    expires = body.get("expires_in")
    refresh = body.get("refresh_token")
    if not isinstance(access, str):
        raise AuthError("access_token: missing")
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        raise AuthError("expires_in: expected a number of seconds")
    if refresh is not None and (not isinstance(refresh, str) or len(refresh) > MAX_TOKEN_BYTES):
        raise AuthError("refresh_token: expected a string of at most 8192 characters")
    return TokenGrant(access, float(expires), now, refresh, str(body.get("scope", ""))[:1000])


class TokenCore:
    """See the module docstring. ``rand`` returns a float in [0, 1) (jitter)."""

    def __init__(self, policy: RefreshPolicy | None = None, *, rand: Callable[[], float]) -> None:
        self.policy = policy or RefreshPolicy()
        self._rand = rand
        self.state = TokenState.EMPTY
        self.grant: TokenGrant | None = None
        self._refresh_token: str | None = None
        self._attempt = 0
        self._retry_at: float | None = None
        self._events: deque[TokenEvent] = deque()
        self.refreshes_started = 0
        self._refused = False

    # ---- what the phone may use

    def _margin(self, g: TokenGrant) -> float:
        # A short-lived token (lifetime <= skew) must not be dead on arrival: that would make
        # every refresh trigger the next one (a storm). The margin is at most a quarter of it.
        return min(self.policy.skew, g.expires_in / 4.0)

    def expires_at(self) -> float | None:
        g = self.grant
        return None if g is None else g.received_at + g.expires_in - self._margin(g)

    def refresh_at(self) -> float | None:
        g = self.grant
        if g is None:
            return None
        return g.received_at + g.expires_in * (1.0 - self.policy.ahead) - self._margin(g)

    def access_token(self, now: float) -> str | None:
        """The access token if it is still alive at ``now`` (skew included), else None."""
        end = self.expires_at()
        if self.grant is None or end is None or now >= end or self._refused:
            return None
        return self.grant.access_token

    @property
    def refresh_token(self) -> str | None:
        """The refresh token held now (to revoke it at a new login, RFC 7009)."""
        return self._refresh_token

    def wants_refresh(self, now: float) -> bool:
        if self.state is TokenState.VALID:
            at = self.refresh_at()
            return at is not None and now >= at
        if self.state is TokenState.BACKOFF:
            return self._retry_at is not None and now >= self._retry_at
        return False

    # ---- driving it

    def load(self, grant: TokenGrant) -> None:
        """Tokens from a login (or from the keystore at start-up)."""
        self.grant = grant
        self._refresh_token = grant.refresh_token
        self._refused = False
        self.state = TokenState.VALID
        self._attempt = 0
        self._retry_at = None

    def invalidate(self, now: float) -> None:
        """The server refused the access token (RFC 6750 ``invalid_token``): it is dead now,
        whatever its lifetime said; the next :meth:`wants_refresh` is True."""
        self._refused = True  # dead from now on, whatever its lifetime said
        if self.state is TokenState.VALID:
            if self._refresh_token is None:
                self._give_up("access token refused and no refresh token")
            else:
                self.state, self._retry_at = TokenState.BACKOFF, now

    def begin_refresh(self, now: float) -> str | None:
        """The refresh token to send now, or None: one already in flight, a backoff deadline
        not reached, or nothing to refresh with (then the state is REAUTH)."""
        if self.state is TokenState.REFRESHING:
            return None
        if self.state is TokenState.BACKOFF and self._retry_at is not None and now < self._retry_at:
            return None
        if self.state not in (TokenState.VALID, TokenState.BACKOFF):
            return None
        if self._refresh_token is None:
            self._give_up("no refresh token")
            return None
        self.state = TokenState.REFRESHING
        self.refreshes_started += 1
        return self._refresh_token

    def refresh_succeeded(self, grant: TokenGrant) -> None:
        if self.state is not TokenState.REFRESHING:
            raise AuthError(f"refresh result in state {self.state.value}")
        # RFC 6749 §6: the server MAY keep the refresh token; with rotation it sends a new one.
        if grant.refresh_token is None:
            grant = TokenGrant(
                grant.access_token, grant.expires_in, grant.received_at, self._refresh_token,
                grant.scope,
            )  # fmt: skip
        self.load(grant)
        self._events.append(TokenRefreshed(grant))

    def refresh_failed(self, now: float, *, permanent: bool, reason: str) -> None:
        if self.state is not TokenState.REFRESHING:
            raise AuthError(f"refresh result in state {self.state.value}")
        if permanent:
            self._give_up(reason)
            return
        p = self.policy
        ceiling = min(p.backoff_cap, p.backoff_base * 2.0**self._attempt)
        self._attempt += 1
        # "Full jitter": uniform in [ceiling/2, ceiling) keeps a floor so a phone never spins.
        self._retry_at = now + ceiling * (0.5 + 0.5 * self._rand())
        self.state = TokenState.BACKOFF
        self._events.append(RefreshDeferred(self._attempt, self._retry_at, reason[:200]))

    def _give_up(self, reason: str) -> None:
        self.state = TokenState.REAUTH
        self.grant = None
        self._refresh_token = None
        self._retry_at = None
        self._events.append(ReauthRequired(reason[:200]))

    def get_timer(self) -> float | None:
        """When the adapter should call :meth:`begin_refresh` next (None: nothing scheduled)."""
        if self.state is TokenState.VALID:
            return self.refresh_at()
        if self.state is TokenState.BACKOFF:
            return self._retry_at
        return None

    def next_event(self) -> TokenEvent | None:
        return self._events.popleft() if self._events else None
