"""Legal lookup by subject over a large hot + cold CDR set, vs a naive scan, same run.

    .venv/bin/python benchmarks/records_lookup.py [--n 1000000] [--dir DIR] [--queries 30]

Builds N synthetic CDRs through the real codec (pseudonyms + AES-GCM sealing): the newest 10 % in
the SQLite hot store, the rest in day-partitioned Parquet (cold). Then looks up random subjects
with ``TieredStore.query(CdrQuery(subject=...))`` — SQLite index probes plus DuckDB over Parquet
with two bloom-filtered equality probes — and decrypts the results.

Peer: the same question asked naively of the same data — one DuckDB query with
``caller_pn = ? OR callee_pn = ?`` over every Parquet file (no bloom-filter use possible with the
OR) plus the SQLite query. Reports median/p95 latency and the peer/ours ratio. ``--dir`` keeps
the generated data for re-runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from callward.privacy import FieldCipher, KeyStore, Pseudonymizer
from callward.records.cold import ColdCdrStore, TieredStore
from callward.records.rows import COLUMNS, CdrQuery, RecordCodec
from callward.records.store_sqlite import SqliteCdrStore
from callward.records.synthetic import synthetic_cdrs, synthetic_msisdn

CHUNK = 500_000


def build(d: Path, n: int, subjects: int) -> tuple[SqliteCdrStore, ColdCdrStore, RecordCodec]:
    codec = RecordCodec(FieldCipher(KeyStore(d / "keys.db", bytes(32)), Pseudonymizer(b"k" * 32)))
    hot = SqliteCdrStore(d / "cdr.db", codec, batch_size=10_000)
    cold = ColdCdrStore(d / "cold", codec)
    manifest = d / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()) == {"n": n, "subjects": subjects}:
        return hot, cold, codec
    n_cold = n - n // 10
    t0 = time.perf_counter()
    gen = synthetic_cdrs(n, subjects=subjects, spacing_s=0.5)
    done = 0
    while done < n_cold:
        take = min(CHUNK, n_cold - done)
        cold.write_rows([codec.encode(next(gen)) for _ in range(take)], step="moved:cold")
        done += take
        print(f"  cold {done:,}/{n_cold:,}  {time.perf_counter() - t0:.0f} s", flush=True)
    hot.write(gen)
    hot.checkpoint()
    print(f"  built {n:,} CDRs in {time.perf_counter() - t0:.0f} s", flush=True)
    manifest.write_text(json.dumps({"n": n, "subjects": subjects}))
    return hot, cold, codec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--subjects", type=int, default=0, help="default n/10")
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--dir", type=Path, default=None)
    a = ap.parse_args()
    subjects = a.subjects or max(1000, a.n // 10)
    tmp = None
    if a.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="cw-lookup-")
        a.dir = Path(tmp.name)
    a.dir.mkdir(parents=True, exist_ok=True)
    hot, cold, codec = build(a.dir, a.n, subjects)
    tiered = TieredStore(hot, cold)
    rnd = random.Random(11)
    who = [f"tel:{synthetic_msisdn(rnd.randrange(subjects))}" for _ in range(a.queries)]
    tiered.query(CdrQuery(subject=who[0]))  # warm file metadata / page cache, as in service

    ours, peer, hits = [], [], []
    con = duckdb.connect()
    src = f"read_parquet('{cold.root.as_posix()}/day=*/part-*.parquet', hive_partitioning=true)"
    cols = ", ".join(c for c in COLUMNS if c != "day")
    for s in who:
        t = time.perf_counter()
        got = tiered.query(CdrQuery(subject=s))
        ours.append(time.perf_counter() - t)
        hits.append(len(got))
        pn = codec.pseudonym(s)
        t = time.perf_counter()
        rows = con.execute(
            f"SELECT {cols} FROM {src} WHERE caller_pn = ? OR callee_pn = ?", [pn, pn]
        ).fetchall()
        rows += hot.rows(CdrQuery(subject=s))
        peer.append(time.perf_counter() - t)
        assert len(rows) == len(got), (s, len(rows), len(got))
    med_o, med_p = statistics.median(ours), statistics.median(peer)
    p95_o = sorted(ours)[int(0.95 * (len(ours) - 1))]
    p95_p = sorted(peer)[int(0.95 * (len(peer) - 1))]
    print(f"CDRs {a.n:,} (hot {a.n // 10:,}, cold {a.n - a.n // 10:,} in "
          f"{len(cold.files())} Parquet files), subjects {subjects:,}, "
          f"median hits/subject {statistics.median(hits):.0f}")  # fmt: skip
    print(f"ours  (sorted index probes, decrypted)  : median {med_o * 1e3:7.1f} ms  "
          f"p95 {p95_o * 1e3:7.1f} ms")  # fmt: skip
    print(f"peer  (DuckDB OR scan + SQLite, rows):   median {med_p * 1e3:7.1f} ms  "
          f"p95 {p95_p * 1e3:7.1f} ms   peer/ours = {med_p / med_o:.1f}x")  # fmt: skip
    print(json.dumps({"n": a.n, "median_ms": med_o * 1e3, "p95_ms": p95_o * 1e3,
                      "peer_median_ms": med_p * 1e3, "ratio": med_p / med_o}))  # fmt: skip
    hot.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
