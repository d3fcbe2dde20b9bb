"""Encrypted storage on the device: credentials, tokens, SRTP/DTLS keys, cached personal data.

Every record is sealed with AES-256-GCM (NIST SP 800-38D) under one device key before it
touches the disk; nothing sensitive is ever written in the clear, not even to a temporary
file. The key comes from one of two places:

* the OS keyring (:mod:`keyring`: Secret Service, macOS Keychain, Windows Credential Locker,
  Android Keystore via its Python bridge): a random 256-bit key created on first use; or
* a passphrase stretched with scrypt (RFC 7914; ``N=2^15, r=8, p=1`` by default, ~32 MiB and
  ~0.1 s per unlock, a random 16-byte salt kept next to the records: it is not secret).

File format of one record (``<name>.cws``)::

    b"CWS1" | nonce (12 random bytes) | AES-GCM(key, nonce, plaintext, aad=b"callward:" + name)

The record name is the associated data, so a record copied over another slot fails to open.
Writes go to a temporary file *in the storage directory* holding only ciphertext, then an
atomic rename; a crash leaves the old record or the new one, never a mix or a clear copy.
A wrong passphrase or a tampered file is an :class:`~callward.errors.AuthError`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from callward.errors import AuthError, StoreError

__all__ = ["Keystore"]

MAGIC = b"CWS1"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CHECK = "keystore-check"
MAX_RECORD_BYTES = 16 * 1024 * 1024


class Keystore:
    """See the module docstring. Open with :meth:`with_passphrase` or :meth:`with_keyring`."""

    def __init__(self, directory: Path | str, key: bytes) -> None:
        if len(key) != 32:
            raise AuthError("keystore key must be 32 bytes (AES-256)")
        self.dir = Path(directory)
        self._aead = AESGCM(key)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        check = self.get(_CHECK)
        if check is None:
            self.put(_CHECK, b"callward keystore v1")
        elif check != b"callward keystore v1":
            raise AuthError("keystore: check record does not match")

    @classmethod
    def with_passphrase(cls, directory: Path | str, passphrase: str, *, n: int = 2**15) -> Keystore:
        """Derive the key from ``passphrase`` with scrypt (salt created on first use)."""
        if not passphrase:
            raise AuthError("keystore passphrase must not be empty")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        salt_file = d / "scrypt.salt"
        if salt_file.exists():
            salt = salt_file.read_bytes()
        else:
            salt = secrets.token_bytes(16)
            _atomic_write(salt_file, salt)
        key = Scrypt(salt=salt, length=32, n=n, r=8, p=1).derive(passphrase.encode("utf-8"))
        return cls(d, key)

    @classmethod
    def with_keyring(
        cls, directory: Path | str, *, service: str = "callward", account: str = "device-key"
    ) -> Keystore:
        """Take the key from the OS keyring, creating a random one on first use."""
        import keyring
        from keyring.errors import KeyringError

        try:
            stored = keyring.get_password(service, account)
            if stored is None:
                stored = base64.b64encode(secrets.token_bytes(32)).decode()
                keyring.set_password(service, account, stored)
        except KeyringError as exc:
            raise AuthError(f"OS keyring unavailable: {type(exc).__name__}") from None
        try:
            key = base64.b64decode(stored, validate=True)
        except ValueError:
            raise AuthError("keyring entry is not a base64 key") from None
        return cls(directory, key)

    def _path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise StoreError(f"record name {name[:70]!r}: expected [a-z0-9._-], 1..64 chars")
        return self.dir / f"{name}.cws"

    def put(self, name: str, data: bytes) -> None:
        if len(data) > MAX_RECORD_BYTES:
            raise StoreError(f"record {name!r}: larger than 16 MiB")
        path = self._path(name)
        nonce = secrets.token_bytes(12)  # random 96-bit nonces: fine far below 2^32 writes/key
        sealed = MAGIC + nonce + self._aead.encrypt(nonce, data, b"callward:" + name.encode())
        _atomic_write(path, sealed)

    def get(self, name: str) -> bytes | None:
        path = self._path(name)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"record {name!r}: {exc.strerror}") from None
        if len(blob) < len(MAGIC) + 12 + 16 or not blob.startswith(MAGIC):
            raise AuthError(f"record {name!r}: not a callward keystore record")
        nonce, body = blob[4:16], blob[16:]
        try:
            return self._aead.decrypt(nonce, body, b"callward:" + name.encode())
        except InvalidTag:
            raise AuthError(f"record {name!r}: wrong key or tampered data") from None

    def delete(self, name: str) -> bool:
        try:
            self._path(name).unlink()
            return True
        except FileNotFoundError:
            return False

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.cws") if p.stem != _CHECK)

    def put_json(self, name: str, value: Any) -> None:
        self.put(name, json.dumps(value, separators=(",", ":"), sort_keys=True).encode())

    def get_json(self, name: str) -> Any:
        raw = self.get(name)
        return None if raw is None else json.loads(raw)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
