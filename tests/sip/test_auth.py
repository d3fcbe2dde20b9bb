"""Digest authentication: RFC test vectors, stateless nonces, nc replay, and sipsak interop."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import AuthError, CallwardError
from callward.sip import Request, Response, make_response, parse_message
from callward.sip.auth import (
    AuthOutcome,
    Challenge,
    Credentials,
    DigestAlgorithm,
    DigestVerifier,
    NonceCounter,
    NonceSigner,
    NonceState,
    answer_challenge,
    authorize,
    digest_response,
    ha1,
    ha1_set,
)
from callward.sip.transaction import RequestReceived
from callward.sip.transaction_layer import TransactionLayer

A = DigestAlgorithm
SECRET = b"0123456789abcdef0123456789abcdef"


# ------------------------------------------------------------------ published vectors


def test_rfc2617_section_3_5_example() -> None:
    h = ha1(A.MD5, "Mufasa", "testrealm@host.com", "Circle Of Life")
    got = digest_response(
        A.MD5,
        h,
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert got == "6629fae49393a05397450978507c4ef1"  # RFC 2617 §3.5


@pytest.mark.parametrize(
    ("alg", "expected"),
    [
        (A.MD5, "8ca523f5e9506fed4657c9700eebdbec"),  # RFC 7616 §3.9.1
        (A.SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_example(alg: DigestAlgorithm, expected: str) -> None:
    challenge = Challenge.parse(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", '
        f"algorithm={alg.value}, "
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    creds = answer_challenge(
        challenge,
        username="Mufasa",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert creds.response == expected
    assert creds.qop == "auth" and creds.nc == "00000001"
    assert creds.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    again = Credentials.parse(str(creds))
    assert again == creds


def test_sess_and_auth_int_follow_the_rfc_formulas() -> None:
    """-sess and auth-int computed here straight from RFC 7616 §3.4.2/§3.4.3 with hashlib."""

    def sha(s: str | bytes) -> str:
        return hashlib.sha256(s.encode() if isinstance(s, str) else s).hexdigest()

    base = sha("bob:r:pw")
    sess = sha(f"{base}:N:C")
    ha2 = sha(f"INVITE:sip:x@y:{sha(b'v=0')}")
    want = sha(f"{sess}:N:00000002:C:auth-int:{ha2}")
    got = digest_response(
        A.SHA256_SESS,
        ha1(A.SHA256_SESS, "bob", "r", "pw"),
        nonce="N",
        method="INVITE",
        uri="sip:x@y",
        qop="auth-int",
        nc="00000002",
        cnonce="C",
        body=b"v=0",
    )
    assert got == want
    # RFC 2069 compatibility form (no qop): H(HA1:nonce:HA2).
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    assert digest_response(
        A.MD5, md5("bob:r:pw"), nonce="N", method="REGISTER", uri="sip:r"
    ) == md5(f"{md5('bob:r:pw')}:N:{md5('REGISTER:sip:r')}")
    sha512_256 = hashlib.new("sha512_256", b"bob:r:pw").hexdigest()
    assert ha1_set("bob", "r", "pw")["SHA-512-256"] == sha512_256
    with pytest.raises(AuthError):
        digest_response(A.MD5_SESS, "x", nonce="n", method="M", uri="u")
    with pytest.raises(AuthError):
        digest_response(A.MD5, "x", nonce="n", method="M", uri="u", qop="auth")
    with pytest.raises(AuthError):
        DigestAlgorithm.parse("SHA-1")


# ------------------------------------------------------------------ nonces


def test_nonce_signer_valid_stale_tampered() -> None:
    s = NonceSigner(SECRET, realm="r", ttl=30)
    n = s.issue(1000.0, bind="10.0.0.1")
    assert s.check(n, 1010.0, bind="10.0.0.1") is NonceState.VALID
    assert s.check(n, 1031.0, bind="10.0.0.1") is NonceState.STALE
    assert s.check(n, 1010.0, bind="10.0.0.2") is NonceState.INVALID  # bound elsewhere
    flipped = n[:5] + ("A" if n[5] != "A" else "B") + n[6:]
    assert s.check(flipped, 1010.0, bind="10.0.0.1") is NonceState.INVALID
    other = NonceSigner(b"another-secret-of-32-bytes......", realm="r", ttl=30)
    assert other.check(n, 1010.0, bind="10.0.0.1") is NonceState.INVALID
    assert s.check("short", 1010.0) is NonceState.INVALID
    assert s.check("!" * 43, 1010.0) is NonceState.INVALID
    assert s.check(n, 900.0, bind="10.0.0.1") is NonceState.INVALID  # issued in the future
    with pytest.raises(AuthError):
        NonceSigner(b"short")


def test_nonce_counter_replay_window() -> None:
    c = NonceCounter(capacity=2, window=8)
    assert c.accept("n", 1) and c.accept("n", 3)
    assert not c.accept("n", 1)  # replay
    assert c.accept("n", 2)  # late but new (UDP reordering)
    assert not c.accept("n", 2)
    assert c.accept("n", 20)
    assert not c.accept("n", 12)  # fell out of the 8-wide window
    assert c.accept("n", 13)
    assert not c.accept("n", 0)
    c.accept("a", 1)
    c.accept("b", 1)  # evicts "n" (capacity 2)
    assert c.accept("n", 1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 100), max_size=60), st.integers(1, 16))
def test_nonce_counter_matches_reference_model(counts: list[int], window: int) -> None:
    """Accept iff positive, never seen, and within ``window`` of the highest seen so far."""
    c = NonceCounter(window=window)
    seen: set[int] = set()
    top = 0
    for nc in counts:
        expected = nc > 0 and nc not in seen and nc > top - window
        assert c.accept("n", nc) is expected
        if expected:
            seen.add(nc)
            top = max(top, nc)


# ------------------------------------------------------------------ verifier


def register(uri: str = "sip:example.com", body: bytes = b"") -> Request:
    raw = (
        f"REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKr1\r\n"
        "Max-Forwards: 70\r\nTo: <sip:alice@example.com>\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\nCall-ID: reg1\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:alice@10.0.0.1>\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    return msg


STORE = {"alice": ha1_set("alice", "example.com", "wonderland")}


def lookup(user: str, realm: str, alg: DigestAlgorithm) -> str | None:
    return STORE.get(user, {}).get(alg.value)


def verifier(**kw: Any) -> DigestVerifier:
    return DigestVerifier("example.com", SECRET, lookup, **kw)


@pytest.mark.parametrize("alg", [A.SHA256, A.MD5, A.SHA256_SESS, A.SHA512_256, A.MD5_SESS])
def test_verify_round_trip(alg: DigestAlgorithm) -> None:
    v = verifier(algorithms=(alg,))
    req = register()
    assert v.verify(req, 0.0).outcome is AuthOutcome.MISSING
    challenge = v.challenge_response(req, 0.0, to_tag="x")
    assert challenge.status == 401
    authed = authorize(req, challenge, username="alice", password="wonderland")
    res = v.verify(authed, 1.0)
    assert res.ok and res.username == "alice"
    # Same nonce and nc again: a replay.
    again = v.verify(authed, 2.0)
    assert again.outcome is AuthOutcome.FAILED and "replay" in again.reason
    wrong = authorize(req, challenge, username="alice", password="nope")
    assert v.verify(wrong, 1.0).outcome is AuthOutcome.FAILED
    ghost = authorize(req, challenge, username="mallory", password="wonderland")
    assert v.verify(ghost, 1.0).outcome is AuthOutcome.FAILED


def test_client_picks_strongest_algorithm_and_proxy_headers() -> None:
    v = verifier(algorithms=(A.MD5, A.SHA256), proxy=True)
    req = register()
    resp = v.challenge_response(req, 0.0)
    assert resp.status == 407 and len(resp.headers.get_lines("Proxy-Authenticate")) == 2
    authed = authorize(req, resp, username="alice", password="wonderland")
    (line,) = authed.headers.get_lines("Proxy-Authorization")
    assert Credentials.parse(line).algorithm is A.SHA256
    assert v.verify(authed, 0.5).ok


def test_stale_nonce_only_with_the_right_password() -> None:
    v = verifier(nonce_ttl=30)
    req = register()
    ch = v.challenge_response(req, 0.0)
    good = authorize(req, ch, username="alice", password="wonderland")
    assert v.verify(good, 31.0).outcome is AuthOutcome.STALE
    bad = authorize(req, ch, username="alice", password="x")
    assert v.verify(bad, 31.0).outcome is AuthOutcome.FAILED
    stale = v.challenge_response(req, 31.0, stale=True)
    assert Challenge.parse(stale.headers.get_lines("WWW-Authenticate")[0]).stale


def test_auth_int_covers_the_body_and_uri_must_match() -> None:
    v = verifier(algorithms=(A.SHA256,))
    req = register(body=b"hello")
    ch = v.challenge_response(req, 0.0)
    authed = authorize(req, ch, username="alice", password="wonderland")
    (line,) = authed.headers.get_lines("Authorization")
    assert Credentials.parse(line).qop == "auth-int"
    tampered = authed.replace(body=b"HELLO")
    assert v.verify(tampered, 1.0).outcome is AuthOutcome.FAILED
    assert v.verify(authed, 1.0).ok
    other_uri = authed.replace(uri=register("sip:evil.example.com").uri)
    assert "Request-URI" in v.verify(other_uri, 1.0).reason
    assert verifier(algorithms=(A.SHA256,), check_uri=False).verify(other_uri, 1.0).ok


def test_digest_uri_compared_by_sip_equivalence() -> None:
    """§19.1.4: a client that writes the same URI differently (case of host) still matches."""
    v = verifier(algorithms=(A.MD5,))
    req = register("sip:EXAMPLE.com")
    nonce = v.signer.issue(0.0)
    ch = Challenge("example.com", nonce, A.MD5, ("auth",), v.opaque)
    for uri, ok in (("sip:example.com", True), ("sip:example.com:5060", False), ("<bad", False)):
        creds = answer_challenge(
            ch, username="alice", password="wonderland", method="REGISTER", uri=uri
        )
        got = v.verify(req.replace(headers=req.headers.append("Authorization", str(creds))), 1.0)
        assert got.ok is ok, uri


def test_verifier_rejections() -> None:
    v = verifier(algorithms=(A.MD5,))
    req = register()
    nonce = v.signer.issue(0.0)
    ch = Challenge("example.com", nonce, A.MD5, ("auth",), v.opaque)

    def with_creds(c: Credentials | str) -> Request:
        return req.replace(headers=req.headers.append("Authorization", str(c)))

    good = answer_challenge(
        ch, username="alice", password="wonderland", method="REGISTER", uri=str(req.uri)
    )
    cases = {
        "forged nonce": good.__class__(**{**_fields(good), "nonce": "A" * 43}),
        "opaque": good.__class__(**{**_fields(good), "opaque": "zzz"}),
        "qop": good.__class__(**{**_fields(good), "qop": "auth-conf"}),
        "nc": good.__class__(**{**_fields(good), "nc": "1"}),
        "cnonce": good.__class__(**{**_fields(good), "cnonce": ""}),
        "no qop": good.__class__(**{**_fields(good), "qop": None, "nc": None}),
        "algorithm": good.__class__(**{**_fields(good), "algorithm": A.SHA256}),
    }
    for name, creds in cases.items():
        res = v.verify(with_creds(creds), 1.0)
        assert res.outcome is AuthOutcome.FAILED, name
    assert v.verify(with_creds('Digest username="alice"'), 1.0).outcome is AuthOutcome.FAILED
    assert v.verify(with_creds("Basic YWxhZGRpbjpvcGVuc2VzYW1l"), 1.0).outcome is (
        AuthOutcome.FAILED
    )
    other_realm = Credentials(**{**_fields(good), "realm": "elsewhere"})
    assert v.verify(with_creds(other_realm), 1.0).outcome is AuthOutcome.MISSING
    assert v.verify(with_creds(good), 1.0).ok
    # RFC 2069 clients (no qop) when the policy allows them.
    lax = verifier(algorithms=(A.MD5,), require_qop=False)
    old = answer_challenge(
        Challenge("example.com", lax.signer.issue(0.0), A.MD5, ()),
        username="alice",
        password="wonderland",
        method="REGISTER",
        uri=str(req.uri),
    )
    assert old.qop is None and lax.verify(with_creds(old), 1.0).ok


def _fields(c: Credentials) -> dict[str, Any]:
    return {name: getattr(c, name) for name in Credentials.__slots__}


def test_authorize_without_usable_challenge() -> None:
    req = register()
    resp = make_response(req, 401, extra=[("WWW-Authenticate", 'Basic realm="x"')])
    with pytest.raises(AuthError):
        authorize(req, resp, username="a", password="b")
    with pytest.raises(AuthError):
        answer_challenge(Challenge("r", "n"), username="a", method="M", uri="u")
    with pytest.raises(AuthError):
        Challenge.parse('Digest realm="r"')


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_digest_header_parsing_never_crashes(text: str) -> None:
    for parse in (Challenge.parse, Credentials.parse):
        try:
            parse(text)
            parse("Digest " + text)
        except CallwardError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.text(max_size=60))
def test_fuzz_verifier_never_crashes(value: str, nonce: str) -> None:
    v = verifier()
    req = register()
    for line in (value, f'Digest username="a", realm="example.com", nonce="{nonce}", {value}'):
        try:
            headers = req.headers.append("Authorization", line)
        except CallwardError:
            continue
        res = v.verify(req.replace(headers=headers), 1.0)
        assert not res.ok
    v.signer.check(nonce, 1.0)


# ------------------------------------------------------------------ interop: sipsak


class _Registrar(asyncio.DatagramProtocol):
    """A tiny registrar: our transaction layer + our verifier, MD5 only (sipsak's limit)."""

    def __init__(self) -> None:
        store = {"alice": ha1_set("alice", "127.0.0.1", "s3cret")}
        self.verifier = DigestVerifier(
            "127.0.0.1",
            SECRET,
            lambda u, r, a: store.get(u, {}).get(a.value),
            algorithms=(A.MD5,),
        )
        self.layer = TransactionLayer()
        self.outcomes: list[AuthOutcome] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = asyncio.get_running_loop().time()
        try:
            msg = parse_message(data, strict=False)
            self.layer.receive(msg, now, peer=addr)
        except CallwardError:
            return
        while (ev := self.layer.next_event()) is not None:
            if not isinstance(ev, RequestReceived):
                continue
            req = ev.request
            resp: Response
            if req.method == "REGISTER":
                res = self.verifier.verify(req, now)
                self.outcomes.append(res.outcome)
                if res.ok:
                    contact = [("Contact", req.headers.get("Contact") or "*")]
                    resp = make_response(req, 200, to_tag="reg", extra=contact)
                else:
                    stale = res.outcome is AuthOutcome.STALE
                    resp = self.verifier.challenge_response(req, now, stale=stale, to_tag="reg")
            else:
                resp = make_response(req, 200, to_tag="reg")
            self.layer.send_response(ev.key, resp, now)
        assert self.transport is not None
        for t in self.layer.datagrams_to_send():
            self.transport.sendto(t.data, t.peer)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.interop
@pytest.mark.parametrize(("password", "ok"), [("s3cret", True), ("wrong", False)])
async def test_sipsak_registers_with_digest(password: str, ok: bool) -> None:
    if shutil.which("sipsak") is None:
        pytest.skip("why: sipsak not installed")
    loop = asyncio.get_running_loop()
    for _ in range(5):
        port = _free_udp_port()
        try:
            transport, proto = await loop.create_datagram_endpoint(
                _Registrar, local_addr=("127.0.0.1", port)
            )
            break
        except OSError:
            continue
    else:
        pytest.fail("no free UDP port")
    try:
        proc = await asyncio.create_subprocess_exec(
            "sipsak",
            "-U",
            "-a",
            password,
            "-u",
            "alice",
            "-s",
            f"sip:alice@127.0.0.1:{port}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    finally:
        transport.close()
    text = out.decode(errors="replace")
    if ok:
        assert proc.returncode == 0, text
        assert proto.outcomes[-1] is AuthOutcome.OK
    else:
        assert proc.returncode != 0, text
        assert AuthOutcome.OK not in proto.outcomes
        assert AuthOutcome.FAILED in proto.outcomes
