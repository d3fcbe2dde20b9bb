"""``callward phone`` with OAuth 2.0 (RFC 8898) end to end, every piece a separate process:
the local IdP (benchmarks/oauth_idp.py, authlib) on loopback, ``callward edge`` validating JWTs
against its JWKS, and ``callward phone login|answer|call`` from the command line.

1. bob answers with a headless login: password + TOTP seed file (``--totp-secret-file``);
2. alice signs in through a "browser" (authorization code + PKCE, loopback redirect): the
   tokens land in her encrypted keystore, and no token or password is in it in the clear;
3. alice calls bob with the stored tokens only. Her access token has expired meanwhile: the
   phone refreshes once before the REGISTER (never sends a dead token) and the call is
   answered. The edge has *no* digest subscriber for alice or bob: only Bearer can pass;
4. the IdP revokes alice's refresh-token family: the phone without a second factor stops with
   one line (exit 1) and sends nothing weaker; with ``--totp-secret-file`` it logs in again
   (2FA fallback) and the call goes through.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from callward.edge.directory import Identity, SqliteDirectory
from oauth_idp import LocalIdP
from oauth_idp_authcode import browser_sign_in
from peers import CALLWARD_CLI, callward_edge, free_port, stop

pytestmark = [pytest.mark.interop, pytest.mark.timeout(170)]
REALM = "callward.local"
PORTS = (26000, 26999)  # identity14's block (notes/COORD.md)


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while text not in (content := path.read_text()):
        assert proc.poll() is None, f"exited {proc.returncode}: {content[-600:]}"
        assert time.monotonic() < deadline, content[-600:]
        time.sleep(0.1)
    return content


def test_cli_phone_with_oauth_through_callward_edge(tmp_path: Path) -> None:
    idp = LocalIdP(access_ttl=4.0).start()
    alice = idp.add_user("alice", "alice-password")
    bob = idp.add_user("bob", "bob-password")
    data = tmp_path / "var"
    directory = SqliteDirectory(data / "identity.sqlite")
    directory.put(Identity(alice.subject, f"alice@{REALM}", "+14155550100"))
    directory.put(Identity(bob.subject, f"bob@{REALM}", "+14155550101"))
    directory.close()
    port, bob_port = free_port(PORTS), free_port(PORTS)
    config = f"""
storage: {{data_dir: {data}}}
edge:
  listen: ["udp:127.0.0.1:{port}"]
  realm: {REALM}
  domains: [{REALM}]
  subscribers: "sqlite:{tmp_path / "subs.sqlite"}"
  auth_secret: "{"s" * 32}"
identity:
  issuer: "{idp.issuer}"
  audience: "{idp.audience}"
  leeway: 1
"""
    edge = f"127.0.0.1:{port}"
    oauth = ["--oauth-issuer", idp.issuer, "--client-id", idp.client_id]
    keystore = tmp_path / "alice-keystore"
    env = {**os.environ, "CALLWARD_KEYSTORE_PASSPHRASE": "correct horse battery staple"}
    env.pop("CALLWARD_PHONE_PASSWORD", None)
    seeds = {}
    for user in (alice, bob):
        seeds[user.username] = tmp_path / f"{user.username}.totp"
        seeds[user.username].write_text(user.totp_secret + "\n")
        seeds[user.username].chmod(0o600)
    bob_log = tmp_path / "bob.log"
    try:
        with callward_edge(tmp_path, config=config):
            # 1. bob: headless login with his second factor, answers two calls
            with bob_log.open("w") as fh:
                bob_proc = subprocess.Popen(
                    [*CALLWARD_CLI, "phone", "answer", "--listen", f"127.0.0.1:{bob_port}",
                     "--user", "bob", "--register", "--proxy", edge, "--domain", REALM,
                     *oauth, "--totp-secret-file", str(seeds["bob"]), "--calls", "2",
                     "--timeout", "120", "--json"],
                    stdout=fh, stderr=subprocess.STDOUT,
                    env={**env, "CALLWARD_PHONE_PASSWORD": "bob-password"},
                )  # fmt: skip
            try:
                _wait_for(bob_log, "answering on", bob_proc)

                # 2. alice: browser sign-in (PKCE); the test plays the browser and the user
                login = subprocess.Popen(
                    [*CALLWARD_CLI, "phone", "login", *oauth, "--keystore", str(keystore),
                     "--timeout", "60"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                )  # fmt: skip
                assert login.stderr is not None
                line = login.stderr.readline()
                assert "open this URL" in line, line
                url = line.split("sign in: ", 1)[1].strip()
                assert "code_challenge_method=S256" in url
                assert browser_sign_in(url, "alice", "alice-password", idp.totp("alice")) == 200
                out, err = login.communicate(timeout=60)
                assert login.returncode == 0, err
                assert json.loads(out)["signed_in"] is True
                assert idp.stats.code_exchanges == 1
                secrets_in_clear = [b"alice-password", alice.totp_secret.encode()] + [
                    t.encode() for t, r in idp.refresh_tokens.items() if r.user is alice
                ]
                for f in keystore.iterdir():
                    blob = f.read_bytes()
                    assert not any(s in blob for s in secrets_in_clear), f.name
                    assert b"eyJ" not in blob, f.name  # no JWT (access token) either

                # 3. a call with the stored tokens only; the access token is dead by now
                time.sleep(4.5)
                logins = idp.stats.logins
                call = [*CALLWARD_CLI, "phone", "call", f"sip:bob@{REALM}", "--user", "alice",
                        "--proxy", edge, "--domain", REALM, "--register", *oauth,
                        "--keystore", str(keystore),
                        "--seconds", "0.5", "--timeout", "30", "--json"]  # fmt: skip
                done = subprocess.run(call, capture_output=True, text=True, env=env, timeout=90)
                assert done.returncode == 0, done.stderr
                result = json.loads(done.stdout)
                assert result["register_status"] == 200 and result["status"] == 200
                assert result["auth"] == "bearer" and result["token_logins"] == 0
                assert result["token_refreshes"] == 1
                assert idp.stats.refreshes_by[alice.subject] == 1
                assert idp.stats.logins == logins and idp.stats.reuse_detected == 0

                # 4. the family is revoked at the IdP: no second factor, no call
                for rec in list(idp.refresh_tokens.values()):
                    if rec.user is alice:
                        idp.revoke_family(rec.family)
                time.sleep(4.5)  # and the access token is dead
                refused = subprocess.run(call, capture_output=True, text=True, env=env,
                                         timeout=90)  # fmt: skip
                assert refused.returncode == 1, refused.stderr
                assert "second factor" in refused.stderr
                assert len(refused.stderr.strip().splitlines()) == 1
                assert idp.stats.logins == logins
                # with the TOTP seed the phone logs in again (password + code) and calls
                again = subprocess.run(
                    [*call, "--totp-secret-file", str(seeds["alice"])], capture_output=True,
                    text=True, env={**env, "CALLWARD_PHONE_PASSWORD": "alice-password"},
                    timeout=90,
                )  # fmt: skip
                assert again.returncode == 0, again.stderr
                result = json.loads(again.stdout)
                assert result["status"] == 200 and result["token_logins"] == 1
                assert idp.stats.logins == logins + 1

                bob_proc.wait(60)
                answered = json.loads(bob_log.read_text().split("\n", 1)[1])
                assert [a["status"] for a in answered["answered"]] == [200, 200]
                assert answered["auth"] == "bearer" and answered["token_logins"] == 1
            finally:
                stop(bob_proc)
    finally:
        idp.stop()
