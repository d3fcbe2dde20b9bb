"""The phone API's preferences and presence shared by two ``callward web`` processes over one
data_dir (phone-state.sqlite): ETags agree, a write accepted by one worker makes a stale
``If-Match`` fail in the other, presence published through one is in the other's deltas.
Tokens from the real local IdP; the workers fetch its JWKS over loopback."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest

from callward.edge.directory import Identity, SqliteDirectory
from callward.ua.psi import hash_to_point
from oauth_idp import LocalIdP
from peers import CALLWARD_CLI, free_port, stop

PORTS = (26000, 26999)  # identity14's block (notes/COORD.md)
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[LocalIdP, list[str]]]:
    idp = LocalIdP(access_ttl=600.0).start()
    users = {n: idp.add_user(n, "pw") for n in ("alice", "bob")}
    d = SqliteDirectory(tmp_path / "var" / "identity.sqlite")
    for n, u in users.items():
        d.put(Identity(u.subject, f"{n}@acme.test"))
    d.close()
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(f"storage: {{data_dir: {tmp_path / 'var'}}}\n"
                   f"identity: {{issuer: '{idp.issuer}', audience: '{idp.audience}',"
                   f" discovery_daily_limit: 3}}\n")  # fmt: skip
    procs, urls = [], []
    try:
        for i in range(2):
            port = free_port(PORTS)
            log = tmp_path / f"web{i}.log"
            with log.open("w") as fh:
                procs.append(subprocess.Popen(
                    [*CALLWARD_CLI, "web", "--port", str(port), "--config", str(cfg)],
                    stdout=fh, stderr=subprocess.STDOUT,
                ))  # fmt: skip
            urls.append(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(urls[-1] + "/api/v1/health", timeout=1).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                assert procs[-1].poll() is None, log.read_text()[-500:]
                assert time.monotonic() < deadline, log.read_text()[-500:]
                time.sleep(0.2)
        yield idp, urls
    finally:
        for p in procs:
            stop(p)
        idp.stop()


def _auth(idp: LocalIdP, name: str) -> dict[str, str]:
    otp = pyotp.TOTP(idp.users[name].totp_secret).now()
    r = httpx.post(f"{idp.issuer}/token", data={
        "grant_type": "password", "username": name, "password": "pw", "otp": otp,
        "client_id": idp.client_id, "scope": "sip",
    })  # fmt: skip
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_prefs_and_presence_agree_across_workers(world: tuple[LocalIdP, list[str]]) -> None:
    idp, (a, b) = world
    alice, bob = _auth(idp, "alice"), _auth(idp, "bob")
    path = "/api/v1/phone/prefs"
    assert httpx.get(a + path, headers=alice).headers["ETag"] == '"0"'
    r = httpx.put(a + path, headers={**alice, "If-Match": '"0"'}, json={"ring": "loud"})
    assert r.status_code == 204 and r.headers["ETag"] == '"1"'
    got = httpx.get(b + path, headers=alice)  # the other worker sees the same version
    assert got.headers["ETag"] == '"1"' and got.json() == {"ring": "loud"}
    r = httpx.get(b + path, headers={**alice, "If-None-Match": '"1"'})
    assert r.status_code == 304
    stale = httpx.put(b + path, headers={**alice, "If-Match": '"0"'}, json={"ring": "off"})
    assert stale.status_code == 412 and stale.json() == {"ring": "loud"}  # no lost update

    # presence: bob publishes through A, alice watches and reads through B
    r = httpx.put(a + "/api/v1/phone/presence", headers=bob, json={"status": "busy"})
    assert r.status_code == 204
    r = httpx.put(b + "/api/v1/phone/presence/watch", headers=alice,
                  json={"aors": ["bob@acme.test"]})  # fmt: skip
    assert r.status_code == 200
    first = httpx.get(b + "/api/v1/phone/presence", headers=alice)
    assert first.json()["changes"] == [{"aor": "bob@acme.test", "status": "busy", "note": ""}]
    etag = first.headers["ETag"]
    again = httpx.get(a + "/api/v1/phone/presence", headers={**alice, "If-None-Match": etag})
    assert again.status_code == 304  # the same ETag in the other worker
    httpx.put(b + "/api/v1/phone/presence", headers=bob, json={"status": "offline"})
    changed = httpx.get(a + "/api/v1/phone/presence", headers={**alice, "If-None-Match": etag},
                        params={"since": first.json()["version"]})  # fmt: skip
    assert changed.status_code == 200
    assert changed.json()["changes"] == [{"aor": "bob@acme.test", "status": "offline",
                                          "note": ""}]  # fmt: skip

    # the daily discovery limit (3) is one budget across the workers, not one per worker
    key_id = httpx.get(a + "/api/v1/phone/contacts/psi-table", headers=alice).json()["key_id"]
    point = base64.b64encode(hash_to_point("+14155550123")).decode()
    body = {"key_id": key_id, "points": [point, point]}
    assert httpx.post(a + "/api/v1/phone/contacts/psi", headers=alice, json=body).status_code == 200
    assert httpx.post(b + "/api/v1/phone/contacts/psi", headers=alice, json=body).status_code == 429
