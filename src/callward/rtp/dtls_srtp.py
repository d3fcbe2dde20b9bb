"""DTLS-SRTP key agreement (RFC 5763, RFC 5764), sans-IO over pyOpenSSL's memory BIOs.

The handshake runs on the media 5-tuple (RFC 5764 §5.1.2 demultiplexes by the first byte,
:func:`is_dtls`); the peer's certificate is self-signed and is trusted only because its
fingerprint matches the ``a=fingerprint`` the signalling carried (RFC 5763 §5). Once the
handshake is done the SRTP master keys come from the TLS exporter with the label
``EXTRACTOR-dtls_srtp`` (RFC 5705, RFC 5764 §4.2): ``client key | server key | client salt |
server salt``, and the side that was the DTLS client sends with the client key.

Sans-IO with the usual vocabulary: ``receive_datagram(data, now)``, ``datagrams_to_send()``,
``next_event()``, ``get_timer()``, ``handle_timer(now)``. One caveat: OpenSSL keeps its own
retransmission clock, so :meth:`DtlsSrtpSession.handle_timer` asks OpenSSL whether its timer
really expired (a test clock running ahead of wall time cannot force a retransmission).
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import hmac
from collections import deque
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from callward.errors import MediaError
from callward.rtp.srtp import SrtpKeying, SrtpProfile

__all__ = [
    "DtlsCertificate",
    "DtlsError",
    "DtlsSrtpSession",
    "DtlsState",
    "HandshakeComplete",
    "HandshakeFailed",
    "is_dtls",
]

EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"  # RFC 5764 §4.2
MAX_DTLS_RECORD = 16_384 + 2_048  # a DTLS record cannot be larger (RFC 9147 §4)
DEFAULT_MTU = 1200  # keep handshake flights under a conservative path MTU (RFC 8842 §5)

# RFC 5764 §4.1.2 profile names (what OpenSSL negotiates) and our SRTP suite for each.
_PROFILES: dict[bytes, SrtpProfile] = {
    b"SRTP_AES128_CM_SHA1_80": SrtpProfile.AES_CM_128_HMAC_SHA1_80,
    b"SRTP_AEAD_AES_128_GCM": SrtpProfile.AEAD_AES_128_GCM,
    b"SRTP_AES128_CM_SHA1_32": SrtpProfile.AES_CM_128_HMAC_SHA1_32,
}
_HASHES = {"sha-1": "sha1", "sha-224": "sha224", "sha-256": "sha256", "sha-384": "sha384",
           "sha-512": "sha512"}  # fmt: skip


def is_dtls(data: bytes) -> bool:
    """RFC 7983 §7: a first byte in 20..63 is DTLS (STUN is 0..3, RTP/RTCP 128..191)."""
    return len(data) >= 13 and 20 <= data[0] <= 63


class DtlsError(MediaError):
    """The DTLS handshake failed or the peer's certificate does not match its fingerprint."""


@dataclass(frozen=True, slots=True)
class DtlsCertificate:
    """A self-signed ECDSA P-256 certificate (RFC 8827 §6.5 style) and its key."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls, *, days: int = 30, now: datetime.datetime | None = None) -> DtlsCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callward")])
        start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(days=1)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def fingerprint(self, hash_function: str = "sha-256") -> bytes:
        """The digest of the DER certificate for ``a=fingerprint`` (RFC 8122 §5)."""
        return _digest(self.certificate, hash_function)


def _digest(cert: x509.Certificate, hash_function: str) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    name = _HASHES.get(hash_function.lower())
    if name is None:
        raise DtlsError(f"unsupported fingerprint hash {hash_function[:20]!r} (RFC 8122 §5)")
    return hashlib.new(name, cert.public_bytes(Encoding.DER)).digest()


class DtlsState(enum.Enum):
    NEW = "new"
    HANDSHAKING = "handshaking"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    profile: SrtpProfile
    send: SrtpKeying  # keys what we send
    receive: SrtpKeying  # keys what we accept


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    reason: str


DtlsEvent = HandshakeComplete | HandshakeFailed


class DtlsSrtpSession:
    """One DTLS-SRTP association for one media stream. ``client`` is True when our
    ``a=setup`` role is ``active`` (RFC 5763 §5); ``remote_fingerprints`` are the peer's
    ``(hash function, digest)`` pairs from its SDP."""

    def __init__(
        self,
        certificate: DtlsCertificate,
        *,
        client: bool,
        remote_fingerprints: tuple[tuple[str, bytes], ...],
        profiles: tuple[SrtpProfile, ...] = (
            SrtpProfile.AES_CM_128_HMAC_SHA1_80,
            SrtpProfile.AES_CM_128_HMAC_SHA1_32,
        ),
        mtu: int = DEFAULT_MTU,
    ) -> None:
        if not remote_fingerprints:
            raise DtlsError("DTLS-SRTP needs the peer's a=fingerprint (RFC 5763 §5)")
        self.client = client
        self.remote_fingerprints = remote_fingerprints
        self.state = DtlsState.NEW
        self.keys: HandshakeComplete | None = None
        self._events: deque[DtlsEvent] = deque()
        self._out: list[bytes] = []
        self._timer: float | None = None
        names = {v: k for k, v in _PROFILES.items()}
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_options(SSL.OP_NO_QUERY_MTU)
        ctx.use_certificate(certificate.certificate)
        ctx.use_privatekey(certificate.private_key)
        # Self-signed certificates: accept in the handshake, check the fingerprint after it.
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
        ctx.set_tlsext_use_srtp(b":".join(names[p] for p in profiles if p in names))
        self._conn = SSL.Connection(ctx, None)
        self._conn.set_ciphertext_mtu(mtu)
        if client:
            self._conn.set_connect_state()
        else:
            self._conn.set_accept_state()

    # ------------------------------------------------------------------ sans-IO surface
    def start(self, now: float) -> None:
        """Begin the handshake (the client sends its ClientHello; the server waits)."""
        if self.state is not DtlsState.NEW:
            return
        self.state = DtlsState.HANDSHAKING
        self._step(now)

    def receive_datagram(self, data: bytes, now: float) -> None:
        if not is_dtls(data) or len(data) > MAX_DTLS_RECORD:
            return
        if self.state in (DtlsState.FAILED, DtlsState.CLOSED):
            return
        if self.state is DtlsState.NEW:
            self.state = DtlsState.HANDSHAKING
        try:
            self._conn.bio_write(data)
        except SSL.Error:
            return
        self._step(now)

    def datagrams_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> DtlsEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return self._timer if self.state is DtlsState.HANDSHAKING else None

    def handle_timer(self, now: float) -> None:
        if self.state is not DtlsState.HANDSHAKING or self._timer is None or now < self._timer:
            return
        self._timer = None
        try:
            self._conn.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(f"DTLS retransmission failed: {_text(exc)}")
            return
        self._flush(now)

    def close(self) -> None:
        """Send close_notify (RFC 5246 §7.2.1) if connected."""
        if self.state is DtlsState.CONNECTED:
            try:
                self._conn.shutdown()
            except SSL.Error:
                pass
            self._flush(None)
        self.state = DtlsState.CLOSED

    # ------------------------------------------------------------------ internals
    def _step(self, now: float) -> None:
        if self.state is DtlsState.HANDSHAKING:
            try:
                self._conn.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error as exc:
                self._flush(now)
                self._fail(f"DTLS handshake failed: {_text(exc)}")
                return
            else:
                self._flush(now)
                self._complete()
                return
        elif self.state is DtlsState.CONNECTED:
            # The peer retransmits its last flight when ours was lost: reading lets OpenSSL
            # answer it; application data and alerts end here.
            try:
                self._conn.recv(MAX_DTLS_RECORD)
            except SSL.ZeroReturnError:
                self.state = DtlsState.CLOSED
            except (SSL.WantReadError, SSL.Error):
                pass
        self._flush(now)

    def _flush(self, now: float | None) -> None:
        while True:
            try:
                data = self._conn.bio_read(MAX_DTLS_RECORD)
            except SSL.WantReadError:
                break
            if not data:
                break
            self._out.append(data)
        if now is not None and self.state is DtlsState.HANDSHAKING:
            timeout = self._conn.DTLSv1_get_timeout()
            self._timer = None if timeout is None else now + timeout

    def _fail(self, reason: str) -> None:
        self.state = DtlsState.FAILED
        self._timer = None
        self._events.append(HandshakeFailed(reason))

    def _complete(self) -> None:
        cert = self._conn.get_peer_certificate(as_cryptography=True)
        if cert is None:
            self._fail("peer sent no certificate")
            return
        matched = False
        for hash_function, expected in self.remote_fingerprints:
            try:
                matched = hmac.compare_digest(_digest(cert, hash_function), expected)
            except DtlsError:
                continue
            if matched:
                break
        if not matched:
            self._fail("peer certificate does not match its a=fingerprint (RFC 5763 §5)")
            return
        name = self._conn.get_selected_srtp_profile()
        profile = _PROFILES.get(name)
        if profile is None:
            self._fail("no SRTP protection profile negotiated (RFC 5764 §4.1.2 use_srtp)")
            return
        k, s = profile.key_length, profile.salt_length
        material = self._conn.export_keying_material(EXPORTER_LABEL, 2 * (k + s))
        client_key, server_key = material[:k], material[k : 2 * k]
        client_salt, server_salt = material[2 * k : 2 * k + s], material[2 * k + s :]
        client = SrtpKeying(profile, client_key, client_salt)
        server = SrtpKeying(profile, server_key, server_salt)
        send, receive = (client, server) if self.client else (server, client)
        self.keys = HandshakeComplete(profile, send, receive)
        self.state = DtlsState.CONNECTED
        self._timer = None
        self._events.append(self.keys)


def _text(exc: SSL.Error) -> str:
    return str(exc)[:160] or type(exc).__name__
