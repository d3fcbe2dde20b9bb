"""Newest-first CDR pages for the dashboard/API: our store-agnostic windowed keyset paging vs
the SQLite shell running the ideal index-backed query on the same file, same run.

    .venv/bin/python benchmarks/web_paging.py [--n 300000] [--pages 30] [--limit 20]

Builds N synthetic CDRs (pseudonyms + AES-GCM sealing) in a SQLite store, then:

* ours: ``callward.web.calls.recent_calls`` — only the ``CdrStore`` protocol's ``count`` and
  ``query`` (so it also pages PostgreSQL and hot+cold), widening a time window back from the
  cursor; returns decoded CDRs (identifiers decrypted, as the API needs them for pseudonyms);
* peer: ``sqlite3`` (the SQLite command-line shell) timing ``SELECT ... ORDER BY start_ts DESC,
  call_id DESC LIMIT n`` with a row-value keyset predicate, using the same start_ts index,
  returning raw rows (no decryption). Its own ``.timer`` figures are used, not process start-up.

Prints median ms per page for the first page and for pages deep in the history, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from callward.records import CdrQuery
from callward.records.service import open_records
from callward.records.synthetic import synthetic_cdrs
from callward.web.calls import decode_cursor, encode_cursor, recent_calls


def _shell(db: Path, sql: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(
        ["sqlite3", "-readonly", str(db)], input=".output /dev/null\n" + "\n".join(sql) + "\n",
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    return time.perf_counter() - t


def peer_ms(db: Path, cursors: list[tuple[float, str] | None], limit: int, reps: int) -> float:
    """Mean ms per query in the sqlite3 shell: (time of reps x queries - empty run) / count.
    (The shell's own .timer has 1 ms resolution, too coarse for one indexed page.)"""
    sql = []
    for cur in cursors:
        where = ""
        if cur is not None:
            where = f" WHERE (start_ts, call_id) < ({cur[0]!r}, '{cur[1]}')"
        sql.append(
            f"SELECT call_id, start_ts, caller_enc, callee_enc, legs FROM cdr{where}"
            f" ORDER BY start_ts DESC, call_id DESC LIMIT {limit};"
        )
    empty = min(_shell(db, []) for _ in range(3))
    full = min(_shell(db, sql * reps) for _ in range(3))
    return max(full - empty, 1e-9) * 1000 / (len(sql) * reps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--pages", type=int, default=30)
    ap.add_argument("--limit", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="callward-bench-web-") as tmp:
        rec = open_records(Path(tmp))
        t0 = time.perf_counter()
        rec.store.write(synthetic_cdrs(a.n, subjects=50_000))
        rec.store.checkpoint()
        print(f"built {a.n} CDRs in {time.perf_counter() - t0:.1f} s")
        now = 1_760_000_000.0 + a.n * 0.5 + 1
        # first page, repeatedly
        first = []
        for _ in range(a.pages):
            t = time.perf_counter()
            page = recent_calls(rec.store, limit=a.limit, now=now)
            first.append((time.perf_counter() - t) * 1000)
        # walk deep: cursors spread through the history (every n/pages-th call)
        deep: list[float] = []
        cursors: list[tuple[float, str] | None] = []
        step = max(1, a.n // a.pages)
        probes = rec.store.query(CdrQuery())
        for c in probes[step // 2 :: step][: a.pages]:
            cur = encode_cursor(c)
            cursors.append(decode_cursor(cur))
            t = time.perf_counter()
            page = recent_calls(rec.store, limit=a.limit, now=now, cursor=cur)
            deep.append((time.perf_counter() - t) * 1000)
            assert len(page.calls) == min(a.limit, probes.index(c))
        pf = peer_ms(rec.store.path, [None] * a.pages, a.limit, 50)
        pd = peer_ms(rec.store.path, list(cursors), a.limit, 50)
        rec.close()
    f, d = statistics.median(first), statistics.median(deep)
    print(
        f"first page: ours {f:.2f} ms median (decoded); sqlite3 shell {pf:.3f} ms mean (raw);"
        f" ours/peer {f / pf:.1f}x"
    )
    print(
        f"deep pages: ours {d:.2f} ms median (decoded); sqlite3 shell {pd:.3f} ms mean (raw);"
        f" ours/peer {d / pd:.1f}x"
    )


if __name__ == "__main__":
    main()
