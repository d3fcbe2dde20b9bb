"""Loopback tests for the SIP transports: every check talks to our listener through a raw socket
(or the ``websockets`` client), i.e. bytes written by hand, never through our own sender only."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callward.errors import TransportError
from callward.sip import ParseLimits, Request, Response
from callward.sip.transport import (
    TcpTransport,
    TlsTransport,
    TransportLimits,
    UdpTransport,
    WireEvent,
    WsTransport,
    open_transport,
)

pytestmark = pytest.mark.timeout(60)


def options(branch: str = "z9hG4bK-1", body: bytes = b"") -> bytes:
    head = (
        f"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5999;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        "To: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: {branch}@test\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def ok(branch: str = "z9hG4bK-1") -> bytes:
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5999;branch={branch}\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        "To: <sip:bob@127.0.0.1>;tag=b1\r\n"
        f"Call-ID: {branch}@test\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


# A request whose CSeq method disagrees with the request line (RFC 3261 §8.1.1.5): strict parsing
# rejects it, but Via/From/To/Call-ID/CSeq are all readable, so a 400 can be routed back.
MISMATCHED = options().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")


class Sink:
    """Collects delivered messages; ``got`` wakes waiters."""

    def __init__(self) -> None:
        self.items: list[tuple[Request | Response, tuple[str, int], str, str | None]] = []
        self.event = asyncio.Event()

    def __call__(
        self, msg: Request | Response, src: tuple[str, int], name: str, cid: str | None
    ) -> None:
        self.items.append((msg, src, name, cid))
        self.event.set()

    async def wait(self, n: int, timeout: float = 5.0) -> None:
        async def _until() -> None:
            while len(self.items) < n:
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(_until(), timeout)


@pytest.fixture
def loop_errors() -> list[dict[str, Any]]:
    """Anything reported to the loop's exception handler (a crash we swallowed) fails the test."""
    errors: list[dict[str, Any]] = []
    return errors


def watch_loop(errors: list[dict[str, Any]]) -> None:
    asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))


@pytest.fixture
async def tcp() -> AsyncIterator[tuple[TcpTransport, Sink]]:
    sink = Sink()
    t = await TcpTransport.listen("127.0.0.1", 0, sink)
    yield t, sink
    await t.close()


@contextlib.asynccontextmanager
async def udp_client() -> AsyncIterator[tuple[UdpTransport, Sink, socket.socket]]:
    """A UDP transport on loopback, its sink, and a raw non-blocking socket to talk to it."""
    sink = Sink()
    t = await UdpTransport.listen("127.0.0.1", 0, sink)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    try:
        yield t, sink, client
    finally:
        client.close()
        await t.close()


@contextlib.asynccontextmanager
async def closing(*transports: Any) -> AsyncIterator[None]:
    """Close every transport, in order, when the block ends."""
    try:
        yield
    finally:
        for t in transports:
            await t.close()


async def raw_tcp(addr: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*addr)


async def read_message(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


# ---------------------------------------------------------------------------------------------
# UDP
# ---------------------------------------------------------------------------------------------


async def test_udp_delivers_and_replies_to_source(loop_errors: list[dict[str, Any]]) -> None:
    watch_loop(loop_errors)
    async with udp_client() as (t, sink, client):
        client.sendto(options(), t.local_addr)
        await sink.wait(1)
        msg, src, name, cid = sink.items[0]
        assert isinstance(msg, Request) and msg.method == "OPTIONS"
        assert src == client.getsockname() and name == "udp" and cid is None
        assert t.reliable is False
        # sending back reaches the raw socket unchanged
        await t.send(ok(), src)
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(client, 2000), 5)
        assert data.startswith(b"SIP/2.0 200 OK")
    assert not loop_errors


async def test_udp_malformed_request_gets_400_with_parser_reason() -> None:
    async with udp_client() as (t, sink, client):
        client.sendto(MISMATCHED, t.local_addr)
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(client, 4000), 5)
        status_line, _, rest = data.partition(b"\r\n")
        assert status_line.startswith(b"SIP/2.0 400 Bad Request")
        assert b"8.1.1.5" in status_line  # the parser's rule is named in the reason phrase
        # §8.2.6.2: Via, From, Call-ID, CSeq copied; To gets a tag.
        assert b"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-1\r\n" in rest
        assert b"Call-ID: z9hG4bK-1@test\r\n" in rest
        assert b"To: <sip:bob@127.0.0.1>;tag=" in rest
        assert not sink.items and t.stats.malformed == 1


@pytest.mark.parametrize(
    "junk",
    [
        b"\x00\xff" * 40,
        b"INVITE sip:x SIP/2.0\r\n\r\n",  # no headers to answer with
        MISMATCHED.replace(b"OPTIONS sip", b"ACK sip").replace(b"1 INVITE", b"1 BYE"),  # ACK
        b"SIP/2.0 999 Nope\r\nVia: x\r\n\r\n",  # a broken response is never answered
        b"\r\n\r\n",  # keep-alive
    ],
)
async def test_udp_unanswerable_input_is_dropped(junk: bytes) -> None:
    async with udp_client() as (t, sink, client):
        client.sendto(junk, t.local_addr)
        client.sendto(options(), t.local_addr)  # still alive afterwards
        await sink.wait(1)
        with pytest.raises(BlockingIOError):
            client.recv(4000)  # nothing was sent back


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(max_size=600),
        st.builds(
            lambda cut, noise: options()[:cut] + noise,
            st.integers(0, 330),
            st.binary(max_size=40),
        ),
    )
)
def test_udp_fuzz_never_crashes(data: bytes) -> None:
    async def run() -> None:
        errors: list[dict[str, Any]] = []
        watch_loop(errors)
        async with udp_client() as (t, sink, client):
            client.sendto(data, t.local_addr)
            client.sendto(options(), t.local_addr)
            await sink.wait(1)
        assert not errors

    asyncio.run(run())


# ---------------------------------------------------------------------------------------------
# TCP
# ---------------------------------------------------------------------------------------------


async def test_tcp_partial_reads_byte_by_byte(tcp: tuple[TcpTransport, Sink]) -> None:
    t, sink = tcp
    _reader, writer = await raw_tcp(t.local_addr)
    body = b"v=0\r\n"
    for b in options(body=body):
        writer.write(bytes([b]))
        await writer.drain()
    await sink.wait(1)
    msg, src, name, cid = sink.items[0]
    assert isinstance(msg, Request) and msg.body == body
    assert name == "tcp" and cid is not None and t.has_connection(cid)
    assert src == writer.get_extra_info("sockname")
    writer.close()


async def test_tcp_pipelined_messages_and_keepalives(tcp: tuple[TcpTransport, Sink]) -> None:
    t, sink = tcp
    reader, writer = await raw_tcp(t.local_addr)
    # Three messages and a leading CRLF in one write, the last one split over two writes.
    blob = b"\r\n" + options("z9hG4bK-a") + options("z9hG4bK-b", b"xyz") + options("z9hG4bK-c")
    writer.write(blob[:-7])
    await writer.drain()
    await sink.wait(2)
    writer.write(blob[-7:])
    await sink.wait(3)
    branches = [m.top_via.branch for m, *_ in sink.items]
    assert branches == ["z9hG4bK-a", "z9hG4bK-b", "z9hG4bK-c"]
    assert sink.items[1][0].body == b"xyz"
    # RFC 5626 §4.4.1: a double-CRLF ping is answered with exactly one CRLF.
    writer.write(b"\r\n\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
    writer.close()


async def test_tcp_responses_reuse_the_inbound_connection(tcp: tuple[TcpTransport, Sink]) -> None:
    t, sink = tcp
    reader, writer = await raw_tcp(t.local_addr)
    writer.write(options())
    await sink.wait(1)
    _, src, _, cid = sink.items[0]
    reply = ok()
    assert await t.send(reply, src) == cid  # by address: no new connection
    assert await read_message(reader) == reply
    assert cid is not None
    await t.send_to_connection(reply, cid)  # by flow
    assert await read_message(reader) == reply
    assert len(t.connections) == 1
    writer.close()
    await writer.wait_closed()
    for _ in range(50):
        if not t.has_connection(cid):
            break
        await asyncio.sleep(0.02)
    with pytest.raises(TransportError, match="flow failed"):
        await t.send_to_connection(reply, cid)


async def test_tcp_malformed_gets_400_and_connection_survives(
    tcp: tuple[TcpTransport, Sink],
) -> None:
    t, sink = tcp
    reader, writer = await raw_tcp(t.local_addr)
    writer.write(MISMATCHED + options("z9hG4bK-after"))
    reply = await read_message(reader)
    assert reply.startswith(b"SIP/2.0 400 Bad Request")
    await sink.wait(1)
    assert sink.items[0][0].top_via.branch == "z9hG4bK-after"
    writer.close()


@pytest.mark.parametrize(
    "hostile",
    [
        b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n",  # no Content-Length on a stream
        b"A" * 70000,  # a header section that never ends
    ],
)
async def test_tcp_lost_framing_closes_connection(
    tcp: tuple[TcpTransport, Sink], hostile: bytes
) -> None:
    t, _ = tcp
    reader, writer = await raw_tcp(t.local_addr)
    writer.write(hostile)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # EOF: the server closed
    assert t.stats.closed_abusive == 1
    writer.close()


async def test_tcp_limits_connections_buffer_and_idle() -> None:
    sink = Sink()
    limits = TransportLimits(max_connections=2, max_buffer_bytes=3000, idle_timeout=0.3)
    t = await TcpTransport.listen("127.0.0.1", 0, sink, limits=limits)
    try:
        r1, w1 = await raw_tcp(t.local_addr)
        r2, w2 = await raw_tcp(t.local_addr)
        r3, w3 = await raw_tcp(t.local_addr)  # beyond max_connections
        assert await asyncio.wait_for(r3.read(), 5) == b""
        assert t.stats.rejected_connections == 1
        # A body announced larger than the buffer limit: closed once the buffer overflows.
        w1.write(options().replace(b"Content-Length: 0", b"Content-Length: 60000") + b"x" * 4000)
        assert await asyncio.wait_for(r1.read(), 5) == b""
        # An idle connection is closed after idle_timeout; keep-alives would have kept it.
        t0 = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(r2.read(), 5) == b""
        assert asyncio.get_running_loop().time() - t0 < 2
        assert t.stats.closed_abusive == 2
        assert t.connections == {}
        for w in (w1, w2, w3):
            w.close()
    finally:
        await t.close()


async def test_tcp_client_connect_and_ping_pong() -> None:
    a_sink, b_sink = Sink(), Sink()
    a = await TcpTransport.listen("127.0.0.1", 0, a_sink)
    b = await TcpTransport.listen("127.0.0.1", 0, b_sink)
    async with closing(a, b):
        cid = await a.send(options(), b.local_addr)
        assert cid is not None
        await b_sink.wait(1)
        await a.ping(cid, timeout=2)  # b answers the CRLFCRLF with a CRLF
        # b answers over the same connection, found by the source address it saw
        _, src, _, b_cid = b_sink.items[0]
        assert b.connection_for(src) == b_cid
        await b.send(ok(), src)
        await a_sink.wait(1)
        assert a_sink.items[0][3] == cid
        assert await a.send(options("z9hG4bK-2"), b.local_addr) == cid  # reused
    with pytest.raises(TransportError):
        await a.connect(b.local_addr)


# ---------------------------------------------------------------------------------------------
# TLS: a throwaway CA and server certificate made with `cryptography`
# ---------------------------------------------------------------------------------------------


def make_ca_and_cert(tmp: Path, name: str = "ca") -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"callward test {name}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path, cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}-srv.pem", tmp / f"{name}.key"
    ca_path.write_bytes(ca.public_bytes(pem))
    cert_path.write_bytes(cert.public_bytes(pem))
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


def tls_contexts(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca, cert, key = make_ca_and_cert(tmp)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    return server, client


async def test_tls_verified_call_path_and_pipelining(tmp_path: Path) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)
    srv_sink, cli_sink = Sink(), Sink()
    srv = await TlsTransport.listen(
        "127.0.0.1", 0, srv_sink, server_ssl=server_ctx, client_ssl=client_ctx
    )
    cli = await TlsTransport.listen(
        "127.0.0.1", 0, cli_sink, server_ssl=server_ctx, client_ssl=client_ctx
    )
    async with closing(cli, srv):
        assert client_ctx.verify_mode == ssl.CERT_REQUIRED and client_ctx.check_hostname
        await cli.send(options("z9hG4bK-t1") + options("z9hG4bK-t2"), srv.local_addr)
        await srv_sink.wait(2)
        assert [m.top_via.branch for m, *_ in srv_sink.items] == ["z9hG4bK-t1", "z9hG4bK-t2"]
        assert srv_sink.items[0][2] == "tls"
        # Raw ssl client (stdlib, not our code) also gets a pong to its ping.
        reader, writer = await asyncio.open_connection(
            *srv.local_addr, ssl=client_ctx, server_hostname="localhost"
        )
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        writer.close()


async def test_tls_client_rejects_untrusted_certificate(tmp_path: Path) -> None:
    server_ctx, _ = tls_contexts(tmp_path)
    other_ca, _, _ = make_ca_and_cert(tmp_path, "other")
    wrong = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(other_ca))
    srv = await TlsTransport.listen("127.0.0.1", 0, Sink(), server_ssl=server_ctx)
    cli = await TlsTransport.listen("127.0.0.1", 0, Sink(), server_ssl=server_ctx, client_ssl=wrong)
    async with closing(cli, srv):
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            await cli.send(options(), srv.local_addr)
        # default client context: system trust store, so our throwaway CA is refused too
        default = await TlsTransport.listen("127.0.0.1", 0, Sink(), server_ssl=server_ctx)
        with pytest.raises(TransportError):
            await default.send(options(), srv.local_addr)
        await default.close()


# ---------------------------------------------------------------------------------------------
# WebSocket (RFC 7118)
# ---------------------------------------------------------------------------------------------


async def test_ws_delivers_answers_and_reuses() -> None:
    sink = Sink()
    t = await WsTransport.listen("127.0.0.1", 0, sink)
    try:
        url = f"ws://127.0.0.1:{t.local_addr[1]}"
        async with ws_connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "sip"
            await ws.send(options().decode())
            await sink.wait(1)
            msg, src, name, cid = sink.items[0]
            assert name == "ws" and isinstance(msg, Request) and cid is not None
            await t.send(ok(), src)
            assert str(await asyncio.wait_for(ws.recv(), 5)).startswith("SIP/2.0 200 OK")
            await ws.send(MISMATCHED)  # binary frame, malformed → 400 back
            assert str(await asyncio.wait_for(ws.recv(), 5)).startswith("SIP/2.0 400")
    finally:
        await t.close()


async def test_ws_requires_sip_subprotocol_and_transport_to_transport() -> None:
    a_sink, b_sink = Sink(), Sink()
    a = await WsTransport.listen("127.0.0.1", 0, a_sink)
    b = await WsTransport.listen("127.0.0.1", 0, b_sink)
    async with closing(a, b):
        with pytest.raises(InvalidStatus):
            async with ws_connect(f"ws://127.0.0.1:{a.local_addr[1]}"):
                pass
        cid = await b.send(options(), a.local_addr)
        await a_sink.wait(1)
        _, src, _, _ = a_sink.items[0]
        await a.send(ok(), src)
        await b_sink.wait(1)
        assert b_sink.items[0][3] == cid


async def test_taps_and_open_transport_specs() -> None:
    events: list[WireEvent] = []
    sink = Sink()
    t = await open_transport("udp:127.0.0.1:0", sink)
    t.add_tap(events.append)
    u = await open_transport("tcp:127.0.0.1:0", Sink())
    try:
        await u.send(options(), t.local_addr)  # tcp client → udp listener: refused, no crash
    except TransportError:
        pass
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.sendto(options(), t.local_addr)
    await sink.wait(1)
    client.close()
    assert [e.direction for e in events] == ["in"] and events[0].data == options()
    await t.close()
    await u.close()
    for bad in ("udp:127.0.0.1", "sctp:127.0.0.1:5", "tls:127.0.0.1:0", "udp:h:99999"):
        with pytest.raises(TransportError):
            await open_transport(bad, Sink())


# ---------------------------------------------------------------------------------------------
# Properties over TCP: any chunking of a pipelined stream delivers the same messages; any bytes
# leave the listener alive and the loop free of swallowed exceptions.
# ---------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 4),
    cuts=st.lists(st.integers(1, 400), min_size=0, max_size=12),
    keepalive=st.booleans(),
)
def test_tcp_any_chunking_delivers_every_message_in_order(
    n: int, cuts: list[int], keepalive: bool
) -> None:
    blob = b"".join(
        (b"\r\n" if keepalive else b"") + options(f"z9hG4bK-{i}", b"x" * i) for i in range(n)
    )
    pieces, pos = [], 0
    for c in sorted(set(cuts)):
        if pos < c < len(blob):
            pieces.append(blob[pos:c])
            pos = c
    pieces.append(blob[pos:])

    async def run() -> None:
        errors: list[dict[str, Any]] = []
        watch_loop(errors)
        sink = Sink()
        t = await TcpTransport.listen("127.0.0.1", 0, sink)
        try:
            _, writer = await raw_tcp(t.local_addr)
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0)
            await sink.wait(n)
            assert [m.top_via.branch for m, *_ in sink.items] == [f"z9hG4bK-{i}" for i in range(n)]
            assert [m.body for m, *_ in sink.items] == [b"x" * i for i in range(n)]
            writer.close()
        finally:
            await t.close()
        assert not errors

    asyncio.run(run())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=5))
def test_tcp_hostile_bytes_never_crash(chunks: list[bytes]) -> None:
    async def run() -> None:
        errors: list[dict[str, Any]] = []
        watch_loop(errors)
        sink = Sink()
        limits = TransportLimits(max_buffer_bytes=1000)
        t = await TcpTransport.listen("127.0.0.1", 0, sink, limits=limits)
        try:
            _, writer = await raw_tcp(t.local_addr)
            for chunk in chunks:
                writer.write(chunk)
            writer.close()
            # the listener still serves a well-behaved client
            _, w2 = await raw_tcp(t.local_addr)
            w2.write(options("z9hG4bK-ok"))
            await w2.drain()
            for _ in range(100):
                if any(m.top_via.branch == "z9hG4bK-ok" for m, *_ in sink.items):
                    break
                await asyncio.sleep(0.02)
            assert sink.items[-1][0].top_via.branch == "z9hG4bK-ok"
            w2.close()
        finally:
            await t.close()
        assert not errors

    asyncio.run(run())


async def test_ws_limits_idle_and_connections() -> None:
    limits = TransportLimits(max_connections=1, idle_timeout=0.3)
    t = await WsTransport.listen("127.0.0.1", 0, Sink(), limits=limits)
    url = f"ws://127.0.0.1:{t.local_addr[1]}"
    try:
        async with ws_connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            with pytest.raises(InvalidStatus) as info:
                async with ws_connect(url, subprotocols=["sip"]):  # type: ignore[list-item]
                    pass
            assert info.value.response.status_code == 503
            assert t.stats.rejected_connections == 1
            # idle: the server closes after idle_timeout without a message
            await asyncio.wait_for(ws.wait_closed(), 5)
        assert t.stats.closed_abusive == 1
    finally:
        await t.close()


async def test_wss_with_verified_certificate(tmp_path: Path) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)
    a_sink, b_sink = Sink(), Sink()
    a = await WsTransport.listen("127.0.0.1", 0, a_sink, server_ssl=server_ctx)
    b = await WsTransport.listen(
        "127.0.0.1", 0, b_sink, server_ssl=server_ctx, client_ssl=client_ctx
    )
    async with closing(a, b):
        assert a.name == "wss"
        await b.send(options(), a.local_addr)
        await a_sink.wait(1)
        assert a_sink.items[0][2] == "wss"
        (tmp_path / "other").mkdir()
        _, wrong_client = tls_contexts(tmp_path / "other")  # a different throwaway CA
        c = await WsTransport.listen(
            "127.0.0.1", 0, Sink(), server_ssl=server_ctx, client_ssl=wrong_client
        )
        with pytest.raises(TransportError):
            await c.send(options(), a.local_addr)
        await c.close()


async def test_tcp_connection_by_name_is_reused_then_forgotten_when_closed() -> None:
    b_sink = Sink()
    a = await TcpTransport.listen("127.0.0.1", 0, Sink())
    b = await TcpTransport.listen("127.0.0.1", 0, b_sink)
    async with closing(a, b):
        by_name = ("localhost", b.local_addr[1])
        first = await a.send(options("z9hG4bK-n1"), by_name)
        assert await a.send(options("z9hG4bK-n2"), by_name) == first  # reused by name
        await b_sink.wait(2)
        (b_cid,) = b.connections
        await b.close_connection(b_cid)  # the peer drops the connection
        for _ in range(50):
            if first is not None and not a.has_connection(first):
                break
            await asyncio.sleep(0.02)
        second = await a.send(options("z9hG4bK-n3"), by_name)  # a fresh one, not the dead one
        assert second not in (None, first)
        await b_sink.wait(3)


async def test_tcp_buffer_limit_counts_only_unframed_bytes() -> None:
    # 20 pipelined messages (~6.5 kB) in one write exceed a 3000-byte buffer limit, but each
    # message is complete: all are delivered and the connection stays open.
    sink = Sink()
    t = await TcpTransport.listen(
        "127.0.0.1", 0, sink, limits=TransportLimits(max_buffer_bytes=3000)
    )
    try:
        blob = b"".join(options(f"z9hG4bK-p{i}") for i in range(20))
        assert len(blob) > 3000
        reader, writer = await raw_tcp(t.local_addr)
        writer.write(blob)
        await writer.drain()
        await sink.wait(20)
        assert t.stats.closed_abusive == 0 and len(t.connections) == 1
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"  # still alive
        writer.close()
    finally:
        await t.close()


async def test_tls_partial_writes_and_garbage_close(tmp_path: Path) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)
    sink = Sink()
    srv = await TlsTransport.listen("127.0.0.1", 0, sink, server_ssl=server_ctx)
    try:
        reader, writer = await asyncio.open_connection(
            *srv.local_addr, ssl=client_ctx, server_hostname="localhost"
        )
        data = options("z9hG4bK-tls-slow", b"abc")
        for i in range(0, len(data), 7):  # many small TLS records
            writer.write(data[i : i + 7])
            await writer.drain()
        await sink.wait(1)
        assert sink.items[0][0].body == b"abc"
        writer.write(b"GARBAGE WITHOUT FRAMING\r\n\r\n")  # no Content-Length on a stream
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert srv.stats.closed_abusive == 1
        writer.close()
    finally:
        await srv.close()


async def test_ws_hostile_messages() -> None:
    sink = Sink()
    limits = TransportLimits(parse=ParseLimits(max_message_bytes=2000))
    t = await WsTransport.listen("127.0.0.1", 0, sink, limits=limits)
    url = f"ws://127.0.0.1:{t.local_addr[1]}"
    try:
        async with ws_connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            await ws.send(b"\x00\xff junk")  # not SIP, not answerable: dropped
            await ws.send(options("z9hG4bK-ws-ok").decode())
            await sink.wait(1)
            assert t.stats.malformed == 1
        async with ws_connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            await ws.send("x" * 5000)  # beyond max_size: the server closes (1009)
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        assert len(sink.items) == 1
    finally:
        await t.close()
