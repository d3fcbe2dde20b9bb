"""Cache coherence under a partition: two devices of one subscriber against ``callward web``'s
preferences (ETag / If-Match), a simulated link (the phone's transport fails while it is cut)
and an injected clock; presence and emergency-route freshness rules on the sans-IO core."""

from __future__ import annotations

import math
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
from callward.ua.cache import CachePolicy, CoherentCache, Freshness, PrefsClient
from callward.ua.tokens import Login, OAuthClient, TokenSource
from callward.web import create_app
from oauth_idp import LocalIdP


class Link(httpx.AsyncBaseTransport):
    """The radio: passes requests to the app, or fails them while cut."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.up = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("no route to host", request=request)
        return await self.inner.handle_async_request(request)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Any, LocalIdP]]:
    idp = LocalIdP(access_ttl=3600.0).start()
    user = idp.add_user("alice", "pw")
    records = open_records(tmp_path / "var")
    app = create_app(CallwardConfig(identity=IdentityConfig(issuer=idp.issuer,
                                                            audience=idp.audience)), records)  # fmt: skip
    d = SqliteDirectory(tmp_path / "var" / "identity.sqlite")
    d.put(Identity(user.subject, "alice@acme.test"))
    yield app, idp
    d.close()
    app.state.phone.close()
    records.close()
    idp.stop()


def _device(app: Any, idp: LocalIdP, clock: list[float]) -> tuple[PrefsClient, Link]:
    secret = idp.users["alice"].totp_secret

    async def code() -> str:
        return pyotp.TOTP(secret).now()

    tokens = TokenSource(OAuthClient(f"{idp.issuer}/token", idp.client_id, "sip"),
                         login=Login("alice", "pw", code))  # fmt: skip
    link = Link(app)
    http = httpx.AsyncClient(transport=link, base_url="http://web")
    return PrefsClient("http://web", tokens, CoherentCache(), clock=lambda: clock[0],
                       http=http), link  # fmt: skip


async def test_partition_then_heal_revalidates_and_merges(world: tuple[Any, LocalIdP]) -> None:
    app, idp = world
    clock = [1_000.0]
    phone, link = _device(app, idp, clock)
    tablet, _ = _device(app, idp, clock)
    # both devices start from the same document
    assert await phone.revalidate() == Freshness.FRESH
    phone.cache.edit("prefs", "ring", "loud")
    phone.cache.edit("prefs", "dnd", False)
    assert await phone.push()
    assert await tablet.revalidate() == Freshness.FRESH
    assert tablet.cache.get("prefs", clock[0])[0] == {"ring": "loud", "dnd": False}

    # partition: the phone is cut off; the tablet changes "dnd" and "ring" meanwhile
    link.up = False
    clock[0] += 60
    with pytest.raises(TransportError):
        await phone.revalidate()
    tablet.cache.edit("prefs", "dnd", True)
    tablet.cache.edit("prefs", "ring", "vibrate")
    assert await tablet.push()
    # offline, the phone shows its copy, flagged stale, and edits locally
    value, state = phone.cache.get("prefs", clock[0])
    assert state == Freshness.STALE and value == {"ring": "loud", "dnd": False}
    phone.cache.edit("prefs", "ring", "silent")  # conflicts with the tablet's write
    phone.cache.edit("prefs", "volume", 3)  # only the phone touched it

    # heal after 10 s: young as it is, the phone's entry is not fresh until revalidated
    clock[0] += 10
    link.up = True
    phone.cache.link_up(clock[0])
    assert phone.cache.state("prefs", clock[0]) == Freshness.REVALIDATE
    assert await phone.revalidate() == Freshness.FRESH  # the tablet's version came in (200)
    assert await phone.push()  # If-Match on the new ETag: accepted without a 412
    # documented merge: server wins the field both changed, the phone keeps its own field
    assert phone.cache.conflicts == [("prefs", "ring")]
    _, doc = app.state.phone.prefs.get(idp.users["alice"].subject)
    assert doc == {"ring": "vibrate", "dnd": True, "volume": 3}
    assert await tablet.revalidate() == Freshness.FRESH
    assert tablet.cache.get("prefs", clock[0])[0] == doc


async def test_write_race_412_merges_and_retries(world: tuple[Any, LocalIdP]) -> None:
    app, idp = world
    clock = [5_000.0]
    phone, _ = _device(app, idp, clock)
    tablet, _ = _device(app, idp, clock)
    await phone.revalidate()
    await tablet.revalidate()
    tablet.cache.edit("prefs", "theme", "dark")
    assert await tablet.push()
    phone.cache.edit("prefs", "lang", "de")  # phone's base ETag is now old: 412, merge, retry
    assert await phone.push()
    _, doc = app.state.phone.prefs.get(idp.users["alice"].subject)
    assert doc == {"theme": "dark", "lang": "de"} and phone.cache.conflicts == []


def test_presence_never_stale_emergency_never_dropped() -> None:
    c = CoherentCache({"prefs": CachePolicy(60.0, 600.0), "presence": CachePolicy(30.0, 0.0),
                       "emergency": CachePolicy(86400.0, math.inf)})  # fmt: skip
    c.on_response("presence:bob", 200, 0.0, body={"status": "online"}, etag='"1"')
    c.on_response("emergency:112", 200, 0.0, body={"route": "sip:psap@x"}, etag='"7"')
    c.link_down(1.0)
    assert c.get("presence:bob", 29.0)[1] == Freshness.STALE
    assert c.get("presence:bob", 31.0) == (None, Freshness.UNUSABLE)  # no stale "online"
    assert c.get("emergency:112", 10 * 86400.0)[1] == Freshness.STALE  # still routable
    c.link_up(10 * 86400.0)
    assert c.state("emergency:112", 10 * 86400.0) == Freshness.REVALIDATE
    c.on_response("emergency:112", 304, 10 * 86400.0, body=None, etag=None)
    assert c.state("emergency:112", 10 * 86400.0 + 1) == Freshness.FRESH
