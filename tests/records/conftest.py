"""Shared fixtures: a key store + codec in a temp dir, and a SQLite CDR store on top."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from callward.privacy import FieldCipher, KeyStore, Pseudonymizer
from callward.records.rows import RecordCodec
from callward.records.store_sqlite import SqliteCdrStore


@pytest.fixture
def codec(tmp_path: Path) -> Iterator[RecordCodec]:
    keys = KeyStore(tmp_path / "keys.db", bytes(range(32)))
    yield RecordCodec(FieldCipher(keys, Pseudonymizer(b"pseudonym-key-for-tests")))
    keys.close()


@pytest.fixture
def sqlite_store(tmp_path: Path, codec: RecordCodec) -> Iterator[SqliteCdrStore]:
    store = SqliteCdrStore(tmp_path / "cdr.db", codec, batch_size=100)
    yield store
    store.close()
