"""End to end: a phone registers with an OAuth access token (RFC 8898) from the local IdP
(benchmarks/oauth_idp.py) through ``callward edge`` as a separate process, then lives through:

1. a forced expiry: the IdP rotates its signing key and drops the old one, the edge refuses
   the token (401 + Bearer challenge), the phone refreshes once and registers again;
2. a 30 s IdP outage, longer than the token's life (stopped for real): the refresh REGISTER
   waits, nothing is sent with a dead token, the retries back off (a handful of attempts in
   30 s, not a storm), one refresh when the IdP is back;
3. a revoked subject in the identity directory: the very next REGISTER and INVITE get 403;
4. a revoked refresh-token family: refresh fails for good and the phone logs in again with its
   TOTP second factor (never with the password alone), then registers.

Every token the edge saw is checked against the send time: none had expired.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pyotp
import pytest

from callward.edge.directory import Identity, SqliteDirectory
from callward.ua.bearer_credentials import BearerCredentials
from callward.ua.phone import Phone
from callward.ua.registration_agent import RegistrationAgent
from callward.ua.token_refresh import RefreshPolicy
from callward.ua.tokens import Login, OAuthClient, TokenSource
from oauth_idp import LocalIdP
from peers import callward_edge, free_port

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]
REALM = "callward.local"


def _exp(token: str) -> float:
    part = token.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["exp"])


async def _until(cond: Any, timeout: float, sent: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"not reached: {[s[:2] for s in sent or ()]}"
        await asyncio.sleep(0.05)


async def test_bearer_registration_through_callward_edge(tmp_path: Path) -> None:
    idp = LocalIdP(access_ttl=4.0).start()
    alice = idp.add_user("alice", "alice-password")
    bob = idp.add_user("bob", "bob-password")
    data = tmp_path / "var"
    directory = SqliteDirectory(data / "identity.sqlite")
    directory.put(Identity(alice.subject, f"alice@{REALM}", "+14155550100"))
    directory.put(Identity(bob.subject, f"bob@{REALM}", "+14155550101"))
    port = free_port()
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
  jwks_refetch: 0.5
  jwks_max_age: 1
"""
    sent: list[tuple[str, int, float, str | None, str]] = []

    def source(user: str, password: str, secret: str) -> TokenSource:
        async def totp() -> str:
            return pyotp.TOTP(secret).now()

        return TokenSource(
            OAuthClient(f"{idp.issuer}/token", idp.client_id, "sip"),
            login=Login(user, password, totp),
            policy=RefreshPolicy(ahead=0.25, skew=0.5, backoff_base=0.3, backoff_cap=4.0),
        )

    try:
        with callward_edge(tmp_path, config=config):
            edge = ("127.0.0.1", port)
            phone = await Phone.start("alice", transport="udp")
            callee = await Phone.start("bob", transport="udp", auto_answer=True)
            orig = phone.request

            async def recording(req: Any, dest: Any, **kw: Any) -> Any:
                auth = req.headers.get("Authorization") or req.headers.get("Proxy-Authorization")
                resp = await orig(req, dest, **kw)
                sent.append((req.method, resp.status, time.time(), auth, resp.reason))
                return resp

            phone.request = recording  # type: ignore[method-assign]
            tokens = source("alice", "alice-password", alice.totp_secret)
            bob_tokens = source("bob", "bob-password", bob.totp_secret)
            agent = await RegistrationAgent.start(
                phone, [edge], domain=REALM, expires=120,
                credentials=BearerCredentials(tokens), keepalive=False,
            )  # fmt: skip
            bob_agent = await RegistrationAgent.start(
                callee, [edge], domain=REALM, expires=120,
                credentials=BearerCredentials(bob_tokens), keepalive=False,
            )  # fmt: skip
            await agent.wait_registered(20)
            await bob_agent.wait_registered(20)
            assert sent[-1][:2] == ("REGISTER", 200) and sent[-1][3].startswith("Bearer ey")
            assert tokens.logins == 1 and len(sent) == 1  # token sent at once: no 401 round trip

            # the token also carries the call (Proxy-Authorization on the INVITE)
            call = await phone.call(f"sip:bob@{REALM}", dest=edge)
            assert call.status == 200, [(s[0], s[1], s[4]) for s in sent]
            assert sent[-1][0] == "INVITE" and sent[-1][3].startswith("Bearer ey")
            assert await call.hangup() == 200

            # 1. forced expiry: the signing key is rotated out (emergency rotation); once the
            # edge's JWKS cache is older than jwks_max_age it refetches, and the old token dies
            idp.rotate_keys(keep_old=False)
            await asyncio.sleep(1.1)
            refreshes = idp.stats.refreshes_by.get(alice.subject, 0)
            n = len(sent)
            agent.refresh()
            await _until(lambda: len(sent) >= n + 2 and sent[-1][1] == 200, 20, sent)
            assert [s[1] for s in sent[n:]] == [401, 200]
            assert idp.stats.refreshes_by[alice.subject] == refreshes + 1

            # 2. a 30 s outage: the IdP is gone for much longer than a token lives
            idp.stop()
            down_at = time.monotonic()
            await asyncio.sleep(4.6)  # the token is dead now (4 s life)
            n = len(sent)
            attempts = tokens.client.requests
            agent.refresh()
            waiters = [asyncio.ensure_future(tokens.access_token(timeout=60)) for _ in range(10)]
            await asyncio.sleep(1.0)
            assert len(sent) == n  # the REGISTER waits for a live token
            await asyncio.sleep(30.0 - (time.monotonic() - down_at))
            assert len(sent) == n  # still waiting, 30 s into the outage
            attempts = tokens.client.requests - attempts
            # backoff with jitter (cap 4 s here): a handful of attempts, whatever the waiters
            assert 3 <= attempts <= 15, attempts
            refreshes = idp.stats.refreshes_by.get(alice.subject, 0)
            idp.start()
            await _until(lambda: len(sent) > n and sent[-1][1] == 200, 25, sent)
            assert len({await w for w in waiters}) == 1  # ten waiters, one new token
            assert idp.stats.refreshes_by[alice.subject] - refreshes == 1  # one, not a storm
            assert idp.stats.reuse_detected == 0

            # 3. revoked subject: refused on the next request, whatever the token says
            directory.revoke(alice.subject)
            n = len(sent)
            agent.refresh()
            await _until(lambda: len(sent) > n, 20, sent)
            assert sent[-1][:2] == ("REGISTER", 403)
            refused = await phone.call(f"sip:bob@{REALM}", dest=edge)
            assert refused.status == 403
            directory.revoke(alice.subject, revoked=False)

            # 4. the refresh-token family is revoked at the IdP: TOTP login, then registered
            for rec in list(idp.refresh_tokens.values()):
                if rec.user.subject == alice.subject:
                    idp.revoke_family(rec.family)
            idp.rotate_keys(keep_old=False)  # and the access token stops working
            await asyncio.sleep(1.1)
            n = len(sent)
            agent.refresh()
            await _until(lambda: len(sent) >= n + 2 and sent[-1][1] == 200, 25, sent)
            assert tokens.logins == 2 and idp.stats.logins >= 3  # alice twice, bob once

            # no request ever carried an expired token
            for method, _, at, auth, _ in sent:
                if auth and auth.startswith("Bearer "):
                    assert _exp(auth[7:]) > at, f"{method} sent with an expired token"
            agent.close()
            bob_agent.close()
            await tokens.aclose()
            await bob_tokens.aclose()
            await phone.close()
            await callee.close()
    finally:
        idp.stop()
        directory.close()
