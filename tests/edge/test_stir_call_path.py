"""STIR/SHAKEN in the edge's call path over real UDP sockets (edge/stir.py).

Edge A (originating, holds the signing key) authenticates a subscriber and relays the call to
edge B (terminating, trusts A by address, holds the STI-CA root). A signs the INVITE (ES256
PASSporT, attestation A for a number of the tenant's range, B otherwise); B fetches the
certificate from a loopback HTTP server (a plain asyncio server here, not our code), verifies
it and marks ``verstat`` on the From URI toward the callee. A "trunk" B trusts then sends
forged, stale, unsigned and spoofed-verstat INVITEs: each reaches the callee marked failed or
unvalidated, and with ``stir_reject_failed`` a forgery is answered 438 and not forwarded.
Ports 27040-27049 (safe15's block)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import socket
import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from callward.config import CallwardConfig, EdgeConfig, SecurityConfig
from callward.edge.app import EdgeNode
from callward.edge.subscribers import SqliteSubscribers, Subscriber
from callward.sip import Request, Response, parse_message
from callward.sip.passport import b64url_decode, sign_passport

pytestmark = pytest.mark.timeout(60)

HTTP, A_PORT, B_PORT, UAS_PORT, TRUNK_PORT = 27041, 27043, 27044, 27045, 27046
X5U = f"http://127.0.0.1:{HTTP}/sti.pem"
CALLEE = "+12125550100"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer, *, ca: bool) -> x509.Certificate:  # type: ignore[no-untyped-def]
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


class Pki:
    def __init__(self, tmp: Path) -> None:
        root_key = ec.generate_private_key(ec.SECP256R1())
        inter_key = ec.generate_private_key(ec.SECP256R1())
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.root = _cert("STI-CA Root", root_key, None, ca=True)
        inter = _cert("STI-CA Intermediate", inter_key, ("STI-CA Root", root_key), ca=True)
        leaf = _cert("SP callward", self.key, ("STI-CA Intermediate", inter_key), ca=False)
        pem = serialization.Encoding.PEM
        self.bundle = leaf.public_bytes(pem) + inter.public_bytes(pem)
        self.root_path = tmp / "sti-root.pem"
        self.root_path.write_bytes(self.root.public_bytes(pem))
        self.key_path = tmp / "sti.key"
        self.key_path.write_bytes(
            self.key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


async def _http(bundle: bytes, hits: list[str]) -> asyncio.Server:
    """A minimal HTTP/1.0 server for the certificate (the STI-CR stand-in)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ")[1].decode()
        hits.append(path)
        body, status = (bundle, b"200 OK") if path == "/sti.pem" else (b"", b"404 Not Found")
        writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: application/x-pem-file\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)  # fmt: skip
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", HTTP)


def _udp(port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.setblocking(False)
    return s


async def _recv(sock: socket.socket, pred, timeout: float = 8.0):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            msg = parse_message(await loop.sock_recv(sock, 65536))
            if pred(msg):
                return msg


def _invite(port: int, frm: str, *, cseq: int = 1, call_id: str, extra: str = "") -> bytes:
    return (
        f"INVITE sip:{CALLEE}@carrier.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <{frm}>;tag=a\r\nTo: <sip:{CALLEE}@carrier.example>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:c@127.0.0.1:{port}>\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def _digest(chal: str, user: str, password: str, uri: str) -> str:
    params = {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', chal)}

    def h(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = h(f"{user}:{params['realm']}:{password}")
    resp = h(f"{ha1}:{params['nonce']}:00000001:c0:auth:{h(f'INVITE:{uri}')}")
    return (
        f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
        f'uri="{uri}", response="{resp}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0"'
    )


def _claims(inv: Request) -> dict[str, object]:
    token = (inv.headers.get("Identity") or "").split(";")[0]
    return json.loads(b64url_decode(token.split(".")[1]))  # type: ignore[no-any-return]


def _verstat(inv: Request) -> str:
    m = re.search(r"verstat=([\w-]+)", inv.headers.get("From") or "")
    return m.group(1) if m else ""


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def _edges(pki: Pki, *, reject_failed: bool = False) -> tuple[EdgeNode, EdgeNode]:
    subs = SqliteSubscribers(":memory:")
    for user in ("+12125551000", "+13105550000"):
        subs.put(Subscriber.from_password(user, "callward.local", "pw"))
    a = EdgeNode(
        CallwardConfig(
            edge=EdgeConfig(
                listen=[f"udp:127.0.0.1:{A_PORT}"],
                node_id="edge-a",
                upstreams=[f"sip:127.0.0.1:{B_PORT}"],
            ),
            security=SecurityConfig(
                stir_sign_key=str(pki.key_path),
                stir_x5u=X5U,
                stir_tenant_numbers={"default": ["+1212555"]},
            ),
        ),
        subscribers=subs,
    )
    b = EdgeNode(
        CallwardConfig(
            edge=EdgeConfig(
                listen=[f"udp:127.0.0.1:{B_PORT}"],
                node_id="edge-b",
                domains=["carrier.example"],
                routes={CALLEE: f"sip:callee@127.0.0.1:{UAS_PORT}"},
                trusted=[f"127.0.0.1:{A_PORT}", f"127.0.0.1:{TRUNK_PORT}"],
            ),
            security=SecurityConfig(
                stir_roots=[str(pki.root_path)],
                stir_x5u_prefixes=[f"http://127.0.0.1:{HTTP}/"],
                stir_reject_failed=reject_failed,
            ),
        ),
        subscribers=SqliteSubscribers(":memory:"),
    )
    return a, b


async def test_originating_edge_signs_and_terminating_edge_verifies(pki: Pki) -> None:
    hits: list[str] = []
    http = await _http(pki.bundle, hits)
    a, b = _edges(pki)
    await a.start()
    await b.start()
    caller, uas, trunk = _udp(), _udp(UAS_PORT), _udp(TRUNK_PORT)
    loop = asyncio.get_running_loop()
    port = caller.getsockname()[1]
    uri = f"sip:{CALLEE}@carrier.example"
    try:
        for user, attest, cid in (("+12125551000", "A", "own"), ("+13105550000", "B", "foreign")):
            frm = f"sip:{user}@callward.local"
            await loop.sock_sendto(caller, _invite(port, frm, call_id=cid), ("127.0.0.1", A_PORT))
            chal = await _recv(caller, lambda m: isinstance(m, Response) and m.status >= 200)
            assert chal.status == 407
            auth = _digest(chal.headers.get("Proxy-Authenticate") or "", user, "pw", uri)
            await loop.sock_sendto(
                caller,
                _invite(port, frm, cseq=2, call_id=cid, extra=f"Proxy-Authorization: {auth}\r\n"),
                ("127.0.0.1", A_PORT),
            )
            inv = await _recv(uas, lambda m: isinstance(m, Request) and m.method == "INVITE")
            assert _verstat(inv) == "TN-Validation-Passed", inv.headers.get("From")
            claims = _claims(inv)
            assert claims["attest"] == attest
            assert claims["orig"] == {"tn": user.lstrip("+")}
            assert claims["dest"] == {"tn": [CALLEE.lstrip("+")]}
            assert f"info=<{X5U}>" in (inv.headers.get("Identity") or "")
        assert hits == ["/sti.pem"]  # fetched once, then cached
        assert a.core.stir is not None and a.core.stir.signed == 2

        # A trusted "trunk" sends to B directly: forged orig, stale iat, no Identity, spoofed
        # verstat. None of them reaches the callee as validated.
        tport = trunk.getsockname()[1]
        now = int(time.time())

        def token(orig: str, iat: int) -> str:
            t = sign_passport(pki.key, x5u=X5U, orig_tn=orig, dest_tns=[CALLEE.lstrip("+")],
                              iat=iat, attest="A", origid="o-1")  # fmt: skip
            return f"Identity: {t};info=<{X5U}>;alg=ES256;ppt=shaken\r\n"

        cases = [
            ("forged", "sip:+12125559999@trunk.example", token("12125551000", now),
             "TN-Validation-Failed"),
            ("stale", "sip:+12125551000@trunk.example", token("12125551000", now - 600),
             "TN-Validation-Failed"),
            ("good", "sip:+12125551000@trunk.example", token("12125551000", now),
             "TN-Validation-Passed"),
            ("unsigned", "sip:+12125551000@trunk.example", "", "No-TN-Validation"),
            ("spoofed", "sip:+12125551000@trunk.example;verstat=TN-Validation-Passed", "",
             "No-TN-Validation"),
        ]  # fmt: skip
        for cid, frm, ident, expected in cases:
            await loop.sock_sendto(trunk, _invite(tport, frm, call_id=cid, extra=ident),
                                   ("127.0.0.1", B_PORT))  # fmt: skip
            inv = await _recv(uas, lambda m, c=cid: isinstance(m, Request) and m.call_id == c)
            assert _verstat(inv) == expected, (cid, inv.headers.get("From"))
        assert b.core.stir is not None
        assert b.core.stir.verified == {
            "TN-Validation-Passed": 3, "TN-Validation-Failed": 2, "No-TN-Validation": 2,
        }  # fmt: skip
    finally:
        for s in (caller, uas, trunk):
            s.close()
        await a.stop()
        await b.stop()
        http.close()
        await http.wait_closed()


async def test_reject_failed_answers_438_and_forwards_nothing(pki: Pki) -> None:
    hits: list[str] = []
    http = await _http(pki.bundle, hits)
    _, b = _edges(pki, reject_failed=True)
    await b.start()
    uas, trunk = _udp(UAS_PORT), _udp(TRUNK_PORT)
    loop = asyncio.get_running_loop()
    try:
        t = sign_passport(pki.key, x5u=X5U, orig_tn="12125551000", dest_tns=["19995550000"],
                          iat=int(time.time()), attest="A", origid="o-2")  # fmt: skip
        ident = f"Identity: {t};info=<{X5U}>;alg=ES256;ppt=shaken\r\n"  # dest is not the callee
        await loop.sock_sendto(
            trunk,
            _invite(TRUNK_PORT, "sip:+12125551000@trunk.example", call_id="rej", extra=ident),
            ("127.0.0.1", B_PORT),
        )
        final = await _recv(trunk, lambda m: isinstance(m, Response) and m.status >= 200)
        assert final.status == 438
        with pytest.raises(TimeoutError):
            await _recv(uas, lambda m: isinstance(m, Request), timeout=0.5)
        assert b.metrics.rejected.labels("stir")._value.get() == 1
    finally:
        uas.close()
        trunk.close()
        await b.stop()
        http.close()
        await http.wait_closed()
