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
