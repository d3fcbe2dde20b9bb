"""Hostile bodies and queries on the phone API's presence, emergency and private-discovery
routes: always a 2xx/3xx/4xx answer with a reason, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callward.config import CallwardConfig, IdentityConfig
from callward.edge.directory import Identity, SqliteDirectory
from callward.records.service import open_records
from callward.web import create_app
from oauth_idp import LocalIdP

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda c: st.lists(c, max_size=6) | st.dictionaries(st.text(max_size=10), c, max_size=5),
    max_leaves=20,
)
ROUTES = [
    ("PUT", "/api/v1/phone/presence"),
    ("PUT", "/api/v1/phone/presence/watch"),
    ("POST", "/api/v1/phone/contacts/psi"),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    idp = LocalIdP(access_ttl=3600.0).start()
    user = idp.add_user("alice", "pw")
    records = open_records(tmp / "var")
    app = create_app(CallwardConfig(identity=IdentityConfig(issuer=idp.issuer,
                                                            audience=idp.audience)), records)  # fmt: skip
    d = SqliteDirectory(tmp / "var" / "identity.sqlite")
    d.put(Identity(user.subject, "alice@acme.test", "+14155550100"))
    token = httpx.post(f"{idp.issuer}/token", data={
        "grant_type": "password", "username": "alice", "password": "pw", "client_id": idp.client_id,
        "otp": pyotp.TOTP(user.totp_secret).now(), "scope": "sip",
    }).json()["access_token"]  # fmt: skip
    yield TestClient(app), {"Authorization": f"Bearer {token}"}
    d.close()
    app.state.phone.close()
    records.close()
    idp.stop()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(ROUTES), JSON)
def test_bodies_never_500(client: tuple[TestClient, dict[str, str]], route: Any, body: Any) -> None:
    c, auth = client
    method, path = route
    r = c.request(method, path, json=body, headers=auth)
    assert r.status_code < 500, (path, body, r.text)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=30), st.text(max_size=40))
def test_queries_and_etags_never_500(
    client: tuple[TestClient, dict[str, str]], since: str, etag: str
) -> None:
    c, auth = client
    headers = {**auth, "If-None-Match": etag.encode("ascii", "ignore").decode() or '"x"'}
    for path in ("/api/v1/phone/presence", "/api/v1/phone/emergency",
                 "/api/v1/phone/contacts/psi-table"):  # fmt: skip
        r = c.get(path, params={"since": since} if path.endswith("presence") else None,
                  headers=headers)  # fmt: skip
        assert r.status_code < 500, (path, since, etag)
