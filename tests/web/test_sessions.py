"""Server-side dashboard sessions: new id at sign-in / re-auth / privilege change, old one
revoked server-side, sign-out revokes, idle and absolute timeouts."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from tests.web.conftest import TOKENS

from callward.config import CallwardConfig
from callward.records.service import open_records
from callward.web import create_app
from callward.web.sessions import SessionStore
from callward.web.settings import Principal, Role, WebSettings


class Clock:
    t = 2_000_000_000.0

    def __call__(self) -> float:
        return self.t


def _client(tmp_path: Path, clock: Clock) -> TestClient:
    records = open_records(tmp_path / "var")
    app = create_app(CallwardConfig(), records, WebSettings(tokens=TOKENS), clock=clock)
    return TestClient(app)


def _sign_in(c: TestClient, token: str) -> str:
    r = c.post("/api/v1/session", json={"token": token})
    assert r.status_code == 204
    return str(r.cookies["callward_session"])


def _with_cookie(c: TestClient, sid: str) -> int:
    c.cookies.clear()
    c.cookies.set("callward_session", sid)
    return c.get("/api/v1/audit/verify").status_code


def test_cookie_is_a_session_id_not_the_token(tmp_path: Path) -> None:
    with _client(tmp_path, Clock()) as c:
        sid = _sign_in(c, "viewer-token")
        assert sid != "viewer-token" and "viewer-token" not in sid and len(sid) >= 43
        assert _with_cookie(c, sid) == 200
        assert _with_cookie(c, "viewer-token") == 401  # the token is no cookie


def test_new_id_on_reauth_and_privilege_change_old_revoked(tmp_path: Path) -> None:
    with _client(tmp_path, Clock()) as c:
        first = _sign_in(c, "viewer-token")
        again = _sign_in(c, "viewer-token")  # re-authentication with the cookie present
        assert again != first
        assert _with_cookie(c, first) == 401
        elevated = _sign_in_with(c, again, "investigator-token")  # privilege change
        assert elevated not in (first, again)
        assert _with_cookie(c, again) == 401
        assert _with_cookie(c, elevated) == 200
        c.cookies.set("callward_session", elevated)
        page = c.get("/")
        assert "ivan@legal (investigator)" in page.text


def _sign_in_with(c: TestClient, cookie: str, token: str) -> str:
    c.cookies.clear()
    c.cookies.set("callward_session", cookie)
    return _sign_in(c, token)


def test_fixated_id_is_useless(tmp_path: Path) -> None:
    with _client(tmp_path, Clock()) as c:
        c.cookies.set("callward_session", "attacker-chosen-id")
        sid = _sign_in(c, "viewer-token")
        assert sid != "attacker-chosen-id"
        assert _with_cookie(c, "attacker-chosen-id") == 401


def test_sign_out_revokes_server_side(tmp_path: Path) -> None:
    with _client(tmp_path, Clock()) as c:
        sid = _sign_in(c, "investigator-token")
        assert c.delete("/api/v1/session").status_code == 204
        assert _with_cookie(c, sid) == 401  # a copy of the cookie is dead too


def test_idle_and_absolute_timeouts() -> None:
    clock = Clock()
    store = SessionStore(clock, idle=60.0, absolute=300.0, max_sessions=3)
    who = Principal(actor="a", role=Role.VIEWER)
    sid = store.create(who)
    for _ in range(5):  # used every 50 s: alive until 300 s after sign-in
        clock.t += 50
        assert store.get(sid) == who
    clock.t += 50
    assert store.get(sid) is None
    sid = store.create(who)
    clock.t += 61
    assert store.get(sid) is None
    ids = [store.create(who) for _ in range(5)]
    assert len(store) == 3 and store.get(ids[0]) is None and store.get(ids[-1]) == who
    assert store.revoke_actor("a") == 3 and store.get(ids[-1]) is None
    assert store.regenerate("gone") is None
