"""RFC 5922 on the edge's outgoing TLS: an upstream trunk named ``sip:trunk.example;
transport=tls`` is resolved (RFC 3263, a zone in a dict) to 127.0.0.1, and the edge requires
the trunk's certificate to be for ``trunk.example`` — the SIP domain, not the address it
resolved to. The trunk is a plain stdlib TLS server (not our transport). A certificate for
another host is refused: the trunk never sees the INVITE and the caller gets a 5xx. Ports
27020-27023 (safe15's block); certificates are made here with ``cryptography``."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from callward.config import CallwardConfig, EdgeConfig, SecurityConfig
from callward.edge.app import EdgeNode
from callward.sip import Response, parse_message
from callward.sip.dns import DnsAnswer

pytestmark = pytest.mark.timeout(60)

TRUNK_PORT, EDGE_UDP, EDGE_TLS = 27020, 27021, 27022
NOW = dt.datetime.now(dt.UTC)


def _issue(
    tmp: Path,
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path, Path]:
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
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), False
        )
    else:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), False)
    cert = b.sign(issuer[1] if issuer else key, hashes.SHA256())
    cpath, kpath = tmp / f"{name}.pem", tmp / f"{name}.key"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key, cpath, kpath


class Zone:
    """The RFC 3263 AsyncResolver seam: trunk.example → 127.0.0.1."""

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        records = ["127.0.0.1"] if (name, rdtype) == ("trunk.example", "A") else []
        return DnsAnswer(tuple(records), ttl=60.0)


@pytest.mark.parametrize(
    ("trunk_sans", "reaches"),
    [
        (
            [x509.UniformResourceIdentifier("sip:trunk.example"), x509.DNSName("trunk.example")],
            True,
        ),
        ([x509.DNSName("evil.example")], False),  # wrong host
        ([x509.DNSName("*.example")], False),  # wildcards never match (RFC 5922 §7.2)
    ],
    ids=["right-domain", "wrong-host", "wildcard"],
)
async def test_edge_verifies_the_trunk_domain_on_outgoing_tls(
    tmp_path: Path, trunk_sans: list[x509.GeneralName], reaches: bool
) -> None:
    ca, ca_key, ca_path, _ = _issue(tmp_path, "sip-ca", None)
    _, _, edge_cert, edge_key = _issue(tmp_path, "edge", (ca, ca_key), [x509.DNSName("edge.test")])
    _, _, trunk_cert, trunk_key = _issue(tmp_path, "trunk", (ca, ca_key), trunk_sans)

    got: list[bytes] = []

    async def trunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            got.append(await reader.readuntil(b"\r\n\r\n"))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass

    srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv_ctx.load_cert_chain(trunk_cert, trunk_key)
    server = await asyncio.start_server(trunk, "127.0.0.1", TRUNK_PORT, ssl=srv_ctx)
    cfg = CallwardConfig(
        edge=EdgeConfig(
            listen=[f"udp:127.0.0.1:{EDGE_UDP}", f"tls:127.0.0.1:{EDGE_TLS}"],
            auth=False,
            t1=0.05,
            upstreams=[f"sip:trunk.example:{TRUNK_PORT};transport=tls"],
            tls_cert=str(edge_cert),
            tls_key=str(edge_key),
        ),
        security=SecurityConfig(tls_ca_file=str(ca_path)),
    )
    node = EdgeNode(cfg, dns_resolver=Zone())
    await node.start()
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind(("127.0.0.1", 0))
    caller.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        port = caller.getsockname()[1]
        invite = (
            "INVITE sip:+15551230000@elsewhere.example SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alice@callward.local>;tag=a\r\n"
            "To: <sip:+15551230000@elsewhere.example>\r\nCall-ID: tls-up-1\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
        )
        await loop.sock_sendto(caller, invite.encode(), ("127.0.0.1", EDGE_UDP))
        if reaches:
            for _ in range(250):
                if got:
                    break
                await asyncio.sleep(0.02)
            assert got and got[0].startswith(b"INVITE sip:+15551230000@elsewhere.example")
        else:
            final = None
            async with asyncio.timeout(15):
                while final is None:
                    msg = parse_message(await loop.sock_recv(caller, 65536))
                    if isinstance(msg, Response) and msg.status >= 200:
                        final = msg
            assert final.status >= 500
            assert got == []
    finally:
        caller.close()
        await node.stop()
        server.close()
        await server.wait_closed()
