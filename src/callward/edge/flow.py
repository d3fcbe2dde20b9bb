"""RFC 5626 flow tokens and topology-hiding contact tokens.

A *flow token* encodes a :class:`~callward.sip.peer.Peer` (transport, address, port and the
connection id, RFC 5626 §5.3) plus the node that owns the connection, HMAC-signed so that a
forged Route cannot make an edge send to an arbitrary address (RFC 5626 §5.2 "the token MUST
be tamper-proof"). A *contact token* seals an internal Contact URI for topology hiding; it is
encrypted as well, since the URI names the subscriber and the inside address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from callward.sip.peer import Peer

__all__ = [
    "Peer",
    "decode_contact_token",
    "decode_flow_token",
    "encode_contact_token",
    "encode_flow_token",
]


def encode_flow_token(secret: bytes, node: str, peer: Peer) -> str:
    """A URI-user-safe token (base64url: unreserved characters only, §25.1) that names
    ``peer`` on ``node``. SIP compares user parts case-sensitively, so base64 is safe."""
    raw = f"{node}|{peer.transport}|{peer.host}|{peer.port}|{peer.conn}".encode()
    mac = hmac.new(secret, raw, hashlib.sha256).digest()[:10]
    return "f" + base64.urlsafe_b64encode(mac + raw).decode().rstrip("=")


def decode_flow_token(secret: bytes, token: str) -> tuple[str, Peer] | None:
    """``(node, peer)`` for a genuine token, None for anything else (never raises)."""
    if not token.startswith("f") or len(token) > 400:
        return None
    text = token[1:]
    try:
        blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        return None
    mac, raw = blob[:10], blob[10:]
    if not hmac.compare_digest(mac, hmac.new(secret, raw, hashlib.sha256).digest()[:10]):
        return None
    try:
        node, transport, host, port, conn = raw.decode().split("|")
        return node, Peer(transport, host, int(port), conn)
    except ValueError:
        return None


def _contact_aead(secret: bytes) -> AESSIV:
    key = _SIV_KEYS.get(secret)
    if key is None:
        if len(_SIV_KEYS) > 16:
            _SIV_KEYS.clear()
        key = _SIV_KEYS[secret] = AESSIV(
            hmac.new(secret, b"callward contact token", hashlib.sha512).digest()
        )
    return key


_SIV_KEYS: dict[bytes, AESSIV] = {}


def encode_contact_token(secret: bytes, uri: str) -> str:
    """Topology hiding: an internal Contact URI sealed into a URI user part. Encrypted and
    authenticated (AES-SIV, RFC 5297, deterministic so one Contact always gives one token): an
    outsider can neither read the internal address and user (an MSISDN) nor make the edge
    forward to an address of its choosing."""
    sealed = _contact_aead(secret).encrypt(uri.encode(), [b"contact"])
    return "c" + base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def decode_contact_token(secret: bytes, token: str) -> str | None:
    if not token.startswith("c") or len(token) > 1200:
        return None
    text = token[1:]
    try:
        blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return _contact_aead(secret).decrypt(blob, [b"contact"]).decode()
    except (ValueError, TypeError, InvalidTag, UnicodeDecodeError):
        return None
