"""CDR ingest rate: our stores vs the raw drivers writing the very same rows, same run.

    .venv/bin/python benchmarks/records_ingest.py [--n 200000] [--no-postgres]

* SQLite — ours: ``SqliteCdrStore.write(cdrs)`` from model objects (pseudonyms, AES-GCM sealing
  of caller/callee under per-subject keys, JSON legs/lineage, batched upserts, pipelined commit).
  Peer: plain ``sqlite3`` ``executemany`` of the already-encoded rows into an identical table
  (same indexes, WAL, synchronous=NORMAL, same batch size): the floor any model layer sits on.
* PostgreSQL — ours: ``PostgresCdrStore.write`` (COPY into a staging table + ON CONFLICT merge
  into the day-partitioned table). Peer: raw psycopg ``COPY`` of the same rows straight into an
  identical partitioned table (no staging, no upsert).

"writer process" commits in a child process (``parallel=True``) while the parent encodes.
Two ours-figures for SQLite: "new subjects" includes creating and wrapping one data key per
subject seen for the first time; "known subjects" is the steady state of a carrier whose
subscriber keys already exist.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from callward.privacy import FieldCipher, KeyStore, Pseudonymizer
from callward.records.rows import COLUMNS, RecordCodec
from callward.records.store_sqlite import _SCHEMA, SqliteCdrStore
from callward.records.synthetic import synthetic_cdrs

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _codec(d: Path) -> RecordCodec:
    return RecordCodec(FieldCipher(KeyStore(d / "keys.db", bytes(32)), Pseudonymizer(b"k" * 32)))


def bench_sqlite(n: int, subjects: int, d: Path) -> dict[str, float]:
    cdrs = list(synthetic_cdrs(n, subjects=subjects))
    codec = _codec(d)
    store = SqliteCdrStore(d / "ours1.db", codec, batch_size=5000)
    t = time.perf_counter()
    store.write(cdrs)
    new_subjects = n / (time.perf_counter() - t)
    store.close()
    store = SqliteCdrStore(d / "ours2.db", codec, batch_size=5000)
    t = time.perf_counter()
    store.write(cdrs)
    known = n / (time.perf_counter() - t)
    store.close()
    store = SqliteCdrStore(d / "ours4.db", codec, batch_size=5000, parallel=True)
    t = time.perf_counter()
    store.write(cdrs)
    parallel = n / (time.perf_counter() - t)
    store.close()
    t = time.perf_counter()
    rows = [codec.encode(c) for c in cdrs]
    encode_only = n / (time.perf_counter() - t)
    plain = RecordCodec(codec.cipher, encrypt=False)
    store = SqliteCdrStore(d / "ours3.db", plain, batch_size=5000)
    t = time.perf_counter()
    store.write(cdrs)
    no_crypto = n / (time.perf_counter() - t)
    store.close()
    db = sqlite3.connect(d / "peer.db", isolation_level=None)
    for p in ("journal_mode=WAL", "synchronous=NORMAL", "secure_delete=FAST", "cache_size=-65536"):
        db.execute(f"PRAGMA {p}")
    db.executescript(_SCHEMA)
    sql = f"INSERT OR REPLACE INTO cdr VALUES ({', '.join('?' * len(COLUMNS))})"
    t = time.perf_counter()
    for i in range(0, n, 5000):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(sql, rows[i : i + 5000])
        db.execute("COMMIT")
    peer = n / (time.perf_counter() - t)
    db.close()
    return {
        "ours_new_subjects": new_subjects,
        "ours_known_subjects": known,
        "ours_writer_process": parallel,
        "ours_without_sealing": no_crypto,
        "encode_only": encode_only,
        "peer_raw": peer,
    }


def bench_postgres(n: int, subjects: int, d: Path) -> dict[str, float]:
    import psycopg

    from callward.records.store_postgres import PostgresCdrStore

    cdrs = list(synthetic_cdrs(n, subjects=subjects, spacing_s=2.0))
    codec = _codec(d)
    schema = f"cw_bench_{uuid.uuid4().hex[:8]}"
    store = PostgresCdrStore(PG_URL, codec, schema=schema)
    try:
        store.write(cdrs[:10])  # warm: schema, first partition, staging table
        store.delete([c.call_id for c in cdrs[:10]])
        t = time.perf_counter()
        for i in range(0, n, 20000):
            store.write(cdrs[i : i + 20000])
        ours = n / (time.perf_counter() - t)
        rows = [codec.encode(c) for c in cdrs]
        with psycopg.connect(PG_URL) as con:
            con.execute(f'CREATE TABLE "{schema}".peer (LIKE "{schema}".cdr INCLUDING ALL)'
                        " PARTITION BY RANGE (day)")  # fmt: skip
            for day in sorted({r[3] for r in rows}):
                d0 = day.replace("-", "")
                con.execute(
                    f'CREATE TABLE "{schema}".peer_{d0} PARTITION OF "{schema}".peer'
                    f" FOR VALUES FROM ('{day}') TO ('{day}'::date + 1)"
                )
            con.commit()
            t = time.perf_counter()
            with con.cursor() as cur:
                for i in range(0, n, 20000):
                    with cur.copy(f'COPY "{schema}".peer ({", ".join(COLUMNS)}) FROM STDIN') as cp:
                        for r in rows[i : i + 20000]:
                            cp.write_row(r)
                    con.commit()
            peer = n / (time.perf_counter() - t)
    finally:
        store.close()
        with psycopg.connect(PG_URL, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return {"ours_copy": ours, "peer_raw_copy": peer}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--subjects", type=int, default=50_000)
    ap.add_argument("--no-postgres", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cw-ingest-") as tmp:
        d = Path(tmp)
        res: dict[str, object] = {"n": a.n, "subjects": a.subjects}
        s = bench_sqlite(a.n, a.subjects, d)
        res["sqlite"] = s
        print(f"SQLite  ours (new subjects)   {s['ours_new_subjects']:>10,.0f} CDR/s")
        print(f"SQLite  ours (known subjects) {s['ours_known_subjects']:>10,.0f} CDR/s")
        print(f"SQLite  ours (known, writer process) {s['ours_writer_process']:>10,.0f} CDR/s"
              f"   /peer = {s['ours_writer_process'] / s['peer_raw']:.2f}")  # fmt: skip
        print(f"SQLite  ours, identifiers in clear (insecure, for comparison) "
              f"{s['ours_without_sealing']:>8,.0f} CDR/s")  # fmt: skip
        print(f"        model->row encoding alone {s['encode_only']:>10,.0f} CDR/s")
        print(f"SQLite  peer raw executemany  {s['peer_raw']:>10,.0f} CDR/s"
              f"   ours/peer = {s['ours_known_subjects'] / s['peer_raw']:.2f}")  # fmt: skip
        if not a.no_postgres:
            p = bench_postgres(min(a.n, 100_000), a.subjects, d)
            res["postgres"] = p
            print(f"Postgres ours COPY (upsert-safe) {p['ours_copy']:>10,.0f} CDR/s")
            print(f"Postgres peer raw COPY        {p['peer_raw_copy']:>10,.0f} CDR/s"
                  f"   ours/peer = {p['ours_copy'] / p['peer_raw_copy']:.2f}")  # fmt: skip
        print(json.dumps(res))


if __name__ == "__main__":
    main()
