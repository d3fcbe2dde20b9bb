"""Presence deltas and emergency numbers between phones and ``callward web`` (tokens from the
real local IdP), through each phone's CoherentCache, with a simulated link and an injected
clock: 304s when nothing changed, only changes on the wire, no stale presence during a
partition, revalidation after the heal, expiry to offline, emergency numbers kept offline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from callward.config import CallwardConfig, IdentityConfig
from callward.edge.directory import Identity, SqliteDirectory
from callward.errors import TransportError
from callward.records.service import open_records
from callward.ua.cache import CoherentCache, Freshness
from callward.ua.presence import EmergencyNumbers, PresenceClient
from callward.ua.tokens import Login, OAuthClient, TokenSource
from callward.web import create_app
from oauth_idp import LocalIdP


class Link(httpx.AsyncBaseTransport):
    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.up = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("no route to host", request=request)
        return await self.inner.handle_async_request(request)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Any, LocalIdP, list[float]]]:
    idp = LocalIdP(access_ttl=300 * 86400.0).start()  # outlives the injected clock's jumps
    users = {name: idp.add_user(name, "pw") for name in ("alice", "bob", "carol")}
    mallory = idp.add_user("mallory", "pw", tenant="other")
    clock = [time.time()]  # the web's and the phones' clock (the IdP's tokens are real)
    records = open_records(tmp_path / "var")
    app = create_app(CallwardConfig(identity=IdentityConfig(issuer=idp.issuer,
                                                            audience=idp.audience)),
                     records, clock=lambda: clock[0])  # fmt: skip
    d = SqliteDirectory(tmp_path / "var" / "identity.sqlite")
    for name, u in users.items():
        d.put(Identity(u.subject, f"{name}@acme.test"))
    d.put(Identity(mallory.subject, "mallory@other.test", tenant="other"))
    yield app, idp, clock
    d.close()
    app.state.phone.close()
    records.close()
    idp.stop()


def _tokens(idp: LocalIdP, name: str) -> TokenSource:
    secret = idp.users[name].totp_secret

    async def code() -> str:
        return pyotp.TOTP(secret).now()

    return TokenSource(OAuthClient(f"{idp.issuer}/token", idp.client_id, "sip"),
                       login=Login(name, "pw", code))  # fmt: skip


def _client(cls: Any, app: Any, idp: LocalIdP, name: str, clock: list[float]) -> tuple[Any, Link]:
    link = Link(app)
    http = httpx.AsyncClient(transport=link, base_url="http://web")
    return cls("http://web", _tokens(idp, name), CoherentCache(), clock=lambda: clock[0],
               http=http), link  # fmt: skip


async def test_presence_deltas_partition_and_expiry(
    world: tuple[Any, LocalIdP, list[float]],
) -> None:
    app, idp, clock = world
    alice, link = _client(PresenceClient, app, idp, "alice", clock)
    bob, _ = _client(PresenceClient, app, idp, "bob", clock)
    carol, _ = _client(PresenceClient, app, idp, "carol", clock)
    await bob.publish("busy", "in a meeting", expires=600)
    await carol.publish("available")
    await alice.watch(["bob@acme.test", "carol@acme.test"])
    assert await alice.refresh() == Freshness.FRESH
    view, _ = alice.view()
    assert view == {"bob@acme.test": {"status": "busy", "note": "in a meeting"},
                    "carol@acme.test": {"status": "available", "note": ""}}  # fmt: skip

    # nothing changed: a bodiless 304
    before = alice.bytes_in
    clock[0] += 40  # past presence max_age (30 s): must revalidate
    assert alice.cache.state("presence", clock[0]) == Freshness.REVALIDATE
    assert await alice.refresh() == Freshness.FRESH and alice.bytes_in == before

    # one change: only that AOR comes back
    await carol.publish("away")
    clock[0] += 40
    await alice.refresh()
    assert alice.view()[0]["carol@acme.test"]["status"] == "away"
    assert alice.view()[0]["bob@acme.test"]["status"] == "busy"
    delta = alice.bytes_in - before
    assert 0 < delta < 120, delta  # one AOR's change, not the whole list

    # partition: presence is not shown past max_age (no stale "busy"/"available")
    link.up = False
    clock[0] += 5
    with pytest.raises(TransportError):
        await alice.refresh()
    assert alice.view()[1] == Freshness.STALE  # within max_age, flagged
    clock[0] += 30
    assert alice.view() == ({}, Freshness.UNUSABLE)
    await carol.publish("dnd")  # meanwhile
    clock[0] += 600  # and bob's status (600 s) expires: he reads offline
    link.up = True
    alice.cache.link_up(clock[0])
    assert await alice.refresh() == Freshness.FRESH
    view, _ = alice.view()
    assert view["carol@acme.test"]["status"] == "dnd"
    assert view["bob@acme.test"]["status"] == "offline"


async def test_watch_only_own_tenant_subscribers(world: tuple[Any, LocalIdP, list[float]]) -> None:
    app, idp, clock = world
    alice, _ = _client(PresenceClient, app, idp, "alice", clock)
    with pytest.raises(TransportError, match="422"):
        await alice.watch(["mallory@other.test"])  # another tenant: refused
    with pytest.raises(TransportError, match="422"):
        await alice.watch(["nobody@acme.test"])
    with pytest.raises(TransportError, match="422"):
        await alice.watch(["x@acme.test"] * 501)  # bounded


async def test_emergency_numbers_kept_offline(world: tuple[Any, LocalIdP, list[float]]) -> None:
    app, idp, clock = world
    phone, link = _client(EmergencyNumbers, app, idp, "alice", clock)
    assert await phone.refresh() == Freshness.FRESH
    assert phone.route_for("112") == "urn:service:sos"
    assert phone.route_for("1 1 2") == "urn:service:sos" and phone.route_for("113") is None
    before = phone.bytes_in
    clock[0] += 2 * 86400
    await phone.ensure()  # revalidated: unchanged, 304
    assert phone.bytes_in == before
    link.up = False
    clock[0] += 365 * 86400
    await phone.ensure()  # cut off for a year: still routable
    assert phone.route_for("911") == "urn:service:sos"
