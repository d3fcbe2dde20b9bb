"""The one query API gives the same answers on every store (hypothesis-generated queries),
with a brute-force filter over the model objects as the independent reference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callward.privacy import FieldCipher, KeyStore, Pseudonymizer
from callward.privacy.pseudonym import normalize_subject
from callward.records.cold import ColdCdrStore
from callward.records.rows import CdrQuery, RecordCodec
from callward.records.store_sqlite import SqliteCdrStore
from callward.records.synthetic import synthetic_cdrs

CDRS = [
    dataclasses.replace(c, tenant="acme" if i % 3 else "beta")
    for i, c in enumerate(synthetic_cdrs(600, spacing_s=1800.0, subjects=25))
]
NUMBERS = sorted({c.caller.split(":")[1].split("@")[0] for c in CDRS})


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory):
    tmp: Path = tmp_path_factory.mktemp("eq")
    codec = RecordCodec(FieldCipher(KeyStore(tmp / "k.db", bytes(32)), Pseudonymizer(b"e" * 32)))
    hot = SqliteCdrStore(tmp / "cdr.db", codec)
    hot.write(CDRS)
    cold = ColdCdrStore(tmp / "cold", codec)
    cold.write(CDRS)
    yield hot, cold
    hot.close()


def brute(q: CdrQuery) -> list[str]:
    out = []
    for c in sorted(CDRS, key=lambda c: (c.start_ts, c.call_id)):
        if q.tenant is not None and c.tenant != q.tenant:
            continue
        if q.subject is not None and normalize_subject(q.subject) not in {
            normalize_subject(c.caller),
            normalize_subject(c.callee),
        }:
            continue
        if q.call_ids and c.call_id not in q.call_ids:
            continue
        if q.start_from is not None and c.start_ts < q.start_from:
            continue
        if q.start_to is not None and c.start_ts >= q.start_to:
            continue
        if q.disposition is not None and c.disposition != q.disposition:
            continue
        out.append(c.call_id)
    return out[: q.limit] if q.limit else out


t0, t1 = CDRS[0].start_ts, CDRS[-1].start_ts
queries = st.builds(
    CdrQuery,
    tenant=st.none() | st.sampled_from(["acme", "beta", "nobody"]),
    subject=st.none() | st.sampled_from(NUMBERS).map(lambda n: f"tel:{n}"),
    call_ids=st.lists(st.sampled_from([c.call_id for c in CDRS]), max_size=4).map(tuple),
    start_from=st.none() | st.floats(t0 - 100, t1 + 100),
    start_to=st.none() | st.floats(t0 - 100, t1 + 100),
    disposition=st.none() | st.sampled_from(["answered", "busy", "cancelled"]),
    limit=st.none() | st.integers(1, 50),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(queries)
def test_sqlite_and_cold_agree_with_brute_force(stores, q: CdrQuery) -> None:
    hot, cold = stores
    want = brute(q)
    assert [c.call_id for c in hot.query(q)] == want
    assert [c.call_id for c in cold.query(q)] == want
    assert hot.count(dataclasses.replace(q, limit=None)) == len(
        brute(dataclasses.replace(q, limit=None))
    )


@pytest.fixture(scope="module")
def pg_store(stores):
    import uuid

    import psycopg

    from callward.records.store_postgres import PostgresCdrStore

    url = "postgresql://postgres@127.0.0.1:5432/test"
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error:
        pytest.skip("why: PostgreSQL not reachable on 127.0.0.1:5432")
    hot, _ = stores
    schema = f"cw_eq_{uuid.uuid4().hex[:10]}"
    store = PostgresCdrStore(url, hot.codec, schema=schema)
    store.write(CDRS)
    yield store
    store.close()
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.services
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(queries)
def test_postgres_agrees_with_brute_force(pg_store, q: CdrQuery) -> None:
    assert [c.call_id for c in pg_store.query(q)] == brute(q)
    unlimited = dataclasses.replace(q, limit=None)
    assert pg_store.count(unlimited) == len(brute(unlimited))
