"""Slowloris against the stream transports over loopback: attackers on 127.0.0.x addresses hold
connections open (never a complete message, one byte at a time, or a TLS handshake never
started) while an honest client on 127.0.0.1 is still served; every attacking connection is
refused at the per-address cap, evicted, or closed by a deadline (sip/connection_guard.py)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect

from callward.sip import Request, Response
from callward.sip.transport import TcpTransport, TlsTransport, TransportLimits, WsTransport

pytestmark = pytest.mark.timeout(60)

OPTIONS = (
    b"OPTIONS sip:edge SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-{n}\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c{n}\r\n"
    b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)

LIMITS = TransportLimits(
    max_connections_per_ip=64,
    max_pending_per_ip=4,
    max_pending=64,
    connect_timeout=0.6,
    first_message_timeout=0.8,
    message_timeout=0.8,
    idle_timeout=30.0,
)


def _options(n: int) -> bytes:
    return OPTIONS.replace(b"{n}", str(n).encode())


class Echo:
    """Answers every request with its branch so the client can match (a UAS stand-in)."""

    def __init__(self) -> None:
        self.t: TcpTransport | TlsTransport | WsTransport | None = None
        self.seen: list[str] = []

    def __call__(
        self, msg: Request | Response, src: tuple[str, int], name: str, cid: str | None
    ) -> None:
        assert isinstance(msg, Request)
        self.seen.append(msg.top_via.branch)


async def _open_from(
    ip: str, addr: tuple[str, int]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*addr, local_addr=(ip, 0))


async def _closed(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the server closes (EOF or reset) within ``within`` seconds."""
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False


async def _send_and_wait(writer: asyncio.StreamWriter, sink: Echo, n: int) -> None:
    writer.write(_options(n))
    await writer.drain()
    for _ in range(100):
        if f"z9hG4bK-{n}" in sink.seen:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"message {n} not delivered")


async def test_tcp_slow_connections_are_capped_and_closed_while_a_client_is_served() -> None:
    sink = Echo()
    t = await TcpTransport.listen("127.0.0.1", 0, sink, limits=LIMITS)
    writers: list[asyncio.StreamWriter] = []
    try:
        # 10 silent connections from one address: 4 pending allowed, the rest refused at once.
        silent = [await _open_from("127.0.0.2", t.local_addr) for _ in range(10)]
        writers += [w for _, w in silent]
        refused = await asyncio.gather(*(_closed(r, 0.3) for r, _ in silent[4:]))
        assert all(refused)
        assert t.stats.rejected_connections == 6
        # A trickler on another address: one byte every 0.1 s keeps the idle timer happy, but
        # the message never ends, so the whole-message deadline closes it.
        tr, tw = await _open_from("127.0.0.3", t.local_addr)
        writers.append(tw)

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                for byte in _options(999):
                    tw.write(bytes([byte]))
                    await tw.drain()
                    await asyncio.sleep(0.1)

        trickler = asyncio.ensure_future(trickle())
        # The honest client (127.0.0.1) is served while all that goes on, and stays connected
        # past the first-message deadline because it spoke SIP in time.
        _hr, hw = await _open_from("127.0.0.1", t.local_addr)
        writers.append(hw)
        await _send_and_wait(hw, sink, 1)
        assert await _closed(tr, 3.0)  # trickler: slow-message
        trickler.cancel()
        assert all(await asyncio.gather(*(_closed(r, 3.0) for r, _ in silent[:4])))
        await _send_and_wait(hw, sink, 2)  # still open after 0.8 s deadlines
        assert t.stats.closed_abusive >= 5
        assert t.guard.pending == 0 and t.guard.count("127.0.0.2") == 0
        # The address is free again once its connections are gone.
        _r, w = await _open_from("127.0.0.2", t.local_addr)
        writers.append(w)
        await _send_and_wait(w, sink, 3)
    finally:
        for w in writers:
            w.close()
        await t.close()


async def test_oldest_pending_connection_is_evicted_when_many_addresses_attack() -> None:
    sink = Echo()
    limits = TransportLimits(max_pending_per_ip=2, max_pending=6, first_message_timeout=30.0)
    t = await TcpTransport.listen("127.0.0.1", 0, sink, limits=limits)
    writers: list[asyncio.StreamWriter] = []
    try:
        conns = []
        for i in range(10, 16):  # 12 silent connections from 6 addresses, 6 pending allowed
            for _ in range(2):
                conns.append(await _open_from(f"127.0.0.{i}", t.local_addr))
                await asyncio.sleep(0.01)  # accept order = open order
        writers += [w for _, w in conns]
        oldest = await asyncio.gather(*(_closed(r, 2.0) for r, _ in conns[:6]))
        assert all(oldest)
        assert t.guard.pending == 6 and t.guard.evicted == 6
        _hr, hw = await _open_from("127.0.0.1", t.local_addr)  # evicts one more, is served
        writers.append(hw)
        await _send_and_wait(hw, sink, 1)
    finally:
        for w in writers:
            w.close()
        await t.close()


def _tls_server(tmp: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slowloris.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (tmp / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    return ctx


async def test_tls_handshakes_never_started_are_counted_and_closed(tmp_path: Path) -> None:
    sink = Echo()
    server_ctx = _tls_server(tmp_path)
    t = await TlsTransport.listen("127.0.0.1", 0, sink, server_ssl=server_ctx, limits=LIMITS)
    writers: list[asyncio.StreamWriter] = []
    try:
        # Plain TCP connections to the TLS port that never send a ClientHello.
        raw = [await _open_from("127.0.0.4", t.local_addr) for _ in range(10)]
        writers += [w for _, w in raw]
        assert all(await asyncio.gather(*(_closed(r, 0.3) for r, _ in raw[4:])))
        assert t.stats.rejected_connections == 6  # counted before any handshake
        assert t.guard.count("127.0.0.4") == 4 and t.connections == {}
        # A verified TLS client on 127.0.0.1 is served meanwhile.
        client = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
        _hr, hw = await asyncio.open_connection(
            *t.local_addr, ssl=client, server_hostname="127.0.0.1", local_addr=("127.0.0.1", 0)
        )
        writers.append(hw)
        await _send_and_wait(hw, sink, 1)
        # The four pending handshakes are closed at connect_timeout (0.6 s) and counted.
        assert all(await asyncio.gather(*(_closed(r, 3.0) for r, _ in raw[:4])))
        await asyncio.sleep(0.05)
        assert t.stats.handshake_failures == 4
        assert t.guard.count("127.0.0.4") == 0 and t.guard.pending == 0
        await _send_and_wait(hw, sink, 2)
    finally:
        for w in writers:
            w.close()
        await t.close()


async def test_ws_pending_cap_and_first_message_deadline() -> None:
    sink = Echo()
    t = await WsTransport.listen("127.0.0.1", 0, sink, limits=LIMITS)
    url = f"ws://127.0.0.1:{t.local_addr[1]}"
    try:
        raw = [await _open_from("127.0.0.5", t.local_addr) for _ in range(6)]  # no HTTP at all
        assert all(await asyncio.gather(*(_closed(r, 0.3) for r, _ in raw[4:])))
        assert t.stats.rejected_connections == 2
        # A WebSocket that opens but never sends a SIP message: closed at first_message_timeout.
        async with ws_connect(url, subprotocols=["sip"]) as quiet:  # type: ignore[list-item]
            await asyncio.wait_for(quiet.wait_closed(), 5)
        async with ws_connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            await ws.send(_options(1).decode())
            await asyncio.sleep(1.2)  # past first_message_timeout: it spoke SIP in time
            await ws.send(_options(2).decode())
            for _ in range(100):
                if "z9hG4bK-2" in sink.seen:
                    break
                await asyncio.sleep(0.02)
        assert sink.seen == ["z9hG4bK-1", "z9hG4bK-2"]
        assert all(await asyncio.gather(*(_closed(r, 3.0) for r, _ in raw[:4])))
        for _, w in raw:
            w.close()
    finally:
        await t.close()
