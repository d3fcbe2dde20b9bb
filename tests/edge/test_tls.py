"""TLS listener (RFC 3261 §26.3.1, RFC 5630): a client that verifies the edge's certificate
sends OPTIONS and gets 200 over the same connection; a CRLF CRLF ping gets a CRLF pong
(RFC 5626 §4.4.1)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from callward.config import CallwardConfig, EdgeConfig
from callward.edge.app import EdgeNode
from callward.sip import Response, parse_message


def _cert(tmp_path):
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
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_options_over_verified_tls(tmp_path) -> None:
    cert, key = _cert(tmp_path)
    port = _port()
    cfg = CallwardConfig(
        edge=EdgeConfig(
            listen=[f"tls:127.0.0.1:{port}"], auth=False, tls_cert=str(cert), tls_key=str(key)
        )
    )
    node = EdgeNode(cfg)
    await node.start()
    try:
        ctx = ssl.create_default_context(cafile=str(cert))  # verification on
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        writer.write(b"\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        writer.write(
            f"OPTIONS sip:127.0.0.1:{port};transport=tls SIP/2.0\r\n".encode()
            + b"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtls1\r\nMax-Forwards: 70\r\n"
            b"From: <sips:alice@callward.local>;tag=1\r\nTo: <sips:127.0.0.1>\r\n"
            b"Call-ID: tls1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        resp = parse_message(head)
        assert isinstance(resp, Response) and resp.status == 200
        writer.close()
    finally:
        await node.stop()
