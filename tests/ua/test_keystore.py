"""Device storage: AES-GCM records under a keyring or scrypt key, and the plaintext scan.

The scan test runs the phone's identity layer for real (login with TOTP and a refresh against
the local IdP over HTTP, tokens persisted by the TokenSource, credentials, SRTP master keys and
cached contacts stored), with DEBUG logging to a file and Python's temp directory pointed at the
test's, then searches every byte written for every secret in several encodings.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from keyring.backend import KeyringBackend

from callward.errors import AuthError, StoreError
from callward.ua.keystore import Keystore
from callward.ua.token_refresh import RefreshPolicy
from callward.ua.tokens import KEYSTORE_RECORD, Login, OAuthClient, TokenSource
from oauth_idp import LocalIdP

FAST_N = 2**12  # scrypt cost for tests; the default (2^15) is what devices use


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.items.pop((service, username), None)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    import keyring

    before = keyring.get_keyring()
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    yield ring
    keyring.set_keyring(before)


def test_passphrase_roundtrip_and_independent_decrypt(tmp_path: Path) -> None:
    ks = Keystore.with_passphrase(tmp_path, "correct horse", n=FAST_N)
    ks.put("credentials", b"secret-password")
    assert Keystore.with_passphrase(tmp_path, "correct horse", n=FAST_N).get("credentials") == (
        b"secret-password"
    )
    # independent reference: scrypt + AES-GCM per the documented format
    salt = (tmp_path / "scrypt.salt").read_bytes()
    key = Scrypt(salt=salt, length=32, n=FAST_N, r=8, p=1).derive(b"correct horse")
    blob = (tmp_path / "credentials.cws").read_bytes()
    assert blob[:4] == b"CWS1"
    assert AESGCM(key).decrypt(blob[4:16], blob[16:], b"callward:credentials") == (
        b"secret-password"
    )
    with pytest.raises(AuthError):
        Keystore.with_passphrase(tmp_path, "wrong horse", n=FAST_N)


def test_tamper_and_swap_detected(tmp_path: Path) -> None:
    ks = Keystore.with_passphrase(tmp_path, "pw", n=FAST_N)
    ks.put("a", b"alpha")
    ks.put("b", b"beta")
    (tmp_path / "a.cws").write_bytes((tmp_path / "b.cws").read_bytes())  # slot swap
    with pytest.raises(AuthError):
        ks.get("a")
    blob = bytearray((tmp_path / "b.cws").read_bytes())
    blob[-1] ^= 1
    (tmp_path / "b.cws").write_bytes(bytes(blob))
    with pytest.raises(AuthError):
        ks.get("b")
    with pytest.raises(StoreError):
        ks.put("../escape", b"x")
    assert ks.get("missing") is None and ks.names() == ["a", "b"]


def test_keyring_key(tmp_path: Path, memory_keyring: MemoryKeyring) -> None:
    ks = Keystore.with_keyring(tmp_path)
    ks.put_json("prefs", {"ring": "loud"})
    assert len(memory_keyring.items) == 1
    assert Keystore.with_keyring(tmp_path).get_json("prefs") == {"ring": "loud"}
    memory_keyring.items.clear()  # key lost: the data cannot be opened
    with pytest.raises(AuthError):
        Keystore.with_keyring(tmp_path)


def _forms(secret: bytes) -> list[bytes]:
    forms = [secret, base64.b64encode(secret), base64.urlsafe_b64encode(secret).rstrip(b"="),
             secret.hex().encode()]  # fmt: skip
    return [f for f in forms if len(f) >= 8]


async def test_nothing_sensitive_in_the_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_dir, tmp_dir, log_file = tmp_path / "device", tmp_path / "tmp", tmp_path / "phone.log"
    tmp_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_dir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_dir))
    handler = logging.FileHandler(log_file)
    # The IdP runs in this process only because it is a test peer: its own (server-side)
    # authlib debug lines are not the phone's log and are left out.
    handler.addFilter(lambda r: not r.name.startswith("authlib"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    idp = LocalIdP(access_ttl=60.0).start()
    try:
        idp.add_user("alice", "hunter2-passphrase")
        secret = idp.users["alice"].totp_secret

        async def code() -> str:
            return pyotp.TOTP(secret).now()

        ks = Keystore.with_passphrase(store_dir, "device passphrase", n=FAST_N)
        source = TokenSource(
            OAuthClient(f"{idp.issuer}/token", idp.client_id, "sip"),
            login=Login("alice", "hunter2-passphrase", code),
            policy=RefreshPolicy(skew=1.0),
            keystore=ks,
        )
        first = await source.access_token(timeout=5)
        source.token_refused()
        second = await source.access_token(timeout=5)
        await source.aclose()
        srtp_key = secrets.token_bytes(30)  # SRTP master key + salt (RFC 4568 inline key)
        dtls_key = secrets.token_bytes(32)
        ks.put_json("credentials", {"username": "alice", "password": "hunter2-passphrase",
                                    "totp_secret": secret})  # fmt: skip
        ks.put_json("srtp-keys", {"call-1": base64.b64encode(srtp_key).decode()})
        ks.put("dtls-key", dtls_key)
        contacts = {"Bob Example": "+14155550123", "Carol Sample": "+4930123456789"}
        ks.put_json("contacts", contacts)
        logging.getLogger("callward.test").debug("phone did its work")
    finally:
        idp.stop()
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    kept = ks.get_json(KEYSTORE_RECORD)
    assert kept["access_token"] == second and kept["refresh_token"]  # it was stored ...
    secrets_ = [first.encode(), second.encode(), kept["refresh_token"].encode(),
                b"hunter2-passphrase", secret.encode(), srtp_key, dtls_key,
                b"device passphrase"]  # fmt: skip
    secrets_ += [n.encode() for n in contacts.values()] + [k.encode() for k in contacts]
    written = [p for d in (store_dir, tmp_dir) for p in d.rglob("*") if p.is_file()]
    written.append(log_file)
    assert len(written) >= 6 and log_file.stat().st_size > 0
    for path in written:
        data = path.read_bytes()
        for s in secrets_:
            for form in _forms(s):
                assert form not in data, f"{path.name} holds a secret in the clear"
    # ... and only sealed: every record file is CWS1 + nonce + ciphertext
    assert all(p.read_bytes()[:4] == b"CWS1" for p in store_dir.glob("*.cws"))
    assert not list(tmp_dir.iterdir()) and not list(store_dir.glob(".*.tmp"))
    assert oct(os.stat(store_dir).st_mode & 0o777) == "0o700"
