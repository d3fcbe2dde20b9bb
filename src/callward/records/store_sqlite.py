"""Embedded CDR store: SQLite in WAL mode with batched ``executemany`` ingest.

Why these settings: WAL lets the web/CLI readers query while the consumer writes (readers never
block the writer); ``synchronous=NORMAL`` in WAL mode is durable across application crashes and
only risks the last transaction on power loss, the usual trade-off for ingest; batching many rows
per transaction amortizes the commit (fsync) cost which otherwise caps SQLite near 1k tx/s.
``secure_delete=FAST`` zeroes deleted cells within a page so purged traffic data does not linger
in free space (identifiers are encrypted anyway, see :mod:`callward.privacy.shred`).
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from callward.errors import StoreError
from callward.events import Event
from callward.private_files import private_file
from callward.records.bulk_writer import BulkWriter
from callward.records.rows import COLUMNS, CdrQuery, RecordCodec, where_clause
from callward.records.schema import Cdr

__all__ = ["SqliteCdrStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cdr (
  call_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, schema_version INTEGER NOT NULL,
  day TEXT NOT NULL, start_ts REAL NOT NULL, answer_ts REAL, end_ts REAL,
  status INTEGER NOT NULL, disposition TEXT NOT NULL, caller_pn BLOB, callee_pn BLOB,
  caller_enc BLOB, callee_enc BLOB, packets INTEGER NOT NULL, lost INTEGER NOT NULL,
  jitter_ms REAL NOT NULL, mos_min REAL, codecs TEXT NOT NULL, flags TEXT NOT NULL,
  legs TEXT NOT NULL, lineage TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cdr_caller ON cdr(caller_pn);
CREATE INDEX IF NOT EXISTS cdr_callee ON cdr(callee_pn);
CREATE INDEX IF NOT EXISTS cdr_start ON cdr(start_ts);
CREATE TABLE IF NOT EXISTS event_journal (
  call_id TEXT NOT NULL, leg TEXT NOT NULL, node TEXT NOT NULL, seq INTEGER NOT NULL,
  kind TEXT NOT NULL, ts REAL NOT NULL, payload TEXT NOT NULL,
  PRIMARY KEY (call_id, leg, node, seq)
);
"""
_COLS = ", ".join(COLUMNS)
_INSERT = f"INSERT OR REPLACE INTO cdr ({_COLS}) VALUES ({', '.join('?' * len(COLUMNS))})"


class SqliteCdrStore:
    """SQLite implementation of :class:`callward.records.rows.CdrStore`."""

    name = "sqlite"

    def __init__(
        self, path: Path | str, codec: RecordCodec, batch_size: int = 5000, parallel: bool = False
    ) -> None:
        """``parallel=True`` commits bulk writes in a child process (see ``bulk_writer``): for
        bulk loads on a multi-core host; single-CDR writes gain nothing from it."""
        self.path = Path(path)
        self.parallel = parallel
        self._writer: BulkWriter | None = None
        self.codec = codec
        self.batch_size = batch_size
        self._lock = threading.Lock()
        try:
            private_file(self.path)  # personal data: 0600 in a 0700 folder
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA secure_delete=FAST")
            # Random pseudonym keys make index inserts random: keep index pages cached (64 MiB).
            self._db.execute("PRAGMA cache_size=-65536")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open CDR store: {exc}") from None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._db.close()

    def backup_to(self, dest: Path | str) -> Path:
        """Online consistent copy (SQLite backup API) — a backup holds sealed identifiers only,
        so shredding a subject key later makes the backup copy unreadable too."""
        dest = private_file(dest)
        target = sqlite3.connect(str(dest))
        try:
            with self._lock:
                self._db.backup(target)
        finally:
            target.close()
        return dest

    def checkpoint(self) -> None:
        """Fold the WAL back into the main file and truncate it."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _tx(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> int:
        n = 0
        self.codec.cipher.keys.flush()  # keys durable before any data sealed under them
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.executemany(sql, rows)
                n = cur.rowcount
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"{self.path}: write failed: {exc}") from None
        return n

    def write(self, cdrs: Iterable[Cdr]) -> int:
        """Upsert (by call_id) in batches of ``batch_size`` rows per transaction.

        Measured on the shared 2-core machine: overlapping encoding with the commit on a writer
        thread was *slower* than doing both in turn (the sqlite3 module needs the GIL to bind
        every parameter, so the two threads convoy on it), hence one thread. The cyclic garbage
        collector is paused for the bulk write: encoding allocates many tuples but never
        creates cycles, and full collections over a large heap cost about a third of the
        time."""
        total = 0
        encode = self.codec.encode
        with gc_paused():
            for chunk in _chunks(cdrs, self.batch_size):
                self.codec.prepare(chunk)
                rows = [encode(c) for c in chunk]
                if self.parallel:
                    self.codec.cipher.keys.flush()  # keys durable before sealed rows commit
                    self._bulk().submit(rows)
                else:
                    total += self._tx(_INSERT, rows)
            if self._writer is not None:
                total += self._writer.drain()
        return total

    def _bulk(self) -> BulkWriter:
        if self._writer is None:
            self._writer = BulkWriter(str(self.path), _INSERT)
        return self._writer

    def write_rows(self, rows: Iterable[tuple[Any, ...]]) -> int:
        """Insert already-encoded rows (cold → hot restore, benchmarks of the raw path)."""
        return self._tx(_INSERT, rows)

    def _select(self, q: CdrQuery, what: str) -> list[tuple[Any, ...]]:
        pn = self.codec.pseudonym(q.subject) if q.subject else None
        where, params = where_clause(q, pn)
        sql = f"SELECT {what} FROM cdr{where} ORDER BY start_ts, call_id"
        if q.limit is not None:
            sql += f" LIMIT {int(q.limit)}"
        try:
            with self._lock:
                return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: query failed: {exc}") from None

    def rows(self, q: CdrQuery) -> list[tuple[Any, ...]]:
        return self._select(q, _COLS)

    def query(self, q: CdrQuery) -> list[Cdr]:
        return [self.codec.decode(r, self.name) for r in self.rows(q)]

    def count(self, q: CdrQuery) -> int:
        return int(self._select(CdrQuery(**{**_fields(q), "limit": None}), "COUNT(*)")[0][0])

    def delete(self, call_ids: Iterable[str]) -> int:
        return self._tx("DELETE FROM cdr WHERE call_id = ?", ((c,) for c in call_ids))

    def minimize(self, call_ids: Iterable[str]) -> int:
        """Drop direct identifiers (sealed values and pseudonyms) but keep traffic data."""
        return self._tx(
            "UPDATE cdr SET caller_pn=NULL, callee_pn=NULL, caller_enc=NULL, callee_enc=NULL,"
            " lineage=json_insert(lineage, '$[3][#]', 'minimized:direct identifier')"
            " WHERE call_id = ?",
            ((c,) for c in call_ids),
        )

    def iter_rows(self, q: CdrQuery, chunk: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
        """Stream rows in chunks (cold moves of millions of rows without loading them all)."""
        pn = self.codec.pseudonym(q.subject) if q.subject else None
        where, params = where_clause(q, pn)
        cur = self._db.execute(f"SELECT {_COLS} FROM cdr{where} ORDER BY start_ts", params)
        while True:
            got = cur.fetchmany(chunk)
            if not got:
                return
            yield got

    # --- event journal: durable before a bus message is acked -------------------------------

    def journal_append(self, events: Iterable[Event]) -> int:
        """Persist events (duplicates by (call_id, leg, node, seq) ignored); one transaction."""
        rows = [self.codec.encode_event(e) for e in events]
        return self._tx("INSERT OR IGNORE INTO event_journal VALUES (?,?,?,?,?,?,?)", rows)

    def journal_events(self, call_ids: Iterable[str] | None = None) -> list[Event]:
        with self._lock:
            if call_ids is None:
                rows = self._db.execute("SELECT payload FROM event_journal").fetchall()
            else:
                rows = []
                for c in call_ids:
                    rows += self._db.execute(
                        "SELECT payload FROM event_journal WHERE call_id=?", (c,)
                    ).fetchall()
        return [self.codec.decode_event(r[0]) for r in rows]

    def journal_drop(self, call_ids: Iterable[str]) -> int:
        return self._tx("DELETE FROM event_journal WHERE call_id = ?", ((c,) for c in call_ids))


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC around bulk encoding (no cycles are created; see write())."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _chunks(items: Iterable[Cdr], size: int) -> Iterator[list[Cdr]]:
    chunk: list[Cdr] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _fields(q: CdrQuery) -> dict[str, Any]:
    return {f: getattr(q, f) for f in q.__dataclass_fields__}
