"""PostgreSQL store against the real server: same answers as SQLite, partitions, COPY upsert."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from callward.events import CallEnded, CallStarted
from callward.records.rows import CdrQuery, RecordCodec
from callward.records.schema import Cdr
from callward.records.store_postgres import PostgresCdrStore
from callward.records.store_sqlite import SqliteCdrStore
from callward.records.synthetic import synthetic_cdrs

URL = "postgresql://postgres@127.0.0.1:5432/test"
pytestmark = pytest.mark.services


@pytest.fixture
def pg(codec: RecordCodec) -> Iterator[PostgresCdrStore]:
    try:
        psycopg.connect(URL, connect_timeout=3).close()
    except psycopg.Error:
        pytest.skip("why: PostgreSQL not reachable on 127.0.0.1:5432")
    schema = f"cw_test_{uuid.uuid4().hex[:10]}"
    store = PostgresCdrStore(URL, codec, schema=schema)
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(URL, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _strip(c: Cdr) -> Cdr:
    return dataclasses.replace(c, lineage=dataclasses.replace(c.lineage, transformations=()))


def test_same_answers_as_sqlite(pg: PostgresCdrStore, sqlite_store: SqliteCdrStore) -> None:
    # 2025-10-09T08:53:20Z + 1499 * 400 s = 2025-10-16T07:26:40Z: 8 calendar days
    cdrs = list(synthetic_cdrs(1500, spacing_s=400.0, subjects=30))
    assert pg.write(cdrs) == 1500
    sqlite_store.write(cdrs)
    assert len(pg.partitions()) == 8
    queries = [
        CdrQuery(),
        CdrQuery(subject=cdrs[4].callee),
        CdrQuery(start_from=cdrs[300].start_ts, start_to=cdrs[900].start_ts),
        CdrQuery(disposition="busy", limit=7),
        CdrQuery(tenant="default", call_ids=(cdrs[1].call_id, cdrs[2].call_id)),
    ]
    for q in queries:
        a, b = pg.query(q), sqlite_store.query(q)
        assert [_strip(c) for c in a] == [_strip(c) for c in b], q
        assert pg.count(q) == sqlite_store.count(q) or q.limit
    assert [_strip(c) for c in pg.query(CdrQuery())] == [_strip(c) for c in cdrs]
    # the planner reads only the partitions of a time-bounded query
    with psycopg.connect(URL) as con:
        plan = con.execute(
            f'EXPLAIN SELECT * FROM "{pg.schema}".cdr WHERE day >= %s AND day <= %s',
            ["2025-10-10", "2025-10-10"],
        ).fetchall()
    scanned = {line[0].split(" on ")[1].split()[0] for line in plan if " on cdr_p" in line[0]}
    assert scanned == {"cdr_p20251010"}


def test_copy_upsert_idempotent_delete_minimize_drop(pg: PostgresCdrStore) -> None:
    cdrs = list(synthetic_cdrs(400, spacing_s=600.0))
    pg.write(cdrs)
    changed = [dataclasses.replace(c, status=503, disposition="failed") for c in cdrs[:50]]
    pg.write(changed)
    assert pg.count(CdrQuery()) == 400
    assert pg.count(CdrQuery(disposition="failed")) >= 50
    assert pg.delete([c.call_id for c in cdrs[:10]]) == 10
    assert pg.minimize([cdrs[20].call_id]) == 1
    (small,) = pg.query(CdrQuery(call_ids=(cdrs[20].call_id,)))
    assert small.caller == "" and small.lineage.transformations[-2] == "minimized:direct identifier"
    first_day = pg.partitions()[0]
    second_day = pg.partitions()[1]
    assert pg.drop_days_before(second_day) == [first_day]
    assert all(c.start_ts >= cdrs[0].start_ts for c in pg.query(CdrQuery()))
    assert pg.count(CdrQuery()) == 390 - sum(1 for c in cdrs[10:] if c.start_ts < 1760054400.0)


def test_journal(pg: PostgresCdrStore) -> None:
    evs = [
        CallStarted(ts=1.0, node="e1", seq=1, call_id="j@x", caller="tel:+447700900123"),
        CallEnded(ts=2.0, node="e1", seq=2, call_id="j@x", status=486),
    ]
    assert pg.journal_append(evs) == 2
    assert pg.journal_append(evs) == 0
    assert sorted(pg.journal_events(["j@x"]), key=lambda e: e.seq) == evs
    assert pg.journal_drop(["j@x"]) == 2


def test_shredding_makes_postgres_copies_unreadable(pg: PostgresCdrStore) -> None:
    cdrs = list(synthetic_cdrs(300, subjects=6))
    pg.write(cdrs)
    victim = cdrs[0].caller
    pg.codec.cipher.shred_subject(victim, "erasure")
    got = pg.query(CdrQuery(subject=victim))
    assert got and all("subject-erased" in c.flags for c in got)
    assert all(victim not in (c.caller, c.callee) for c in got)
    with psycopg.connect(URL) as con:
        raw = con.execute(f'SELECT caller_enc, callee_enc FROM "{pg.schema}".cdr').fetchall()
    number = victim.split(":")[1].split("@")[0].encode()
    assert all(number not in bytes(b) for row in raw for b in row if b is not None)
