"""Cold Parquet/DuckDB store: same answers as the hot store, purge rewrites files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow.parquet as pq

from callward.records.cold import ColdCdrStore, TieredStore, move_aged
from callward.records.rows import CdrQuery, RecordCodec
from callward.records.schema import Cdr
from callward.records.store_sqlite import SqliteCdrStore
from callward.records.synthetic import synthetic_cdrs


def _strip(c: Cdr) -> Cdr:
    return dataclasses.replace(c, lineage=dataclasses.replace(c.lineage, transformations=()))


def test_move_aged_then_same_answers(
    tmp_path: Path, codec: RecordCodec, sqlite_store: SqliteCdrStore
) -> None:
    # 3 days of calls at one every 5 minutes
    cdrs = list(synthetic_cdrs(864, spacing_s=300.0, subjects=30, start=1_760_000_000.0))
    sqlite_store.write(cdrs)
    number = cdrs[3].caller
    before = {c.call_id for c in sqlite_store.query(CdrQuery(subject=number))}
    cold = ColdCdrStore(tmp_path / "cold", codec)
    cutoff = cdrs[600].start_ts
    assert move_aged(sqlite_store, cold, cutoff, chunk=250) == 600
    assert sqlite_store.count(CdrQuery()) == 264
    days = sorted(p.name for p in (tmp_path / "cold").iterdir())
    assert days == ["day=2025-10-09", "day=2025-10-10", "day=2025-10-11"]  # 1_760_000_000 is
    # 2025-10-09T08:53:20Z (by hand: 20370 days * 86400 = 1_759_968_000 = 2025-10-09T00:00Z)
    tiered = TieredStore(sqlite_store, cold)
    assert {c.call_id for c in tiered.query(CdrQuery(subject=number))} == before
    got = tiered.query(CdrQuery())
    assert [_strip(c) for c in got] == [_strip(c) for c in cdrs]
    assert "moved:cold" in got[0].lineage.transformations
    assert got[0].lineage.transformations[-1] == "read:cold"
    win = CdrQuery(start_from=cdrs[100].start_ts, start_to=cdrs[110].start_ts)
    assert [c.call_id for c in cold.query(win)] == [c.call_id for c in cdrs[100:110]]
    assert cold.count(CdrQuery(tenant="default")) == 600


def test_cold_purge_rewrites_partition_files(tmp_path: Path, codec: RecordCodec) -> None:
    cold = ColdCdrStore(tmp_path / "cold", codec)
    cdrs = list(synthetic_cdrs(200, spacing_s=600.0, subjects=10))
    cold.write(cdrs)
    files_before = cold.files()
    doomed = [c.call_id for c in cdrs[:150]]
    assert cold.delete(doomed) == 150
    assert cold.count(CdrQuery()) == 50
    total = sum(pq.read_metadata(f).num_rows for f in cold.files())
    assert total == 50 and len(cold.files()) < len(files_before)
    assert cold.minimize([cdrs[160].call_id]) == 1
    (small,) = cold.query(CdrQuery(call_ids=(cdrs[160].call_id,)))
    assert small.caller == "" and small.start_ts == cdrs[160].start_ts
    assert "minimized:direct identifier" in small.lineage.transformations


def test_empty_cold_store_answers_empty(tmp_path: Path, codec: RecordCodec) -> None:
    cold = ColdCdrStore(tmp_path / "none", codec)
    assert cold.query(CdrQuery(subject="+447700900001")) == [] and cold.count(CdrQuery()) == 0


def test_subject_index_is_sorted_and_follows_purges(tmp_path: Path, codec: RecordCodec) -> None:
    cold = ColdCdrStore(tmp_path / "cold", codec)
    cdrs = list(synthetic_cdrs(3000, spacing_s=60.0, subjects=40))
    cold.write(cdrs)
    for idx in (tmp_path / "cold").glob("day=*/idx-*.parquet"):
        pns = pq.read_table(idx)["pn"].to_pylist()
        assert pns == sorted(pns) and pq.read_metadata(idx).num_rows == len(pns)
    subject = cdrs[7].callee
    brute = {c.call_id for c in cdrs if subject in (c.caller, c.callee)}
    assert {c.call_id for c in cold.query(CdrQuery(subject=subject))} == brute
    gone = sorted(brute)[:3]
    cold.delete(gone[:2])
    cold.minimize(gone[2:])
    assert {c.call_id for c in cold.query(CdrQuery(subject=subject))} == brute - set(gone)
    idx_ids = set()
    for idx in (tmp_path / "cold").glob("day=*/idx-*.parquet"):
        idx_ids |= set(pq.read_table(idx)["call_id"].to_pylist())
    assert not idx_ids & set(gone)
