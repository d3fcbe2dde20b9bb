"""Phone to phone over TLS with certificate verification on (a throwaway CA from
`cryptography`), and the same phones refusing a server whose certificate they cannot verify."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest

from callward.ua.call import CallState
from callward.ua.phone import Phone

pytestmark = pytest.mark.timeout(60)


def throwaway_pki(tmp: Path) -> tuple[Path, Path, Path]:
    """CA certificate, server certificate (SAN 127.0.0.1, localhost) and server key as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    life = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(hours=1))
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callward ua test CA")])
    ca = (
        x509.CertificateBuilder(
            issuer_name=ca_name,
            subject_name=ca_name,
            public_key=ca_key.public_key(),
            serial_number=x509.random_serial_number(),
        )
        .not_valid_before(life[0])
        .not_valid_after(life[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    leaf = (
        x509.CertificateBuilder(
            issuer_name=ca_name,
            subject_name=leaf_name,
            public_key=key.public_key(),
            serial_number=x509.random_serial_number(),
        )
        .not_valid_before(life[0])
        .not_valid_after(life[1])
        .add_extension(san, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = tmp / "ca.pem", tmp / "srv.pem", tmp / "srv.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def contexts(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca, cert, key = throwaway_pki(tmp)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))


async def test_call_over_tls_and_untrusted_server_refused(tmp_path: Path) -> None:
    server_ctx, client_ctx = contexts(tmp_path)
    kw = {"transport": "tls", "server_ssl": server_ctx, "client_ssl": client_ctx}
    bob = await Phone.start("bob", auto_answer=True, **kw)  # type: ignore[arg-type]
    alice = await Phone.start("alice", **kw)  # type: ignore[arg-type]
    (tmp_path / "other").mkdir()
    _, other_client = contexts(tmp_path / "other")
    mallory = await Phone.start(
        "mallory", transport="tls", server_ssl=server_ctx, client_ssl=other_client
    )
    try:
        target = f"sip:bob@127.0.0.1:{bob.local_addr[1]};transport=tls"
        call = await alice.call(target)
        assert call.status == 200 and call.state is CallState.CONFIRMED
        assert call.leg.invite is not None and call.leg.invite.top_via.transport == "TLS"
        assert await call.hangup() == 200
        # A client that does not trust the server's CA gets no connection: 503 (§8.1.3.1).
        refused = await mallory.call(target)
        assert refused.status == 503 and refused.end_reason == "transport-error"
    finally:
        for phone in (alice, bob, mallory):
            await phone.close()
