"""Writer process: frames larger than a pipe buffer, every SQLite value type, errors reported."""

from __future__ import annotations

import sqlite3

import pytest

from callward.errors import StoreError
from callward.records.bulk_writer import BulkWriter


def test_large_batches_of_every_value_type_arrive_intact(tmp_path) -> None:
    path = str(tmp_path / "w.db")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, s TEXT, b BLOB, f REAL, n)")
    db.close()
    # ~3 MB a batch: far beyond the 64 KiB pipe buffer, so the child must keep reading.
    rows = [(i, f'é"\\{i}\u2028', bytes([i % 256]) * 600, i / 3, None) for i in range(10_000)]
    w = BulkWriter(path, "INSERT INTO t VALUES (?,?,?,?,?)", in_flight=2)
    for i in range(0, len(rows), 2500):
        w.submit(rows[i : i + 2500])
    assert w.drain() == len(rows)
    w.close()
    got = sqlite3.connect(path).execute("SELECT * FROM t ORDER BY k").fetchall()
    assert got == rows  # compared through the stock sqlite3 reader, not through our code


def test_failed_batch_is_reported_and_not_committed(tmp_path) -> None:
    path = str(tmp_path / "w.db")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    db.close()
    w = BulkWriter(path, "INSERT INTO t VALUES (?)")
    w.submit([(1,), (1,)])  # duplicate key: the whole transaction must roll back
    with pytest.raises(StoreError, match="UNIQUE"):
        w.drain()
    w.submit([(2,)])
    assert w.drain() == 1
    w.close()
    assert sqlite3.connect(path).execute("SELECT k FROM t").fetchall() == [(2,)]
