"""TokenCore against the real local IdP (benchmarks/oauth_idp.py) driven in-process with an
injected clock and a simulated link: no sleeping, so a 30 s outage costs nothing."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callward.errors import AuthError
from callward.ua.token_refresh import (
    ReauthRequired,
    RefreshDeferred,
    RefreshPolicy,
    TokenCore,
    TokenGrant,
    TokenRefreshed,
    TokenState,
    parse_token_response,
)
from oauth_idp import LocalIdP


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _login(idp: LocalIdP, now: float) -> TokenGrant:
    status, body = idp.handle(
        "POST",
        "/token",
        {"grant_type": "password", "username": "alice", "password": "pw",
         "otp": idp.totp("alice"), "client_id": idp.client_id, "scope": "sip"},
    )  # fmt: skip
    assert status == 200, body
    return parse_token_response(body, now)


def _events(core: TokenCore) -> list[object]:
    out = []
    while (ev := core.next_event()) is not None:
        out.append(ev)
    return out


@pytest.fixture
def idp_clock() -> tuple[LocalIdP, Clock]:
    clock = Clock()
    idp = LocalIdP(access_ttl=60.0, clock=clock)
    idp.port = 1  # never started: the test calls idp.handle(), the link is simulated
    idp.add_user("alice", "pw")
    return idp, clock


def test_refresh_ahead_of_expiry_and_skew(idp_clock: tuple[LocalIdP, Clock]) -> None:
    idp, clock = idp_clock
    core = TokenCore(RefreshPolicy(ahead=0.2, skew=5.0), rand=lambda: 0.0)
    core.load(_login(idp, clock.t))
    t0 = clock.t
    # 60 s lifetime, 20 % ahead, 5 s skew: refresh from t0+43, dead from t0+55
    assert core.get_timer() == pytest.approx(t0 + 43.0)
    assert not core.wants_refresh(t0 + 42.9)
    assert core.wants_refresh(t0 + 43.0)
    assert core.access_token(t0 + 54.9) is not None
    assert core.access_token(t0 + 55.0) is None  # never handed out once dead


def test_single_flight(idp_clock: tuple[LocalIdP, Clock]) -> None:
    idp, clock = idp_clock
    core = TokenCore(rand=lambda: 0.5)
    core.load(_login(idp, clock.t))
    clock.t += 50
    first = core.begin_refresh(clock.t)
    assert first is not None
    assert all(core.begin_refresh(clock.t) is None for _ in range(100))
    assert core.refreshes_started == 1


def test_thirty_second_outage_single_refresh_no_storm(idp_clock: tuple[LocalIdP, Clock]) -> None:
    """The IdP is unreachable from just before the refresh-ahead point for 30 s; the token
    expires in the middle of it. The phone retries with growing, jittered delays, never has a
    dead token to send, and one successful exchange ends it."""
    idp, clock = idp_clock
    core = TokenCore(RefreshPolicy(ahead=0.2, skew=5.0, backoff_base=1.0, backoff_cap=8.0),
                     rand=random.Random(7).random)  # fmt: skip
    core.load(_login(idp, clock.t))
    outage = (clock.t + 40.0, clock.t + 70.0)
    sent_with_dead: list[float] = []
    attempts: list[float] = []
    step = 0.1
    end = clock.t + 120.0
    while clock.t < end:
        clock.t = round(clock.t + step, 6)
        # a caller wanting to REGISTER every 0.1 s: it may send only with a live token
        token = core.access_token(clock.t)
        if token is not None and core.expires_at() is not None:
            assert clock.t < core.expires_at()  # type: ignore[operator]
        elif token is None and core.state is TokenState.VALID:
            sent_with_dead.append(clock.t)
        timer = core.get_timer()
        if timer is None or clock.t < timer:
            continue
        rt = core.begin_refresh(clock.t)
        if rt is None:
            continue
        attempts.append(clock.t)
        if outage[0] <= clock.t < outage[1]:
            core.refresh_failed(clock.t, permanent=False, reason="connect: refused")
            continue
        status, body = idp.handle(
            "POST", "/token",
            {"grant_type": "refresh_token", "refresh_token": rt, "client_id": idp.client_id},
        )  # fmt: skip
        assert status == 200, body
        core.refresh_succeeded(parse_token_response(body, clock.t))
    evs = _events(core)
    deferred = [e for e in evs if isinstance(e, RefreshDeferred)]
    refreshed = [e for e in evs if isinstance(e, TokenRefreshed)]
    assert not sent_with_dead
    # backoff: 1, 2, 4, 8, 8, ... (jittered down to half): at most ~10 tries in 30 s, not 300
    assert 4 <= len(deferred) <= 12
    gaps = [b - a for a, b in itertools.pairwise(attempts[: len(deferred) + 1])]
    assert all(g >= 0.5 for g in gaps)
    assert gaps[3] > gaps[0]
    # the IdP saw exactly one exchange for the outage, then the normal refresh-ahead cycle
    assert idp.stats.reuse_detected == 0
    assert refreshed and idp.stats.refreshes == len(refreshed)
    assert core.state is TokenState.VALID


def test_reuse_detection_revokes_family_then_reauth(idp_clock: tuple[LocalIdP, Clock]) -> None:
    idp, clock = idp_clock
    core = TokenCore(rand=lambda: 0.0)
    core.load(_login(idp, clock.t))
    stolen = core.begin_refresh(clock.t)
    assert stolen is not None
    status, body = idp.handle("POST", "/token", {"grant_type": "refresh_token",
                                                  "refresh_token": stolen,
                                                  "client_id": idp.client_id})  # fmt: skip
    core.refresh_succeeded(parse_token_response(body, clock.t))
    # an attacker replays the rotated-out token: the IdP kills the whole family ...
    status, _ = idp.handle("POST", "/token", {"grant_type": "refresh_token",
                                               "refresh_token": stolen,
                                               "client_id": idp.client_id})  # fmt: skip
    assert status == 400 and idp.stats.reuse_detected == 1
    # ... so the phone's own, newer refresh token is dead too: refresh fails for good
    rt = core.begin_refresh(clock.t)
    assert rt is not None
    status, body = idp.handle("POST", "/token", {"grant_type": "refresh_token",
                                                  "refresh_token": rt,
                                                  "client_id": idp.client_id})  # fmt: skip
    assert status == 400 and body["error"] == "invalid_grant"
    core.refresh_failed(clock.t, permanent=True, reason=body["error"])
    assert core.state is TokenState.REAUTH
    assert core.access_token(clock.t) is None and core.begin_refresh(clock.t) is None
    assert isinstance(_events(core)[-1], ReauthRequired)


def test_invalidate_forces_refresh(idp_clock: tuple[LocalIdP, Clock]) -> None:
    idp, clock = idp_clock
    core = TokenCore(rand=lambda: 0.0)
    core.load(_login(idp, clock.t))
    core.invalidate(clock.t + 1)
    assert core.access_token(clock.t + 1) is None
    assert core.begin_refresh(clock.t + 1) is not None


def test_results_out_of_state_are_errors() -> None:
    core = TokenCore(rand=lambda: 0.0)
    with pytest.raises(AuthError):
        core.refresh_failed(0.0, permanent=False, reason="x")
    assert core.begin_refresh(0.0) is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["token_type", "access_token", "expires_in",
                                        "refresh_token", "scope"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                 st.text(max_size=30))))  # fmt: skip
def test_parse_token_response_hostile(body: dict[str, object]) -> None:
    try:
        grant = parse_token_response(body, 0.0)
    except AuthError:
        return
    assert grant.access_token and grant.expires_in > 0


def test_short_lived_token_is_not_dead_on_arrival() -> None:
    """A 4 s token with the default 5 s skew would be dead on arrival and every refresh would
    trigger the next (a storm); the margin is capped at a quarter of the lifetime."""
    core = TokenCore(RefreshPolicy(skew=5.0, ahead=0.2), rand=lambda: 0.0)
    core.load(TokenGrant("tok", 4.0, 100.0, "rt"))
    assert core.access_token(100.0) == "tok" and core.access_token(102.9) == "tok"
    assert core.access_token(103.0) is None
    assert not core.wants_refresh(100.5) and core.wants_refresh(102.2)
