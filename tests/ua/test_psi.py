"""Private contact discovery (ECDH-OPRF on P-256): the math against an independent reference
(the server's own evaluation), and the whole exchange between a phone and ``callward web``
(tokens from the real local IdP): the right contacts match, the server never receives a
number, a hash of one or a repeatable value, and the table is revalidated with a 304."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from callward.config import CallwardConfig, IdentityConfig
from callward.edge.directory import Identity, SqliteDirectory
from callward.errors import AuthError
from callward.records.service import open_records
from callward.ua.cache import CoherentCache
from callward.ua.psi import (
    ORDER,
    blind,
    evaluate,
    hash_to_point,
    match_table,
    oprf_key,
    seal_entry,
    unblind,
)
from callward.ua.psi_client import PsiDiscovery
from callward.ua.tokens import Login, OAuthClient, TokenSource
from callward.web import create_app
from oauth_idp import LocalIdP


def test_oprf_equals_direct_evaluation() -> None:
    b = oprf_key(b"s" * 32)
    contacts = {f"c{i}": f"+1415555{i:04d}" for i in range(20)}
    query, points = blind(contacts)
    values = unblind(query, evaluate(b, points))
    for cid, number in contacts.items():
        # independent reference: b·H(x) computed directly with cryptography's ECDH
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), hash_to_point(number))
        direct = ec.derive_private_key(b, ec.SECP256R1()).exchange(ec.ECDH(), peer)
        assert values[cid] == b"\x02" + direct
    # blinding: the same number gives unrelated points in two requests
    _, again = blind(contacts)
    assert not set(points) & set(again)


def test_table_opens_only_for_evaluated_numbers() -> None:
    b = oprf_key(b"k" * 32)
    table = dict(seal_entry(b, n, f"{n[-4:]}@acme.test") for n in ("+14155550100", "+14155550101"))
    query, points = blind({"bob": "+14155550100", "stranger": "+14155550999"})
    assert match_table(unblind(query, evaluate(b, points)), table) == {"bob": "0100@acme.test"}
    # with another server key nothing opens (an OPRF value is bound to the key)
    other = oprf_key(b"x" * 32)
    query, points = blind({"bob": "+14155550100"})
    assert match_table(unblind(query, evaluate(other, points)), table) == {}
    # a salted hash of the number (the offline guess) opens nothing either
    guess = {"bob": b"\x02" + hashlib.sha256(b"+14155550100").digest()}
    assert match_table(guess, table) == {}


@given(st.binary(min_size=0, max_size=40))
def test_evaluate_refuses_non_points(raw: bytes) -> None:
    try:
        out = evaluate(oprf_key(b"f" * 32), [raw])
    except AuthError:
        return
    assert len(out) == 1 and len(out[0]) == 33  # it was a valid point


def test_key_in_range() -> None:
    for i in range(50):
        assert 1 <= oprf_key(bytes([i]) * 32) < ORDER


class Recorder:
    """Every request body the app receives (what the server saw)."""

    def __init__(self, app: Any) -> None:
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
def world(tmp_path: Path) -> Iterator[tuple[Any, LocalIdP, SqliteDirectory]]:
    idp = LocalIdP(access_ttl=3600.0).start()
    alice = idp.add_user("alice", "pw")
    records = open_records(tmp_path / "var")
    app = create_app(CallwardConfig(identity=IdentityConfig(issuer=idp.issuer,
                                                            audience=idp.audience)), records)  # fmt: skip
    d = SqliteDirectory(tmp_path / "var" / "identity.sqlite")
    d.put(Identity(alice.subject, "alice@acme.test", "+14155550100"))
    for i in range(1, 40):
        d.put(Identity(f"sub-{i}", f"user{i}@acme.test", f"+1415555{i + 100:04d}"))
    d.put(Identity("sub-other", "eve@other.test", "+14155550777", tenant="other"))
    yield app, idp, d
    d.close()
    app.state.phone.close()
    records.close()
    idp.stop()


def _phone(app: Any, idp: LocalIdP) -> tuple[PsiDiscovery, Recorder]:
    secret = idp.users["alice"].totp_secret

    async def code() -> str:
        return pyotp.TOTP(secret).now()

    rec = Recorder(app)
    tokens = TokenSource(OAuthClient(f"{idp.issuer}/token", idp.client_id, "sip"),
                         login=Login("alice", "pw", code))  # fmt: skip
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=rec), base_url="http://web")
    return PsiDiscovery("http://web", tokens, CoherentCache(), clock=time.time, http=http), rec


async def test_discovery_through_callward_web(
    world: tuple[Any, LocalIdP, SqliteDirectory],
) -> None:
    app, idp, d = world
    phone, rec = _phone(app, idp)
    book = {"bob": "+14155550101", "carol": "+14155550139", "mum": "+441632960001",
            "eve": "+14155550777", "dentist": "+14155559999"}  # fmt: skip
    found = await phone.discover(book)
    # eve is a subscriber of another tenant: not visible; mum and the dentist are not ours
    assert found == {"bob": "user1@acme.test", "carol": "user39@acme.test"}
    sent = b"".join(rec.bodies)
    for number in book.values():
        digits = number.lstrip("+").encode()
        assert digits not in sent and hashlib.sha256(number.encode()).hexdigest().encode()[:12] \
            not in sent  # fmt: skip
    points = json.loads(rec.bodies[-1])["points"]
    assert len(points) == len(book)

    # the table is cached: the next discovery revalidates it with a 304 (no body)
    before = phone.bytes_in
    phone.cache.link_down(time.time())
    phone.cache.link_up(time.time())  # a heal: must revalidate
    assert await phone.discover({"bob": "+14155550101"}) == {"bob": "user1@acme.test"}
    evaluated_size = len(json.dumps({"key_id": "x" * 12, "evaluated": ["A" * 44]}))
    assert phone.bytes_in - before <= evaluated_size + 40  # the 304 carried no table
    # a renumbering changes the directory version: a new table comes down
    d.renumber("sub-1", "+14155558888")
    phone.cache.link_down(time.time())
    phone.cache.link_up(time.time())
    assert await phone.discover({"bob": "+14155550101", "bob2": "+14155558888"}) == {
        "bob2": "user1@acme.test"
    }
    assert len(json.loads(rec.bodies[-1])["points"]) == 1  # only the new contact is evaluated


async def test_bad_points_and_limits(world: tuple[Any, LocalIdP, SqliteDirectory]) -> None:
    app, idp, _ = world
    phone, _ = _phone(app, idp)
    doc = await phone.table()
    auth = {"Authorization": await phone.tokens.authorization()}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://web") as http:  # fmt: skip
        junk = base64.b64encode(b"\x02" + b"\xff" * 32).decode()
        r = await http.post("/api/v1/phone/contacts/psi", headers=auth,
                            json={"key_id": doc["key_id"], "points": [junk]})  # fmt: skip
        assert r.status_code == 422
        r = await http.post("/api/v1/phone/contacts/psi", headers=auth,
                            json={"key_id": "stale", "points": []})  # fmt: skip
        assert r.status_code == 409
        r = await http.post("/api/v1/phone/contacts/psi", headers=auth,
                            json={"key_id": doc["key_id"], "points": [junk] * 501})  # fmt: skip
        assert r.status_code == 422
