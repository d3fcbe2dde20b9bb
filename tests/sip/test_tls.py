"""sip/tls.py with certificates generated here, over real loopback TLS handshakes: a good
certificate for the SIP domain is accepted; expired, wrong host, self-signed, wrong CA and
revoked (CRL) are each refused; mTLS refuses clients without (or with a bad) certificate."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from callward.errors import ConfigError, TransportError
from callward.sip.tls import (
    TlsPolicy,
    check_sip_domain,
    client_context,
    expiry_alerts,
    seconds_until_expiry,
    server_context,
    sip_domain_matches,
)

DOMAIN = "sip.example.com"
NOW = dt.datetime.now(dt.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    days: tuple[float, float] = (-1, 30),
    client: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), False
        )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        eku = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), False)
    return b.sign(issuer_key, hashes.SHA256())


class Pki:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca_key = _key()
        self.ca = _cert("Test SIP CA", self.ca_key, None, ca=True)
        self.other_key = _key()
        self.other_ca = _cert("Other CA", self.other_key, None, ca=True)
        self.ca_file = self.write("ca.pem", self.ca)

    def write(self, name: str, *certs: x509.Certificate) -> str:
        path = self.tmp / name
        path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
        return str(path)

    def write_key(self, name: str, key: ec.EllipticCurvePrivateKey) -> str:
        path = self.tmp / name
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return str(path)

    def leaf(
        self, name: str, *, issuer: str = "ca", client: bool = False, **kw: object
    ) -> tuple[str, str, x509.Certificate]:
        key = _key()
        iss = None if issuer == "self" else (
            (self.ca, self.ca_key) if issuer == "ca" else (self.other_ca, self.other_key)
        )  # fmt: skip
        sans = kw.pop("sans", [x509.UniformResourceIdentifier(f"sip:{DOMAIN}"),
                               x509.DNSName(DOMAIN)])  # fmt: skip
        cert = _cert(name, key, iss, sans=sans, client=client, **kw)  # type: ignore[arg-type]
        return self.write(f"{name}.pem", cert), self.write_key(f"{name}.key", key), cert

    def crl(self, *revoked: x509.Certificate) -> str:
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca.subject)
            .last_update(NOW - dt.timedelta(hours=1))
            .next_update(NOW + dt.timedelta(days=7))
        )
        for c in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(c.serial_number)
                .revocation_date(NOW - dt.timedelta(minutes=5))
                .build()
            )
        crl = b.sign(self.ca_key, hashes.SHA256())
        path = self.tmp / "ca.crl.pem"
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return str(path)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


async def _exchange(server: ssl.SSLContext, client: ssl.SSLContext, domain: str = DOMAIN) -> None:
    """Handshake, RFC 5922 check, one echo; raises on any refusal."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readexactly(4))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server)
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=domain), 5
        )
        try:
            check_sip_domain(writer.get_extra_info("ssl_object"), domain)
            writer.write(b"ping")
            await writer.drain()
            if await asyncio.wait_for(reader.read(4), 5) != b"ping":
                raise ConnectionResetError("server closed the connection")
        finally:
            writer.close()
    finally:
        srv.close()
        await srv.wait_closed()


async def test_good_certificate_for_the_sip_domain_is_accepted(pki: Pki) -> None:
    cert, key, _ = pki.leaf("good")
    await _exchange(
        server_context(TlsPolicy(cert, key)), client_context(TlsPolicy(ca_file=pki.ca_file))
    )


@pytest.mark.parametrize("case", ["expired", "wrong-host", "self-signed", "wrong-ca", "revoked"])
async def test_bad_server_certificates_are_refused(pki: Pki, case: str) -> None:
    crl: tuple[str, ...] = ()
    if case == "expired":
        cert, key, _ = pki.leaf("expired", days=(-30, -1))
    elif case == "wrong-host":
        cert, key, _ = pki.leaf("wrong", sans=[x509.DNSName("other.example.com")])
    elif case == "self-signed":
        cert, key, _ = pki.leaf("self", issuer="self")
    elif case == "wrong-ca":
        cert, key, _ = pki.leaf("foreign", issuer="other")
    else:
        cert, key, leaf = pki.leaf("revoked")
        crl = (pki.crl(leaf),)
    client = client_context(TlsPolicy(ca_file=pki.ca_file, crl_files=crl))
    with pytest.raises((ssl.SSLError, TransportError)):
        await _exchange(server_context(TlsPolicy(cert, key)), client)


async def test_crl_that_revokes_another_certificate_still_accepts(pki: Pki) -> None:
    """Control for the revoked case: CRL checking on, this certificate not listed."""
    _, _, other = pki.leaf("someone-else")
    cert, key, _ = pki.leaf("fine")
    client = client_context(TlsPolicy(ca_file=pki.ca_file, crl_files=(pki.crl(other),)))
    await _exchange(server_context(TlsPolicy(cert, key)), client)


async def test_ip_address_is_not_the_identity(pki: Pki) -> None:
    """The certificate carries the edge's IP but not the SIP domain: refused (RFC 5922)."""
    cert, key, _ = pki.leaf("ip-only", sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    with pytest.raises(TransportError):
        await _exchange(server_context(TlsPolicy(cert, key)),
                        client_context(TlsPolicy(ca_file=pki.ca_file)))  # fmt: skip


async def test_mtls_requires_a_client_certificate_from_the_configured_ca(pki: Pki) -> None:
    cert, key, _ = pki.leaf("server")
    server = server_context(TlsPolicy(cert, key, ca_file=pki.ca_file, require_client_cert=True))
    ccert, ckey, cleaf = pki.leaf("node-2", client=True)
    good = client_context(TlsPolicy(ca_file=pki.ca_file, client_cert=ccert, client_key=ckey))
    await _exchange(server, good)
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await _exchange(server, client_context(TlsPolicy(ca_file=pki.ca_file)))
    fcert, fkey, _ = pki.leaf("intruder", issuer="other", client=True)
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await _exchange(server, client_context(
            TlsPolicy(ca_file=pki.ca_file, client_cert=fcert, client_key=fkey)))  # fmt: skip
    revoking = server_context(TlsPolicy(cert, key, ca_file=pki.ca_file, require_client_cert=True,
                                        crl_files=(pki.crl(cleaf),)))  # fmt: skip
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await _exchange(revoking, good)


async def test_minimum_version_is_enforced(pki: Pki) -> None:
    cert, key, _ = pki.leaf("v13")
    server = server_context(TlsPolicy(cert, key, min_version="TLSv1.3"))
    old = client_context(TlsPolicy(ca_file=pki.ca_file))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _exchange(server, old)


def test_rfc5922_name_rules(pki: Pki) -> None:
    def leaf(sans: list[x509.GeneralName] | None, cn: str = "x") -> x509.Certificate:
        return _cert(cn, _key(), (pki.ca, pki.ca_key), sans=sans)

    uri = x509.UniformResourceIdentifier
    assert sip_domain_matches(leaf([uri("sip:Example.com")]), "example.com.")
    # sip: URI SANs present: dNSName no longer counts
    assert not sip_domain_matches(leaf([uri("sip:a.com"), x509.DNSName("b.com")]), "b.com")
    assert sip_domain_matches(leaf([x509.DNSName("b.com")]), "b.com")
    assert not sip_domain_matches(leaf([x509.DNSName("*.b.com")]), "x.b.com")  # no wildcards
    assert sip_domain_matches(leaf(None, cn="c.com"), "c.com")  # CN only without any SAN
    assert not sip_domain_matches(leaf([x509.DNSName("d.com")], cn="c.com"), "c.com")


def test_config_errors_are_one_line() -> None:
    with pytest.raises(ConfigError, match="min_version"):
        TlsPolicy(min_version="SSLv3")
    with pytest.raises(ConfigError, match="ca_file"):
        TlsPolicy(require_client_cert=True)
    with pytest.raises(ConfigError, match="ciphers"):
        client_context(TlsPolicy(ciphers="NOPE-NOTHING"))


def test_expiry_metric_and_alerts(pki: Pki) -> None:
    _, _, soon = pki.leaf("soon", days=(-10, 5))
    _, _, later = pki.leaf("later", days=(-10, 300))
    _, _, dead = pki.leaf("dead", days=(-10, -1))
    now = NOW.timestamp()
    assert 4 * 86400 < seconds_until_expiry([soon], now) <= 5 * 86400
    alerts = expiry_alerts([("server", [soon]), ("client", [later]), ("sti", [dead])], now)
    assert [(a.rule, a.source) for a in alerts] == [
        ("tls-cert-expiring", "server"),
        ("tls-cert-expired", "sti"),
    ]


# ---------------------------------------------------------------------------------------------
# RFC 5922 in the transport: TlsTransport.connect checks the SIP domain the owner expects at an
# address (expect_identity), and nothing is sent over a connection that fails the check.
# ---------------------------------------------------------------------------------------------


OPTIONS = (
    b"OPTIONS sip:sip.example.com SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-5922\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: r5922\r\n"
    b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize(
    ("case", "accepted"),
    [
        ("sip-uri-and-dns", True),
        ("sip-uri-wins-over-dns", True),
        ("dns-only", True),
        ("wrong-host", False),
        ("wildcard", False),
        ("cn-with-other-san", False),
        ("sip-uri-for-other-domain", False),
        ("by-address-only", False),
    ],
)
async def test_transport_verifies_the_sip_domain_not_the_address(
    pki: Pki, case: str, accepted: bool
) -> None:
    from callward.sip.transport import TlsTransport

    sans = {
        "sip-uri-and-dns": [x509.UniformResourceIdentifier(f"sip:{DOMAIN}"), x509.DNSName(DOMAIN)],
        "sip-uri-wins-over-dns": [
            x509.UniformResourceIdentifier(f"sip:{DOMAIN}"),
            x509.DNSName("other.example.com"),
        ],
        "dns-only": [x509.DNSName(DOMAIN)],
        "wrong-host": [x509.DNSName("other.example.com")],
        "wildcard": [x509.DNSName("*.example.com")],
        "cn-with-other-san": [x509.DNSName("other.example.com")],  # CN is the domain
        "sip-uri-for-other-domain": [
            x509.UniformResourceIdentifier("sip:other.example.com"),
            x509.DNSName(DOMAIN),  # ignored: sip: URI SANs present (RFC 5922 §7.1)
        ],
        "by-address-only": [x509.UniformResourceIdentifier(f"sip:{DOMAIN}")],
    }[case]
    cn = DOMAIN if case == "cn-with-other-san" else case
    cert, key, _ = pki.leaf(cn, sans=sans)
    got: list[object] = []
    srv = await TlsTransport.listen(
        "127.0.0.1", 0, lambda *a: got.append(a), server_ssl=server_context(TlsPolicy(cert, key))
    )
    cli = await TlsTransport.listen(
        "127.0.0.1",
        0,
        lambda *a: None,
        server_ssl=server_context(TlsPolicy(cert, key)),
        client_ssl=client_context(TlsPolicy(ca_file=pki.ca_file)),
    )
    try:
        if case != "by-address-only":  # else the name checked is "127.0.0.1": no iPAddress SAN
            cli.expect_identity(srv.local_addr, DOMAIN)
        if accepted:
            await cli.send(OPTIONS, srv.local_addr)
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.02)
            assert len(got) == 1
        else:
            with pytest.raises(TransportError, match="RFC 5922"):
                await cli.send(OPTIONS, srv.local_addr)
            await asyncio.sleep(0.2)
            assert got == [] and cli.connections == {}
    finally:
        await cli.close()
        await srv.close()
