"""The dashboard's newest-first paging uses only the CdrStore protocol, so it must page every
store the same: SQLite, hot+cold (Parquet via DuckDB) and PostgreSQL (real server)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from tests.web.conftest import T0, make_cdr

from callward.records.rows import CdrQuery
from callward.records.service import Records
from callward.records.store_postgres import PostgresCdrStore
from callward.web.calls import recent_calls

URL = "postgresql://postgres@127.0.0.1:5432/test"
STARTS = (
    [T0 + i * 7 for i in range(25)]
    + [T0 + 86_400 * 3] * 4
    + [T0 - 86_400 * 9 + i for i in range(6)]
)


def _walk(store: Any, limit: int) -> list[str]:
    out: list[str] = []
    cursor = None
    for _ in range(200):
        page = recent_calls(store, limit=limit, now=T0 + 86_400 * 10, cursor=cursor)
        out += [c.call_id for c in page.calls]
        cursor = page.next_cursor
        if cursor is None:
            return out
    raise AssertionError("paging did not end")


def _expect() -> list[str]:
    cdrs = [make_cdr(i, start=s) for i, s in enumerate(STARTS)]
    return [c.call_id for c in sorted(cdrs, key=lambda c: (c.start_ts, c.call_id), reverse=True)]


def test_hot_plus_cold(records: Records) -> None:
    cdrs = [make_cdr(i, start=s) for i, s in enumerate(STARTS)]
    cold = [c for c in cdrs if c.start_ts < T0]
    records.store.write([c for c in cdrs if c.start_ts >= T0])
    records.cold.write(cold)
    assert records.store.count(CdrQuery()) == len(cdrs) - len(cold)
    for limit in (1, 4, 10):
        assert _walk(records.tiered, limit) == _expect()


@pytest.fixture
def pg(records: Records) -> Iterator[PostgresCdrStore]:
    try:
        psycopg.connect(URL, connect_timeout=3).close()
    except psycopg.Error:
        pytest.skip("why: PostgreSQL not reachable on 127.0.0.1:5432")
    schema = f"cw_web_{uuid.uuid4().hex[:10]}"
    store = PostgresCdrStore(URL, records.codec, schema=schema)
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(URL, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.services
def test_postgres(pg: PostgresCdrStore) -> None:
    pg.write([make_cdr(i, start=s) for i, s in enumerate(STARTS)])
    for limit in (1, 4, 10):
        assert _walk(pg, limit) == _expect()
