"""Data files holding secrets or personal data are 0600 in 0700 folders, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from callward.private_files import private_file


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_private_file_creates_and_tightens(tmp_path: Path, open_umask: None) -> None:
    p = private_file(tmp_path / "var" / "x.db")
    assert _mode(p) == 0o600 and _mode(p.parent) == 0o700
    loose = tmp_path / "loose.db"
    loose.write_text("x")
    loose.chmod(0o644)
    assert _mode(private_file(loose)) == 0o600 and loose.read_text() == "x"


def test_cdr_and_audit_databases_are_private(tmp_path: Path, open_umask: None) -> None:
    from callward.privacy import FieldCipher, KeyStore, Pseudonymizer
    from callward.records.audit import AuditLog
    from callward.records.rows import RecordCodec
    from callward.records.store_sqlite import SqliteCdrStore

    keys = KeyStore(tmp_path / "var" / "keys.db", bytes(range(32)))
    codec = RecordCodec(FieldCipher(keys, Pseudonymizer(b"pseudonym-key-for-tests")))
    store = SqliteCdrStore(tmp_path / "var" / "cdr.db", codec)
    store.close()
    audit = AuditLog(tmp_path / "var" / "audit.db")
    audit.close()
    for name in ("cdr.db", "audit.db", "keys.db"):
        f = tmp_path / "var" / name
        assert _mode(f) == 0o600, name
        for companion in f.parent.glob(name + "-*"):
            assert _mode(companion) == 0o600, companion.name
    assert _mode(tmp_path / "var") == 0o700


def test_subscriber_database_is_private(tmp_path: Path, open_umask: None) -> None:
    from callward.edge.subscribers import SqliteSubscribers, Subscriber

    subs = SqliteSubscribers(tmp_path / "var" / "subscribers.sqlite")
    subs.put(Subscriber.from_password("alice", "callward.local", "pw"))
    subs.close()
    assert _mode(tmp_path / "var" / "subscribers.sqlite") == 0o600
