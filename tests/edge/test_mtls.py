"""``callward edge`` TLS listener with mTLS (security.tls_require_client_cert): a client
without a certificate from the configured CA is refused; one with it gets 200 to OPTIONS."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from callward.config import CallwardConfig, EdgeConfig, SecurityConfig
from callward.edge.app import EdgeNode
from callward.sip import Response, parse_message

NOW = dt.datetime.now(dt.UTC)


def _issue(tmp: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
           *, ca: bool = False, eku: x509.ObjectIdentifier | None = None,
           ip: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path, Path]:  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    # well-formed as VERIFY_X509_STRICT wants: AKI on issued certs, keyCertSign on the CA
    if issuer:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), False
        )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    if ip:
        import ipaddress

        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = b.sign(issuer[1] if issuer else key, hashes.SHA256())
    cpath, kpath = tmp / f"{name}.pem", tmp / f"{name}.key"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))  # fmt: skip
    return cert, key, cpath, kpath


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


OPTIONS = (
    b"OPTIONS sip:127.0.0.1:{port};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKm1\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:node2@callward.local>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
    b"Call-ID: mtls1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


async def _options(port: int, ctx: ssl.SSLContext) -> int:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 5)
    try:
        writer.write(OPTIONS.replace(b"{port}", str(port).encode()))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        resp = parse_message(head)
        assert isinstance(resp, Response)
        return resp.status
    finally:
        writer.close()


async def test_edge_requires_client_certificates_when_configured(tmp_path: Path) -> None:
    ca, ca_key, ca_path, _ = _issue(tmp_path, "ca", None, ca=True)
    _, _, srv_cert, srv_key = _issue(tmp_path, "edge", (ca, ca_key),
                                     eku=ExtendedKeyUsageOID.SERVER_AUTH, ip=True)  # fmt: skip
    _, _, cli_cert, cli_key = _issue(tmp_path, "node2", (ca, ca_key),
                                     eku=ExtendedKeyUsageOID.CLIENT_AUTH)  # fmt: skip
    port = _port()
    cfg = CallwardConfig(
        edge=EdgeConfig(listen=[f"tls:127.0.0.1:{port}"], auth=False,
                        tls_cert=str(srv_cert), tls_key=str(srv_key)),
        security=SecurityConfig(tls_ca_file=str(ca_path), tls_require_client_cert=True),
    )  # fmt: skip
    node = EdgeNode(cfg)
    await node.start()
    try:
        anonymous = ssl.create_default_context(cafile=str(ca_path))
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await _options(port, anonymous)
        member = ssl.create_default_context(cafile=str(ca_path))
        member.load_cert_chain(str(cli_cert), str(cli_key))
        assert await _options(port, member) == 200
    finally:
        await node.stop()
