"""SQLite store: WAL, batched upserts, the shared query API, sealed identifiers."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callward.errors import StoreError
from callward.events import CallEnded, CallStarted
from callward.records.rows import CdrQuery
from callward.records.schema import Cdr
from callward.records.store_sqlite import SqliteCdrStore
from callward.records.synthetic import synthetic_cdrs


def _strip(c: Cdr) -> Cdr:
    return dataclasses.replace(c, lineage=dataclasses.replace(c.lineage, transformations=()))


def test_roundtrip_query_and_lineage(sqlite_store: SqliteCdrStore) -> None:
    cdrs = list(synthetic_cdrs(1000, subjects=50))
    assert sqlite_store.write(cdrs) == 1000
    got = sqlite_store.query(CdrQuery())
    assert [_strip(c) for c in got] == [_strip(c) for c in cdrs]
    assert got[0].lineage.transformations[-1] == "read:sqlite"
    mode = sqlite3.connect(sqlite_store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_subject_lookup_matches_a_brute_force_reference(sqlite_store: SqliteCdrStore) -> None:
    cdrs = list(synthetic_cdrs(2000, subjects=40))
    sqlite_store.write(cdrs)
    number = cdrs[17].caller.split(":")[1].split("@")[0]  # "+447700..."
    expected = {c.call_id for c in cdrs if number in (c.caller + c.callee)}
    for form in (number, f"tel:{number}", f"sip:{number}@other.example;user=phone"):
        got = sqlite_store.query(CdrQuery(subject=form))
        assert {c.call_id for c in got} == expected
    assert sqlite_store.count(CdrQuery(subject=number, limit=1)) == len(expected)
    window = CdrQuery(start_from=cdrs[10].start_ts, start_to=cdrs[20].start_ts)
    assert [c.call_id for c in sqlite_store.query(window)] == [c.call_id for c in cdrs[10:20]]
    busy = {c.call_id for c in cdrs if c.disposition == "busy"}
    assert {c.call_id for c in sqlite_store.query(CdrQuery(disposition="busy"))} == busy


def test_upsert_is_idempotent_and_delete_minimize(sqlite_store: SqliteCdrStore) -> None:
    cdrs = list(synthetic_cdrs(300))
    sqlite_store.write(cdrs)
    sqlite_store.write(cdrs[:150])
    assert sqlite_store.count(CdrQuery()) == 300
    assert sqlite_store.delete([c.call_id for c in cdrs[:10]]) == 10
    assert sqlite_store.count(CdrQuery()) == 290
    assert sqlite_store.minimize([cdrs[20].call_id]) == 1
    (small,) = sqlite_store.query(CdrQuery(call_ids=(cdrs[20].call_id,)))
    assert small.caller == "" and small.callee == "" and small.start_ts == cdrs[20].start_ts
    assert "minimized:direct identifier" in small.lineage.transformations
    assert sqlite_store.query(CdrQuery(subject=cdrs[20].caller, call_ids=(cdrs[20].call_id,))) == []


def test_identifiers_never_in_the_file_in_clear(sqlite_store: SqliteCdrStore) -> None:
    cdrs = list(synthetic_cdrs(200, subjects=5))
    sqlite_store.write(cdrs)
    blob = sqlite_store.path.read_bytes() + sqlite_store.path.with_name("cdr.db-wal").read_bytes()
    for c in cdrs[:5]:
        assert c.caller.encode() not in blob and c.caller[4:17].encode() not in blob


def test_journal_is_idempotent_and_sealed(sqlite_store: SqliteCdrStore) -> None:
    evs = [
        CallStarted(ts=1.0, node="e1", seq=1, call_id="j@x", caller="tel:+447700900123"),
        CallEnded(ts=2.0, node="e1", seq=2, call_id="j@x", status=486),
    ]
    assert sqlite_store.journal_append(evs) == 2
    assert sqlite_store.journal_append(evs) == 0
    assert sorted(sqlite_store.journal_events(), key=lambda e: e.seq) == evs
    raw = sqlite3.connect(sqlite_store.path).execute("SELECT payload FROM event_journal").fetchall()
    assert all("447700900123" not in r[0] for r in raw)
    assert sqlite_store.journal_drop(["j@x"]) == 2


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda c: (
                st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=6)
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {
                "kind": st.sampled_from(["call_started", "call_ended", "media_stats", "x"]),
                "ts": st.floats(),
                "node": st.text(max_size=5),
                "seq": st.integers(),
                "caller": st.one_of(st.text(max_size=5), st.just({"sealed": "AAAA"})),
            }
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_decode_event_only_raises_store_error(codec, payload: bytes) -> None:
    try:
        codec.decode_event(payload)
    except StoreError:
        pass


def test_parallel_writer_process_commits_everything(tmp_path, codec) -> None:
    from callward.records.bulk_writer import BulkWriter

    cdrs = list(synthetic_cdrs(1200, subjects=30))
    store = SqliteCdrStore(tmp_path / "par.db", codec, batch_size=100, parallel=True)
    assert store.write(cdrs) == 1200
    proc = store._writer._proc  # type: ignore[union-attr]
    assert [c.call_id for c in store.query(CdrQuery())] == [c.call_id for c in cdrs]
    store.close()
    assert proc.poll() is not None  # the child exited with the store
    bad = BulkWriter(str(tmp_path / "par.db"), "INSERT INTO nope VALUES (?)")
    bad.submit([(1,)])
    with pytest.raises(StoreError, match="nope"):
        bad.drain()
    bad.close()
