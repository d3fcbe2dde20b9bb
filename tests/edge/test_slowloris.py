"""Slowloris against a running edge (``callward edge`` with TCP and TLS listeners, auth on):
attackers on 127.0.0.2-127.0.0.21 open hundreds of connections that trickle one byte at a
time or never start the TLS handshake, while an honest phone on TCP and another on TLS
(127.0.0.1) register with digest and complete a call through the edge. The attack is refused
at the per-address caps, evicted from the bounded pending pool, or closed by the deadlines,
and the rejections are counted in the edge's metrics. Ports 27010-27011 (safe15's block)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import re
import ssl
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from callward.config import CallwardConfig, EdgeConfig
from callward.edge.app import EdgeNode
from callward.edge.subscribers import SqliteSubscribers, Subscriber
from callward.sip import Request, Response, parse_message

pytestmark = pytest.mark.timeout(90)

TCP_PORT, TLS_PORT = 27010, 27011
REALM = "callward.local"


def _cert(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "edge.pem", tmp / "edge.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _digest(chal: str, user: str, password: str, uri: str, method: str) -> str:
    """RFC 7616 client side (MD5, qop=auth), written here with hashlib."""
    params = {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', chal)}

    def h(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = h(f"{user}:{params['realm']}:{password}")
    resp = h(f"{ha1}:{params['nonce']}:00000001:c0:auth:{h(f'{method}:{uri}')}")
    return (
        f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
        f'uri="{uri}", response="{resp}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0"'
    )


class StreamPhone:
    """A SIP phone on one TCP or TLS connection, written with asyncio streams."""

    def __init__(self, user: str, transport: str) -> None:
        self.user, self.transport = user, transport
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.port = 0

    async def connect(self, port: int, ctx: ssl.SSLContext | None) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, local_addr=("127.0.0.1", 0)
        )
        self.port = self.writer.get_extra_info("sockname")[1]

    def send(self, text: str) -> None:
        assert self.writer is not None
        self.writer.write(text.replace("\n", "\r\n").encode())

    async def read(self, timeout: float = 5.0) -> Request | Response:
        assert self.reader is not None
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        m = re.search(rb"(?im)^(?:Content-Length|l)\s*:\s*(\d+)", head)
        body = await self.reader.readexactly(int(m.group(1))) if m else b""
        return parse_message(head + body)

    async def expect(self, pred, timeout: float = 5.0) -> Request | Response:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.read(timeout)
                if pred(msg):
                    return msg

    def request(
        self, method: str, uri: str, *, to: str, call_id: str, cseq: int, extra: str = ""
    ) -> str:
        t = self.transport.upper()
        return (
            f"{method} {uri} SIP/2.0\n"
            f"Via: SIP/2.0/{t} 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\n"
            f"Max-Forwards: 70\nFrom: <sip:{self.user}@{REALM}>;tag=t{self.user}\nTo: <{to}>\n"
            f"Call-ID: {call_id}\nCSeq: {cseq} {method}\n"
            f"Contact: <sip:{self.user}@127.0.0.1:{self.port};transport={self.transport}>\n"
            f"{extra}Content-Length: 0\n\n"
        )

    async def register(self) -> None:
        uri = f"sip:{REALM}"
        to = f"sip:{self.user}@{REALM}"
        cid = f"reg-{self.user}"
        self.send(self.request("REGISTER", uri, to=to, call_id=cid, cseq=1, extra="Expires: 600\n"))
        chal = await self.expect(lambda m: isinstance(m, Response) and m.status >= 200)
        assert isinstance(chal, Response) and chal.status == 401
        auth = _digest(chal.headers.get("WWW-Authenticate") or "", self.user, "pw-" + self.user,
                       uri, "REGISTER")  # fmt: skip
        self.send(self.request("REGISTER", uri, to=to, call_id=cid, cseq=2,
                               extra=f"Expires: 600\nAuthorization: {auth}\n"))  # fmt: skip
        ok = await self.expect(lambda m: isinstance(m, Response) and m.status >= 200)
        assert isinstance(ok, Response) and ok.status == 200, ok

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _answer(req: Request, status: int) -> str:
    lines = [f"SIP/2.0 {status} OK"]
    for name, value in req.headers:
        if name in ("Via", "From", "Call-ID", "CSeq", "Record-Route"):
            lines.append(f"{name}: {value}")
        elif name == "To":
            lines.append(f"To: {value};tag=callee")
    lines.append("Content-Length: 0")
    return "\n".join(lines) + "\n\n"


async def _call(alice: StreamPhone, bob: StreamPhone) -> None:
    """alice (digest-authenticated) calls bob through the edge; bob answers 200."""
    uri, cid = f"sip:bob@{REALM}", f"call-{uuid.uuid4().hex[:8]}"
    alice.send(alice.request("INVITE", uri, to=uri, call_id=cid, cseq=1))
    chal = await alice.expect(lambda m: isinstance(m, Response) and m.status >= 200)
    assert isinstance(chal, Response) and chal.status == 407
    auth = _digest(chal.headers.get("Proxy-Authenticate") or "", "alice", "pw-alice", uri,
                   "INVITE")  # fmt: skip
    alice.send(alice.request("INVITE", uri, to=uri, call_id=cid, cseq=2,
                             extra=f"Proxy-Authorization: {auth}\n"))  # fmt: skip
    inv = await bob.expect(lambda m: isinstance(m, Request) and m.method == "INVITE", 8)
    assert isinstance(inv, Request)
    bob.send(_answer(inv, 200))
    final = await alice.expect(lambda m: isinstance(m, Response) and m.status >= 200, 8)
    assert isinstance(final, Response) and final.status == 200


async def _slow(ip: str, port: int, stop: asyncio.Event, *, tls_silent: bool) -> int:
    """One attacking connection: never a ClientHello (``tls_silent``), or one byte of a REGISTER
    every 0.25 s. Returns 1 when the edge closed it (refused, evicted or timed out)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0))
    except OSError:
        return 1
    payload = b"REGISTER sip:callward.local SIP/2.0\r\nVia: SIP/2.0/TCP " + b"x" * 400
    try:
        for byte in payload:
            if stop.is_set():
                return 0
            if reader.at_eof():
                return 1
            if not tls_silent:
                writer.write(bytes([byte]))
                await writer.drain()
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1), 0.25) == b"":
                    return 1
        return 0
    except (ConnectionError, OSError):
        return 1
    finally:
        writer.close()


async def test_slowloris_from_many_addresses_does_not_lock_out_tcp_and_tls_phones(
    tmp_path: Path,
) -> None:
    cert, key = _cert(tmp_path)
    subs = SqliteSubscribers(":memory:")
    for user in ("alice", "bob"):
        subs.put(Subscriber.from_password(user, REALM, "pw-" + user))
    cfg = CallwardConfig(
        edge=EdgeConfig(
            listen=[f"tcp:127.0.0.1:{TCP_PORT}", f"tls:127.0.0.1:{TLS_PORT}"],
            tls_cert=str(cert),
            tls_key=str(key),
            max_pending_per_ip=8,
            max_pending=64,
            handshake_timeout=1.0,
            first_message_timeout=1.5,
            message_timeout=1.5,
        )
    )
    node = EdgeNode(cfg, subscribers=subs)
    await node.start()
    stop = asyncio.Event()
    attack: list[asyncio.Future[int]] = []
    bob, alice = StreamPhone("bob", "tcp"), StreamPhone("alice", "tls")
    try:
        # 20 addresses x 15 connections on each listener = 600 slow connections, against
        # pending caps of 8 per address and 64 in all.
        for i in range(2, 22):
            for _ in range(15):
                attack.append(asyncio.ensure_future(
                    _slow(f"127.0.0.{i}", TCP_PORT, stop, tls_silent=False)))  # fmt: skip
                attack.append(asyncio.ensure_future(
                    _slow(f"127.0.0.{i}", TLS_PORT, stop, tls_silent=True)))  # fmt: skip
        await asyncio.sleep(0.5)  # the attack is in place
        await bob.connect(TCP_PORT, None)
        client = ssl.create_default_context(cafile=str(cert))
        await alice.connect(TLS_PORT, client)
        await bob.register()
        await alice.register()
        await _call(alice, bob)
        # Every attacking connection ends within the deadlines (1.5 s) plus slack.
        closed = await asyncio.wait_for(asyncio.gather(*attack), 20)
        assert sum(closed) == len(attack)
        tcp = node.server.transports["tcp"][0]
        tls = node.server.transports["tls"][0]
        assert tcp.stats.rejected_connections + tcp.stats.closed_abusive >= 300
        assert tls.stats.rejected_connections > 0 and tls.stats.handshake_failures > 0
        assert tls.guard.pending == 0 and tcp.guard.pending == 0
        # The honest phones are still connected after the attack and can call again.
        await _call(alice, bob)
        rejects = {
            s.labels["reason"]: s.value
            for m in node.metrics.registry.collect()
            for s in m.samples
            if "reason" in s.labels
        }
        assert rejects.get("ip-pending-limit", 0) > 0 and rejects.get("tls-handshake", 0) > 0
    finally:
        stop.set()
        for f in attack:
            f.cancel()
        bob.close()
        alice.close()
        await node.stop()
