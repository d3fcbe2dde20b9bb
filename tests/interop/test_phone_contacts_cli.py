"""``callward phone contacts`` against a ``callward web`` process (tokens from the local IdP):
private discovery finds exactly the subscribers of the book, presence of the matches comes
along, and the second run only revalidates (no point evaluated again, the table a 304). The
book never leaves the phone and the keystore holds nothing in the clear."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from callward.edge.directory import Identity, SqliteDirectory
from oauth_idp import LocalIdP
from peers import CALLWARD_CLI, free_port, stop

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]
PORTS = (26000, 26999)  # identity14's block (notes/COORD.md)


def test_contacts_discovery_and_presence_from_the_cli(tmp_path: Path) -> None:
    idp = LocalIdP(access_ttl=600.0).start()
    alice = idp.add_user("alice", "alice-pw")
    bob = idp.add_user("bob", "bob-pw")
    d = SqliteDirectory(tmp_path / "var" / "identity.sqlite")
    d.put(Identity(alice.subject, "alice@acme.test", "+14155550100"))
    d.put(Identity(bob.subject, "bob@acme.test", "+14155550101"))
    d.put(Identity("sub-c", "carol@acme.test", "+14155550102"))
    d.close()
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(f"storage: {{data_dir: {tmp_path / 'var'}}}\n"
                   f"identity: {{issuer: '{idp.issuer}', audience: '{idp.audience}'}}\n")  # fmt: skip
    port = free_port(PORTS)
    web = f"http://127.0.0.1:{port}"
    log = tmp_path / "web.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([*CALLWARD_CLI, "web", "--port", str(port), "--config", str(cfg)],
                                stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
    book = tmp_path / "book.json"
    book.write_text(json.dumps({"Bob": "+1 415 555 0101", "Carol": "+14155550102",
                                "Mum": "+441632960001", "Dentist": "not a number"}))  # fmt: skip
    seed = tmp_path / "alice.totp"
    seed.write_text(alice.totp_secret)
    seed.chmod(0o600)
    keystore = tmp_path / "ks"
    env = {
        **os.environ,
        "CALLWARD_KEYSTORE_PASSPHRASE": "pp",
        "CALLWARD_PHONE_PASSWORD": "alice-pw",
    }
    cmd = [*CALLWARD_CLI, "phone", "contacts", "--web", web, "--book", str(book),
           "--oauth-issuer", idp.issuer, "--keystore", str(keystore), "--oauth-user", "alice",
           "--totp-secret-file", str(seed), "--presence"]  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(web + "/api/v1/health", timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-500:]
            time.sleep(0.2)
        # bob says he is busy (through the same web, with his own token)
        otp = idp.totp("bob")
        token = httpx.post(f"{idp.issuer}/token", data={
            "grant_type": "password", "username": "bob", "password": "bob-pw", "otp": otp,
            "client_id": idp.client_id, "scope": "sip",
        }).json()["access_token"]  # fmt: skip
        r = httpx.put(web + "/api/v1/phone/presence", json={"status": "busy"},
                      headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert r.status_code == 204

        first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert first.returncode == 0, first.stderr
        out = json.loads(first.stdout)
        assert out["matches"] == {"Bob": "bob@acme.test", "Carol": "carol@acme.test"}
        assert out["evaluated"] == 3  # Bob, Carol, Mum; "not a number" is never looked up
        assert out["presence"] == {"bob@acme.test": "busy"}  # carol never published

        second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert second.returncode == 0, second.stderr
        again = json.loads(second.stdout)
        assert again["matches"] == out["matches"] and again["evaluated"] == 0
        assert again["bytes_in"] < 100  # the table came back as a bodiless 304
        for f in keystore.iterdir():  # sealed: no number, no AOR, no name in the clear
            blob = f.read_bytes()
            for secret in (b"4155550101", b"bob@acme", b"Carol", alice.totp_secret.encode()):
                assert secret not in blob, (f.name, secret)
    finally:
        stop(proc)
        idp.stop()
