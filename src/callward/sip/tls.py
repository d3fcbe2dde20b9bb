"""TLS for SIP done right: contexts, RFC 5922 domain verification, mTLS, CRLs, expiry.

- **Server identity is the SIP domain** (RFC 5922 §7), not the address it resolved to: a
  ``sip:`` URI subjectAltName for the domain wins; when the certificate has any ``sip:`` URI
  SANs, only those count; otherwise a dNSName SAN equal to the domain; the subject CN only when
  there are no SANs at all. Wildcards never match (§7.2). Python's ``check_hostname`` knows none
  of this, so :func:`client_context` verifies the chain with OpenSSL and
  :func:`check_sip_domain` checks the name after the handshake.
- **mTLS**: :func:`server_context` requests and requires a client certificate when
  ``require_client_cert`` is set (callward nodes, trunks configured so), verified against
  ``ca_file``; :func:`client_context` presents ``client_cert``/``client_key``.
- **Revocation**: CRL files (PEM) switch on leaf CRL checking on both sides.
- **Versions and ciphers** are configurable (TLS 1.2 minimum by default; the cipher string
  applies to TLS <= 1.2, TLS 1.3 suites are OpenSSL's AEAD set).
- **Expiry**: :func:`seconds_until_expiry` and :func:`expiry_alerts` feed a metric and alerts.

No sockets here: the asyncio transport takes the contexts; the checks are pure functions.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from callward.errors import ConfigError, TransportError
from callward.events import SecurityAlert

__all__ = [
    "TlsPolicy",
    "check_sip_domain",
    "client_context",
    "expiry_alerts",
    "load_certificates",
    "seconds_until_expiry",
    "server_context",
    "sip_domain_matches",
]

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!RC4:!3DES"


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    cert: str | None = None  # our certificate chain (PEM)
    key: str | None = None
    ca_file: str | None = None  # trust anchors for peers (None: the system store)
    crl_files: tuple[str, ...] = ()
    min_version: str = "TLSv1.2"
    ciphers: str = DEFAULT_CIPHERS
    require_client_cert: bool = False  # server side mTLS
    client_cert: str | None = None  # what we present as a client (mTLS to peers/trunks)
    client_key: str | None = None

    def __post_init__(self) -> None:
        if self.min_version not in _VERSIONS:
            raise ConfigError(
                f"tls min_version: expected one of {sorted(_VERSIONS)}, got {self.min_version!r}"
            )
        if self.require_client_cert and not self.ca_file:
            raise ConfigError("tls require_client_cert needs ca_file (the client CA)")


def _common(ctx: ssl.SSLContext, policy: TlsPolicy) -> ssl.SSLContext:
    ctx.minimum_version = _VERSIONS[policy.min_version]
    try:
        ctx.set_ciphers(policy.ciphers)
    except ssl.SSLError:
        raise ConfigError(f"tls ciphers: OpenSSL accepts none of {policy.ciphers!r}") from None
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if policy.crl_files:
        for crl in policy.crl_files:
            try:
                ctx.load_verify_locations(cafile=crl)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"tls crl_files: cannot load {crl}: {exc}") from None
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str | None, what: str) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls {what}: cannot load {cert}: {exc}") from None


def server_context(policy: TlsPolicy) -> ssl.SSLContext:
    if not policy.cert:
        raise ConfigError("tls cert: a TLS listener needs a certificate")
    ctx = _common(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), policy)
    _load_chain(ctx, policy.cert, policy.key, "cert")
    if policy.require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=policy.ca_file)
    return ctx


def client_context(policy: TlsPolicy) -> ssl.SSLContext:
    """Chain verification always on; the name is checked per RFC 5922 by
    :func:`check_sip_domain` after the handshake (``check_hostname`` would accept wildcards
    and ignore ``sip:`` URI SANs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    _common(ctx, policy)
    if policy.ca_file:
        ctx.load_verify_locations(cafile=policy.ca_file)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if policy.client_cert:
        _load_chain(ctx, policy.client_cert, policy.client_key, "client_cert")
    return ctx


def sip_domain_matches(cert: x509.Certificate, domain: str) -> bool:
    """RFC 5922 §7.1-7.2 identity check of ``cert`` against the SIP ``domain``."""
    domain = domain.rstrip(".").lower()
    if not domain:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        if _is_ip(domain):  # a peer named by address (no domain): only an iPAddress SAN fits
            ips = san.get_values_for_type(x509.IPAddress)
            return any(ip == ipaddress.ip_address(domain.strip("[]")) for ip in ips)
        uris = [u.lower() for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
        sip_uris = [u for u in uris if u.startswith("sip:")]
        if sip_uris:
            return f"sip:{domain}" in sip_uris
        dns = [d.rstrip(".").lower() for d in san.get_values_for_type(x509.DNSName)]
        return domain in dns  # exact: "*" is a literal that never equals a domain
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return any(str(c.value).rstrip(".").lower() == domain for c in cns)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def check_sip_domain(ssl_object: ssl.SSLObject | ssl.SSLSocket, domain: str) -> None:
    """After a verified handshake: raise :class:`TransportError` unless the peer's
    certificate is for ``domain`` (RFC 5922)."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise TransportError("TLS peer sent no certificate")
    cert = x509.load_der_x509_certificate(der)
    if not sip_domain_matches(cert, domain):
        raise TransportError("TLS peer certificate is not for the SIP domain (RFC 5922)")


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"tls: cannot read certificates from {path}: {exc}") from None


def seconds_until_expiry(certs: Iterable[x509.Certificate], now: float) -> float:
    """Seconds until the first certificate in the chain expires (negative when expired)."""
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    deadlines = [c.not_valid_after_utc for c in certs]
    if not deadlines:
        return float("inf")
    return (min(deadlines) - when).total_seconds()


def expiry_alerts(
    named: Iterable[tuple[str, list[x509.Certificate]]],
    now: float,
    *,
    warn_days: float = 21.0,
    node: str = "edge",
) -> list[SecurityAlert]:
    """One alert per certificate role (``server``, ``client``, ``sti``...) expiring within
    ``warn_days`` or already expired; ``detail`` holds the role and days left (no names)."""
    out: list[SecurityAlert] = []
    for i, (role, certs) in enumerate(named):
        left = seconds_until_expiry(certs, now)
        if left <= warn_days * 86400:
            rule = "tls-cert-expired" if left <= 0 else "tls-cert-expiring"
            out.append(
                SecurityAlert(
                    ts=now, node=node, seq=i + 1, rule=rule, source=role,
                    detail=f"{role} certificate: {left / 86400:.1f} days left",
                )
            )  # fmt: skip
    return out
