"""Key management: where the master key (the KEK wrapping every subject key) and the pseudonym
key come from. A small interface with two backends:

* ``file`` (embedded default): 32-byte key files under ``<data_dir>/keys/`` (mode 0600);
* ``pkcs11``: the master key is a non-extractable AES-256 key inside a PKCS#11 token (an HSM;
  tested with SoftHSM2), used for AES-GCM wrap/unwrap on the token (PKCS#11 v2.40
  ``CKM_AES_GCM``). The pseudonym key is stored wrapped by it (``keys/pseudonym.key.wrapped``)
  and unwrapped into memory at start, because a keyed HMAC per ingested subject cannot pay an
  HSM round trip.

A :class:`KeyRing` holds the current KEK and older ones still able to unwrap: rotation adds a new
current KEK, :meth:`callward.privacy.shred.KeyStore.rewrap` moves the wrapped subject keys over
in small transactions while the service keeps running, and the old KEK is retired afterwards.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from callward.errors import ConfigError, PolicyError, StoreError

__all__ = [
    "KeyRing",
    "KeyWrapper",
    "LocalKek",
    "Pkcs11Kek",
    "install_pseudonym_key",
    "load_file_ring",
    "load_pseudonym_key",
    "open_kms",
    "retire_file_keks",
    "rotate_file_ring",
]

_NONCE = 12
_CURRENT = "master.current"


class KeyWrapper(Protocol):
    @property
    def kek_id(self) -> str: ...

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, blob: bytes, aad: bytes) -> bytes: ...


@dataclass(frozen=True)
class LocalKek:
    """AES-256-GCM under a key held in memory (read from a 0600 file)."""

    key: bytes = field(repr=False)
    kek_id: str = "master"

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise PolicyError("master key: expected 32 bytes (AES-256)")

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM(self.key).encrypt(nonce, plaintext, aad)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        try:
            return AESGCM(self.key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except InvalidTag:
            raise PolicyError(f"KEK {self.kek_id}: cannot unwrap (wrong master key?)") from None


_SESSIONS: dict[tuple[str, str], Any] = {}
_SESSIONS_LOCK = threading.Lock()


def _session(lib: str, token: str, pin: str) -> Any:
    """One logged-in session per (library, token) and process: PKCS#11 login state is per
    application, so a second ``C_Login`` fails with CKR_USER_ALREADY_LOGGED_IN."""
    import pkcs11

    with _SESSIONS_LOCK:
        s = _SESSIONS.get((lib, token))
        if s is None:
            s = pkcs11.lib(lib).get_token(token_label=token).open(user_pin=pin, rw=True)
            _SESSIONS[(lib, token)] = s
        return s


class Pkcs11Kek:
    """An AES key inside a PKCS#11 token; GCM runs on the token, the key never leaves it."""

    def __init__(
        self, lib: str, token: str, pin: str, label: str = "callward-master", create: bool = True
    ) -> None:
        try:
            import pkcs11
            from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
        except ImportError:
            raise ConfigError("privacy.kms = pkcs11 needs python-pkcs11 installed") from None
        self._mech = Mechanism.AES_GCM
        self.kek_id = f"pkcs11:{label}"
        try:
            self._session = _session(lib, token, pin)
            try:
                self._key: Any = self._session.get_key(
                    ObjectClass.SECRET_KEY, KeyType.AES, label=label
                )
            except pkcs11.NoSuchKey:
                if not create:
                    raise ConfigError(f"PKCS#11 token {token!r}: no AES key {label!r}") from None
                self._key = self._session.generate_key(
                    KeyType.AES, 256, label=label, store=True,
                    template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True},
                )  # fmt: skip
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            raise ConfigError(f"PKCS#11 ({Path(lib).name}, token {token!r}): {exc!r}") from None

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        iv = os.urandom(_NONCE)
        from pkcs11 import GCMParams

        ct = self._key.encrypt(plaintext, mechanism=self._mech, mechanism_param=GCMParams(iv, aad))
        return iv + bytes(ct)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        import pkcs11

        try:
            param = pkcs11.GCMParams(blob[:_NONCE], aad)
            return bytes(
                self._key.decrypt(blob[_NONCE:], mechanism=self._mech, mechanism_param=param)
            )
        except pkcs11.PKCS11Error:
            raise PolicyError(f"KEK {self.kek_id}: cannot unwrap (wrong key?)") from None


@dataclass
class KeyRing:
    """The current KEK (wraps new keys) and older ones that may still unwrap."""

    current: KeyWrapper
    older: Mapping[str, KeyWrapper] = field(default_factory=dict)

    def get(self, kek_id: str) -> KeyWrapper:
        if kek_id == self.current.kek_id:
            return self.current
        kek = self.older.get(kek_id)
        if kek is None:
            raise PolicyError(f"KEK {kek_id!r} is not available (retired or wrong KMS config)")
        return kek

    @classmethod
    def single(cls, kek: KeyWrapper) -> KeyRing:
        return cls(kek, {})


def _read_key(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) != 32:
        raise PolicyError(f"{path}: expected a 32-byte key file")
    return data


def _write_key(path: Path, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)


def load_file_ring(keys_dir: Path) -> KeyRing:
    """``keys/master.key`` (id ``master``) plus rotated ``master-<n>.key`` files; the current
    one is named in ``master.current`` (created with a new random key when nothing exists)."""
    try:
        files = {p.stem: p for p in keys_dir.glob("master*.key")}
        if not files:
            key = os.urandom(32)
            _write_key(keys_dir / "master.key", key)
            files = {"master": keys_dir / "master.key"}
        ptr = keys_dir / _CURRENT
        current = ptr.read_text().strip() if ptr.exists() else "master"
        if current not in files:
            raise PolicyError(f"{ptr}: names {current!r}, which has no key file")
        keks = {kid: LocalKek(_read_key(p), kid) for kid, p in files.items()}
    except OSError as exc:
        raise StoreError(f"{keys_dir}: cannot read master keys: {exc.strerror}") from None
    return KeyRing(keks.pop(current), keks)


def rotate_file_ring(keys_dir: Path, now: float | None = None) -> str:
    """Create a new master key and make it current; returns its id. Old keys stay until
    :func:`retire_file_keks` after the subject keys were re-wrapped."""
    kid = f"master-{int(now if now is not None else time.time())}-{os.urandom(3).hex()}"
    _write_key(keys_dir / f"{kid}.key", os.urandom(32))
    tmp = keys_dir / (_CURRENT + ".tmp")
    tmp.write_text(kid + "\n")
    os.replace(tmp, keys_dir / _CURRENT)
    return kid


def retire_file_keks(keys_dir: Path, keep: str) -> list[str]:
    """Zero and delete every master key file except ``keep``; returns the retired ids."""
    gone = []
    for p in keys_dir.glob("master*.key"):
        if p.stem != keep:
            with p.open("r+b") as fh:
                fh.write(b"\0" * 32)
                fh.flush()
                os.fsync(fh.fileno())
            p.unlink()
            gone.append(p.stem)
    return sorted(gone)


def open_kms(privacy: Any, keys_dir: Path, environ: Mapping[str, str] | None = None) -> KeyRing:
    """The KeyRing a deployment's ``privacy`` config section names."""
    env = os.environ if environ is None else environ
    if privacy.kms == "file":
        return load_file_ring(keys_dir)
    pin = env.get(privacy.pkcs11_pin_env)
    if not pin:
        raise ConfigError(f"privacy.kms = pkcs11: set the token PIN in ${privacy.pkcs11_pin_env}")
    if not privacy.pkcs11_lib or not privacy.pkcs11_token:
        raise ConfigError("privacy.kms = pkcs11: set privacy.pkcs11_lib and privacy.pkcs11_token")
    return KeyRing.single(
        Pkcs11Kek(privacy.pkcs11_lib, privacy.pkcs11_token, pin, privacy.pkcs11_key_label)
    )


def load_pseudonym_key(ring: KeyRing, keys_dir: Path, file_backend: bool) -> bytes:
    """The HMAC pseudonym key: a plain 0600 file with the file backend, else stored wrapped by
    the current KEK (``pseudonym.key.wrapped``)."""
    from callward.privacy.shred import load_or_create_key

    if file_backend:
        return load_or_create_key(keys_dir / "pseudonym.key")
    path = keys_dir / "pseudonym.key.wrapped"
    aad = b"callward-pseudonym-key"
    try:
        if path.exists():
            blob = path.read_bytes()
            kid, _, wrapped = blob.partition(b"\n")
            return ring.get(kid.decode()).unwrap(wrapped, aad)
        key = os.urandom(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(ring.current.kek_id.encode() + b"\n" + ring.current.wrap(key, aad))
        return key
    except OSError as exc:
        raise StoreError(f"{path}: cannot read or create: {exc.strerror}") from None


def install_pseudonym_key(ring: KeyRing, keys_dir: Path, file_backend: bool, key: bytes) -> bool:
    """Put a restored pseudonym key in place before the store opens (restore into an empty
    ``var/``). Returns False when the same key is already there; PolicyError when a different
    one is (pseudonyms of existing rows would no longer match)."""
    if len(key) < 16:
        raise PolicyError("pseudonym key in backup: too short")
    plain, wrapped = keys_dir / "pseudonym.key", keys_dir / "pseudonym.key.wrapped"
    existing = plain if file_backend else wrapped
    if existing.exists():
        if load_pseudonym_key(ring, keys_dir, file_backend) == key:
            return False
        raise PolicyError(
            f"{existing}: a different pseudonym key exists; restore into an empty data directory"
        )
    keys_dir.mkdir(parents=True, exist_ok=True)
    if file_backend:
        _write_key(plain, key)
    else:
        aad = b"callward-pseudonym-key"
        blob = ring.current.kek_id.encode() + b"\n" + ring.current.wrap(key, aad)
        fd = os.open(wrapped, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
    return True
