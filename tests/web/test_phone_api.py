"""The phone API of ``callward web`` driven by the phone's own clients (SyncClient,
TelemetryUploader, TokenSource) with tokens from the real local IdP; the web fetches the IdP's
JWKS over loopback HTTP."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import zstandard
from fastapi import FastAPI

from callward.config import CallwardConfig, IdentityConfig
from callward.edge.directory import Identity, SqliteDirectory
from callward.privacy.discovery import discovery_hash
from callward.privacy.retention_policy import load_policy
from callward.privacy.retention_stores import open_retention
from callward.records.retention import execute_plan, plan_retention
from callward.records.service import open_records
from callward.ua.sync import SyncClient
from callward.ua.telemetry import TelemetryPolicy, TelemetryQueue, TelemetryUploader
from callward.ua.tokens import Login, OAuthClient, TokenSource
from callward.web import create_app
from oauth_idp import LocalIdP


class Recorder:
    """Every request body the app receives (to prove what the server saw)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def tap() -> Any:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            return msg

        await self.app(scope, tap, send)
        self.bodies.append(b"".join(chunks))


@pytest.fixture
def idp() -> Iterator[LocalIdP]:
    server = LocalIdP(access_ttl=120.0).start()
    server.add_user("alice", "pw", tenant="acme")
    yield server
    server.stop()


@pytest.fixture
def world(tmp_path: Path, idp: LocalIdP) -> Iterator[tuple[FastAPI, Recorder, SqliteDirectory]]:
    records = open_records(tmp_path / "var")
    cfg = CallwardConfig(identity=IdentityConfig(issuer=idp.issuer, audience=idp.audience))
    app = create_app(cfg, records)
    directory = SqliteDirectory(tmp_path / "var" / "identity.sqlite")
    directory.put(Identity(idp.users["alice"].subject, "alice@acme.test", "+14155550100", "acme"))
    for i in range(20):  # other subscribers of the tenant
        directory.put(Identity(f"sub-{i}", f"user{i}@acme.test", f"+1415555{1000 + i}", "acme"))
    directory.put(Identity("sub-x", "eve@other.test", "+14155559999", "other"))
    yield app, Recorder(app), directory
    directory.close()
    app.state.phone.close()
    records.close()


def _tokens(idp: LocalIdP, http: httpx.AsyncClient | None = None) -> TokenSource:
    secret = idp.users["alice"].totp_secret

    async def code() -> str:
        return pyotp.TOTP(secret).now()

    return TokenSource(OAuthClient(f"{idp.issuer}/token", idp.client_id, "sip sync telemetry"),
                       login=Login("alice", "pw", code))  # fmt: skip


def _http(rec: Recorder) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=rec), base_url="http://web")


async def test_delta_sync_never_uploads_the_address_book(
    idp: LocalIdP, world: tuple[FastAPI, Recorder, SqliteDirectory]
) -> None:
    app, rec, directory = world
    rng = random.Random(3)
    book = {f"c{i}": f"+4930{rng.randrange(10**7, 10**8)}" for i in range(300)}
    book |= {"bob": "+14155551003", "carol": "+14155551007", "eve": "+14155559999"}
    tokens = _tokens(idp)
    client = SyncClient("http://web", tokens, http=_http(rec))
    found = await client.sync(book)
    assert found == {"bob": "user3@acme.test", "carol": "user7@acme.test"}  # not eve: other tenant
    first_calls = len(rec.bodies)
    # second sync: two contacts added, one removed, one renumbered at the operator
    book |= {"dave": "+14155551011", "new": "+4930555"}
    del book["c1"]
    directory.renumber("sub-7", "+14155558888")
    found = await client.sync(book)
    assert found == {"bob": "user3@acme.test", "dave": "user11@acme.test"}
    delta = json.loads(rec.bodies[-1])
    assert sorted(delta["added"]) == sorted(
        discovery_hash(client.state.salt, n) for n in ("+14155551011", "+4930555")
    )
    # carol's AOR changed: she is looked up again on the next sync, and found under no match
    await client.sync(book)
    assert json.loads(rec.bodies[-1])["added"] == [discovery_hash(client.state.salt, book["carol"])]
    # what the server ever received: hashes and versions, no number, no name
    everything = b"".join(rec.bodies)
    for name, number in book.items():
        assert number.encode() not in everything and number[1:].encode() not in everything
        assert f'"{name}"'.encode() not in everything or name in ("new",)
    assert len(rec.bodies) == first_calls + 2
    # and kept nothing of it: only a per-subject counter
    quota = app.state.phone.discovery_quota
    assert quota.used(time.time()) == {idp.users["alice"].subject: 306}
    await client.aclose()
    await tokens.aclose()


async def test_discovery_rate_limit_and_auth(
    idp: LocalIdP, world: tuple[FastAPI, Recorder, SqliteDirectory]
) -> None:
    app, rec, directory = world
    app.state.phone.discovery_quota.limit = 10
    tokens = _tokens(idp)
    async with _http(rec) as http:
        assert (await http.get("/api/v1/phone/discovery")).status_code == 401
        auth = {"Authorization": await tokens.authorization()}
        salt = (await http.get("/api/v1/phone/discovery", headers=auth)).json()
        body = {"salt_id": salt["salt_id"], "added": ["00" * 6] * 11}
        r = await http.post("/api/v1/phone/contacts/sync", json=body, headers=auth)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        r = await http.post("/api/v1/phone/contacts/sync", json={**body, "salt_id": "x"},
                            headers=auth)  # fmt: skip
        assert r.status_code == 409
        r = await http.post("/api/v1/phone/contacts/sync", json={**body, "added": ["+4930"]},
                            headers=auth)  # fmt: skip
        assert r.status_code == 422
        directory.revoke(idp.users["alice"].subject)  # effective on the next request
        r = await http.get("/api/v1/phone/discovery", headers=auth)
        assert r.status_code == 401 and "invalid_token" in r.headers["WWW-Authenticate"]
    await tokens.aclose()


async def test_prefs_etag_conditional(
    idp: LocalIdP, world: tuple[FastAPI, Recorder, SqliteDirectory]
) -> None:
    _, rec, _ = world
    tokens = _tokens(idp)
    async with _http(rec) as http:
        auth = {"Authorization": await tokens.authorization()}
        r = await http.get("/api/v1/phone/prefs", headers=auth)
        assert r.json() == {} and r.headers["ETag"] == '"0"'
        r = await http.get("/api/v1/phone/prefs", headers={**auth, "If-None-Match": '"0"'})
        assert r.status_code == 304
        assert (
            await http.put("/api/v1/phone/prefs", json={"a": 1}, headers=auth)
        ).status_code == 428
        r = await http.put(
            "/api/v1/phone/prefs", json={"a": 1}, headers={**auth, "If-Match": '"0"'}
        )
        assert r.status_code == 204 and r.headers["ETag"] == '"1"'
        r = await http.put(
            "/api/v1/phone/prefs", json={"a": 2}, headers={**auth, "If-Match": '"0"'}
        )
        assert r.status_code == 412 and r.json() == {"a": 1} and r.headers["ETag"] == '"1"'
    await tokens.aclose()


async def test_telemetry_batches_land_and_retention(
    idp: LocalIdP, world: tuple[FastAPI, Recorder, SqliteDirectory]
) -> None:
    app, rec, _ = world
    tokens = _tokens(idp)
    now = [1_900_000_000.0]
    queue = TelemetryQueue(TelemetryPolicy(batch_records=50, interval=60.0))
    up = TelemetryUploader("http://web", tokens, queue, clock=lambda: now[0], http=_http(rec))
    for i in range(120):
        queue.record("call_quality", now[0] + i, mos=4.1, loss=0.01 * (i % 5), jitter_ms=12)
    assert await up.flush_once() and await up.flush_once()  # two full batches at once
    assert not await up.flush_once()  # 20 left: wait for the interval
    now[0] += 61
    assert await up.flush_once()
    store = app.state.phone.telemetry
    assert store.count("acme") == 120
    raw = zstandard.ZstdDecompressor().decompress(rec.bodies[-1])
    assert len(json.loads(raw)) == 20 and len(rec.bodies[-1]) < len(raw) / 3
    # rows carry a pseudonym, not the subject
    row = store._db.execute("SELECT subject FROM telemetry LIMIT 1").fetchone()[0]
    subject = idp.users["alice"].subject
    assert row == app.state.web.records.codec.pseudonym(subject).hex() and subject not in row
    # the retention engine ages telemetry with the CDR rules (GDPR), audited like CDRs
    records = app.state.web.records
    setup = open_retention(CallwardConfig(), records)
    assert "phone-telemetry" in [st.name for st in setup.stores]
    policy = load_policy(["builtin:GDPR", "builtin:CCPA", "builtin:LOCAL-TEL"])
    soon = plan_retention(setup.stores, policy, [], now[0] + 86400.0)
    assert not soon.of("purge", "phone-telemetry")
    late = plan_retention(setup.stores, policy, [], now[0] + 800 * 86400.0)
    done = execute_plan(late, setup.stores, records.audit, "test")
    assert done["purge"] >= 120 and store.count() == 0
    setup.close()
    async with _http(rec) as http:
        auth = {"Authorization": await tokens.authorization()}
        r = await http.post("/api/v1/phone/telemetry", content=b"[]", headers=auth)
        assert r.status_code == 415
        r = await http.post("/api/v1/phone/telemetry", content=b"\x28\xb5\x2f\xfd junk",
                            headers={**auth, "Content-Encoding": "zstd"})  # fmt: skip
        assert r.status_code == 422
        bomb = zstandard.ZstdCompressor().compress(b"[" + b" " * (2 << 20) + b"]")
        r = await http.post("/api/v1/phone/telemetry", content=bomb,
                            headers={**auth, "Content-Encoding": "zstd"})  # fmt: skip
        assert r.status_code == 422
    await up.aclose()
    await tokens.aclose()


def test_phone_api_off_without_issuer(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    records = open_records(tmp_path / "var")
    with TestClient(create_app(CallwardConfig(), records)) as c:
        assert c.get("/api/v1/phone/discovery").status_code == 404  # no such route
    records.close()
