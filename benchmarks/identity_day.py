"""Bytes per day of the phone's identity traffic (telemetry + contact sync + private discovery
+ presence + token refresh) for a scripted day, against naive peers measured in the same run.

The day (injected clock, one phone, ``callward web``'s phone API in-process behind httpx's
ASGI transport, tokens from the real local IdP over loopback HTTP):

* address book of 500 contacts, 30 of them subscribers; contact sync 4x a day; 3 contacts
  added and 1 subscriber renumbered during the day;
* 12 calls of 3 minutes: one quality sample per call-minute plus a per-call summary, one
  data-usage record per hour, one registration record per refresh (every 10 min);
* access tokens live 1 h: 24 refreshes, counted as 24 x one refresh exchange measured at the
  end of the run (the token clock is not the simulated one);
* private discovery (OPRF, ``ua/psi_client.py``) at the same 4 sync times: the table is
  downloaded once and revalidated (304) afterwards, only new contacts are evaluated;
* presence: the 30 subscriber contacts watched, a delta poll every 5 minutes (``If-None-Match``),
  each of them changing status 4 times in the day (120 changes, published by the others).

Peers (same day, same server):
* telemetry: one uncompressed JSON POST per record, as it happens;
* sync: the whole address book (numbers in clear, as a naive client does) at every sync;
* presence: the full state of the 30 watched AORs at every poll (no ETag, no delta).

Bytes are HTTP/1.1 header + body bytes both ways (request/status lines, TLS and TCP/IP
overhead excluded; they add the same per request to both sides). Run:
``.venv/bin/python benchmarks/identity_day.py``.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
from pathlib import Path

import httpx
import pyotp

from callward.config import CallwardConfig, IdentityConfig
from callward.edge.directory import Identity, SqliteDirectory
from callward.records.service import open_records
from callward.ua.cache import CoherentCache
from callward.ua.presence import PresenceClient
from callward.ua.psi_client import PsiDiscovery
from callward.ua.sync import SyncClient
from callward.ua.telemetry import TelemetryPolicy, TelemetryQueue, TelemetryUploader
from callward.ua.tokens import Login, OAuthClient, TokenSource
from callward.web import create_app
from oauth_idp import LocalIdP

DAY0 = 1_900_022_400.0  # a UTC midnight


def _size(msg: httpx.Request | httpx.Response) -> int:
    return len(msg.content) + sum(len(k) + len(v) + 4 for k, v in msg.headers.raw)


async def run() -> dict[str, float]:
    rng = random.Random(14)
    tmp = Path(tempfile.mkdtemp(prefix="callward-identity-day-"))
    idp = LocalIdP(access_ttl=3600.0).start()
    user = idp.add_user("alice", "pw")
    records = open_records(tmp / "var")
    app = create_app(
        CallwardConfig(identity=IdentityConfig(issuer=idp.issuer, audience=idp.audience,
                                               telemetry_daily_bytes=10**7)),
        records,
    )  # fmt: skip
    directory = SqliteDirectory(tmp / "var" / "identity.sqlite")
    directory.put(Identity(user.subject, "alice@acme.test", "+14155550100"))
    book: dict[str, str] = {}
    for i in range(500):
        number = f"+4930{rng.randrange(10**7, 10**8)}"
        book[f"contact-{i}"] = number
        if i < 30:
            directory.put(Identity(f"sub-{i}", f"user{i}@acme.test", number))

    async def code() -> str:
        return pyotp.TOTP(user.totp_secret).now()

    token_bytes = 0

    async def count_token(req: httpx.Request) -> None:
        nonlocal token_bytes
        token_bytes += _size(req)

    async def count_token_resp(resp: httpx.Response) -> None:
        nonlocal token_bytes
        await resp.aread()
        token_bytes += _size(resp)

    idp_http = httpx.AsyncClient(event_hooks={"request": [count_token],
                                              "response": [count_token_resp]})  # fmt: skip
    tokens = TokenSource(OAuthClient(f"{idp.issuer}/token", idp.client_id, "sip sync telemetry",
                                     http=idp_http),
                         login=Login("alice", "pw", code))  # fmt: skip
    web = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web")
    now = [DAY0]
    counted = {"psi": 0, "presence": 0, "presence_naive": 0}

    def counting(kind: str) -> httpx.AsyncClient:
        async def req(r: httpx.Request) -> None:
            counted[kind] += _size(r)

        async def resp(r: httpx.Response) -> None:
            await r.aread()
            counted[kind] += _size(r)

        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web",
                                 event_hooks={"request": [req], "response": [resp]})  # fmt: skip

    psi = PsiDiscovery("http://web", tokens, CoherentCache(), clock=lambda: now[0],
                       http=counting("psi"))  # fmt: skip
    presence = PresenceClient("http://web", tokens, CoherentCache(), clock=lambda: now[0],
                              http=counting("presence"))  # fmt: skip
    naive_presence = counting("presence_naive")
    store = app.state.phone.presence
    watched = [f"user{i}@acme.test" for i in range(30)]
    changes = sorted(rng.sample(range(6 * 3600, 23 * 3600, 60), 120))
    sync = SyncClient("http://web", tokens, http=web)
    queue = TelemetryQueue(TelemetryPolicy())  # defaults: hourly batches
    up = TelemetryUploader("http://web", tokens, queue, clock=lambda: now[0], http=web)
    naive_tele = 0
    naive_sync = 0
    auth = await tokens.authorization()

    async def naive_record(rec: dict[str, object]) -> None:
        nonlocal naive_tele
        req = web.build_request("POST", "/naive-telemetry", json=rec,
                                headers={"Authorization": auth})  # fmt: skip
        naive_tele += _size(req) + 60  # a 202 with a small JSON body, as ours

    async def naive_sync_all() -> None:
        nonlocal naive_sync
        body = [{"name": k, "number": v} for k, v in book.items()]
        req = web.build_request("POST", "/naive-sync", json=body, headers={"Authorization": auth})
        naive_sync += _size(req) + 400  # the matches back

    def record(kind: str, **fields: float | int | str) -> None:
        queue.record(kind, now[0], **fields)
        asyncio.get_running_loop().create_task(naive_record({"kind": kind, "ts": now[0], **fields}))

    sync_times = {7 * 3600, 12 * 3600, 17 * 3600, 22 * 3600}
    call_starts = sorted(rng.sample(range(8 * 3600, 22 * 3600, 600), 12))
    first_sync_bytes = 0
    first_psi_bytes = 0
    state_clock = app.state.web.clock
    for aor in watched:  # everyone is available in the morning, for 24 h
        store.publish("default", aor, "available", "", state_clock() + 86400)
    await presence.watch(watched)
    for minute in range(24 * 60):
        now[0] = DAY0 + minute * 60
        t = minute * 60
        if t in sync_times:
            before = counted["psi"]
            await psi.discover(book)
            if t == min(sync_times):
                first_psi_bytes = counted["psi"] - before
        if t in changes:
            store.publish("default", rng.choice(watched),
                          rng.choice(["available", "away", "busy", "dnd"]), "",
                          state_clock() + 86400)  # fmt: skip
        if t % 300 == 0:
            await presence.refresh()
            r = await naive_presence.get("/api/v1/phone/presence",
                                         headers={"Authorization": auth})  # fmt: skip
            assert r.status_code == 200
        if t in sync_times:
            before = sync.bytes_up + sync.bytes_down
            await sync.sync(book)
            if t == min(sync_times):
                first_sync_bytes = sync.bytes_up + sync.bytes_down - before
            await naive_sync_all()
        if t == 9 * 3600:
            book |= {"new-1": "+14155551234", "new-2": book["contact-3"], "new-3": "+4930555"}
        if t == 15 * 3600:
            directory.renumber("sub-5", "+4930999000")
        if t % 600 == 0:
            record("registration", expires=600, ok=1)
        if t % 3600 == 0:
            record("usage", rx_bytes=rng.randrange(10**5), tx_bytes=rng.randrange(10**5))
        for start in call_starts:
            if start <= t < start + 180:
                record("call_quality", mos=round(rng.uniform(3.6, 4.4), 2),
                       loss=round(rng.uniform(0, 0.03), 3), jitter_ms=rng.randrange(5, 40),
                       rtt_ms=rng.randrange(40, 200), codec="opus")  # fmt: skip
            if t == start + 180:
                record("call_summary", duration_s=180, mos_min=3.7, codec="opus", status=200)
        while await up.flush_once():
            pass
        await asyncio.sleep(0)
    now[0] = DAY0 + 86400 - 1
    while await up.flush_once():
        pass
    stored = app.state.phone.telemetry.count()
    login_bytes = token_bytes
    tokens.token_refused()  # one refresh exchange, measured; the day has 24 (1 h tokens)
    await tokens.access_token()
    refresh_bytes = token_bytes - login_bytes
    await asyncio.sleep(0.1)
    result = {
        "telemetry_bytes": up.bytes_up + up.bytes_down,
        "telemetry_naive": naive_tele,
        "sync_bytes": sync.bytes_up + sync.bytes_down,
        "sync_first": first_sync_bytes,
        "sync_naive": naive_sync,
        "token_bytes": 24 * refresh_bytes,
        "login_bytes": login_bytes,
        "records": stored,
        "batches": queue.batches_sent,
        "psi_bytes": counted["psi"],
        "psi_first": first_psi_bytes,
        "presence_bytes": counted["presence"],
        "presence_naive": counted["presence_naive"],
        "psi_matches": len(await psi.discover(book)),
    }
    await tokens.aclose()
    await web.aclose()
    app.state.phone.close()
    directory.close()
    records.close()
    idp.stop()
    return result


def main() -> None:
    r = asyncio.run(run())
    print(json.dumps(r, indent=2))
    steady_sync = r["sync_bytes"] - r["sync_first"]
    print(f"telemetry: {r['telemetry_bytes']} B/day in {r['batches']} zstd batches "
          f"({r['records']} records) vs {r['telemetry_naive']} B one JSON POST per record: "
          f"{r['telemetry_naive'] / r['telemetry_bytes']:.1f}x less")  # fmt: skip
    print(f"sync: {r['sync_bytes']} B/day (first sync of the 500-contact book "
          f"{r['sync_first']} B, the 3 later delta syncs {steady_sync} B) vs {r['sync_naive']} B "
          f"uploading the book 4x: {r['sync_naive'] / r['sync_bytes']:.1f}x less")  # fmt: skip
    print(f"private discovery (OPRF): {r['psi_bytes']} B/day (first: table + 500 blinded "
          f"points, {r['psi_first']} B; {r['psi_matches']} matches)")  # fmt: skip
    ratio = r["presence_naive"] / r["presence_bytes"]
    print(f"presence: {r['presence_bytes']} B/day (288 delta polls) vs {r['presence_naive']} B "
          f"full state at every poll: {ratio:.1f}x less")  # fmt: skip
    print(f"token refresh: {r['token_bytes']} B/day (24 x one measured refresh; the TOTP "
          f"login, once per refresh-token life, {r['login_bytes']} B)")  # fmt: skip


if __name__ == "__main__":
    main()
