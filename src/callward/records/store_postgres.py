"""Scale-out CDR store: PostgreSQL with daily range partitions and COPY-based ingest.

Why: one table partitioned by day (PostgreSQL declarative partitioning, PG >= 11) keeps indexes
per day small, lets queries bounded in time touch only their days (partition pruning), and makes
whole-day retention a cheap ``DROP TABLE`` instead of a huge ``DELETE``. Ingest uses ``COPY``
into a temporary staging table followed by one ``INSERT ... ON CONFLICT DO UPDATE``: COPY is the
fastest bulk path, and the merge keeps writes idempotent (redelivered CDRs update in place).
New CDRs (the common case) are first tried with a direct COPY; only a batch that collides with
existing rows pays for the staging merge.
The primary key includes ``day`` because a partitioned table's unique constraints must contain the
partition key; ``day`` is a pure function of ``start_ts`` so (call_id, day) is still one call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from callward.errors import StoreError
from callward.events import Event
from callward.records.rows import COLUMNS, IDX, CdrQuery, RecordCodec, day_of, where_clause
from callward.records.schema import Cdr
from callward.records.store_sqlite import gc_paused

__all__ = ["PostgresCdrStore"]

_TYPES = {
    "call_id": "text NOT NULL", "tenant": "text NOT NULL", "schema_version": "smallint NOT NULL",
    "day": "date NOT NULL", "start_ts": "double precision NOT NULL",
    "answer_ts": "double precision", "end_ts": "double precision", "status": "integer NOT NULL",
    "disposition": "text NOT NULL", "caller_pn": "bytea", "callee_pn": "bytea",
    "caller_enc": "bytea", "callee_enc": "bytea", "packets": "bigint NOT NULL",
    "lost": "bigint NOT NULL", "jitter_ms": "double precision NOT NULL",
    "mos_min": "double precision", "codecs": "text NOT NULL", "flags": "text NOT NULL",
    "legs": "text NOT NULL", "lineage": "text NOT NULL",
}  # fmt: skip
_COLS = ", ".join(COLUMNS)


class PostgresCdrStore:
    """PostgreSQL implementation of :class:`callward.records.rows.CdrStore`."""

    name = "postgres"

    def __init__(self, url: str, codec: RecordCodec, schema: str = "callward") -> None:
        self.codec = codec
        self.schema = schema
        self._days: set[str] = set()
        try:
            self._db = psycopg.connect(url, autocommit=False)
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL {url}: cannot connect: {exc}".strip()) from None
        s = sql.Identifier(schema)
        cols = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_TYPES[c])) for c in COLUMNS
        )
        self._exec(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.cdr ({}, PRIMARY KEY (call_id, day))"
                " PARTITION BY RANGE (day)"
            ).format(s, cols),
            sql.SQL("CREATE INDEX IF NOT EXISTS cdr_caller ON {}.cdr (caller_pn)").format(s),
            sql.SQL("CREATE INDEX IF NOT EXISTS cdr_callee ON {}.cdr (callee_pn)").format(s),
            sql.SQL("CREATE INDEX IF NOT EXISTS cdr_start ON {}.cdr (start_ts)").format(s),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.event_journal (call_id text NOT NULL, leg text NOT"
                " NULL, node text NOT NULL, seq bigint NOT NULL, kind text NOT NULL, ts double"
                " precision NOT NULL, payload text NOT NULL, PRIMARY KEY (call_id, leg, node, seq))"
            ).format(s),
        )
        rows = self._fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace"
            " WHERE p.relname = 'cdr' AND n.nspname = %s",
            [schema],
        )
        self._days = {f"{r[0][5:9]}-{r[0][9:11]}-{r[0][11:13]}" for r in rows}

    def close(self) -> None:
        self._db.close()

    def _exec(self, *stmts: Any, params: Any = None) -> None:
        try:
            with self._db.cursor() as cur:
                for st in stmts:
                    cur.execute(st, params)
            self._db.commit()
        except psycopg.Error as exc:
            self._db.rollback()
            raise StoreError(f"PostgreSQL: {exc}".strip()) from None

    def _fetch(self, query: Any, params: list[Any]) -> list[tuple[Any, ...]]:
        try:
            with self._db.cursor() as cur:
                cur.execute(query, params)
                rows = cur.fetchall()
            self._db.commit()
            return rows
        except psycopg.Error as exc:
            self._db.rollback()
            raise StoreError(f"PostgreSQL query failed: {exc}".strip()) from None

    def ensure_partitions(self, days: Iterable[str]) -> None:
        """Create the daily partitions named ``cdr_pYYYYMMDD`` that do not exist yet."""
        stmts = []
        for day in sorted(set(days) - self._days):
            start = dt.date.fromisoformat(day)
            stmts.append(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.{} PARTITION OF {}.cdr"
                    " FOR VALUES FROM ({}) TO ({})"
                ).format(
                    sql.Identifier(self.schema),
                    sql.Identifier("cdr_p" + day.replace("-", "")),
                    sql.Identifier(self.schema),
                    sql.Literal(start.isoformat()),
                    sql.Literal((start + dt.timedelta(days=1)).isoformat()),
                )
            )
        if stmts:
            self._exec(*stmts)
            self._days.update(days)

    def partitions(self) -> list[str]:
        return sorted(self._days)

    def write(self, cdrs: Iterable[Cdr]) -> int:
        batch = list(cdrs)
        with gc_paused():
            self.codec.prepare(batch)
            return self.write_rows([self.codec.encode(c) for c in batch])

    def write_rows(self, rows: list[tuple[Any, ...]]) -> int:
        """Optimistic COPY straight into the partitioned table (the common case: new CDRs);
        if any row already exists (a redelivery, a re-emitted CDR) the transaction is rolled
        back and the batch goes through COPY into a staging table + ON CONFLICT merge."""
        if not rows:
            return 0
        self.codec.cipher.keys.flush()
        self.ensure_partitions({r[IDX["day"]] for r in rows})
        s = sql.Identifier(self.schema)
        try:
            with (
                self._db.cursor() as cur,
                cur.copy(sql.SQL("COPY {}.cdr ({}) FROM STDIN").format(s, sql.SQL(_COLS))) as copy,
            ):
                for r in rows:
                    copy.write_row(r)
            self._db.commit()
            return len(rows)
        except psycopg.errors.UniqueViolation:
            self._db.rollback()
        except psycopg.Error as exc:
            self._db.rollback()
            raise StoreError(f"PostgreSQL COPY ingest failed: {exc}".strip()) from None
        return self._merge(rows)

    def _merge(self, rows: list[tuple[Any, ...]]) -> int:
        s = sql.Identifier(self.schema)
        update = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
            for c in COLUMNS
            if c not in ("call_id", "day")
        )
        try:
            with self._db.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS cdr_stage (LIKE {}.cdr)"
                        " ON COMMIT DELETE ROWS"
                    ).format(s)
                )
                with cur.copy(f"COPY cdr_stage ({_COLS}) FROM STDIN") as copy:
                    for r in rows:
                        copy.write_row(r)
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {}.cdr ({}) SELECT {} FROM cdr_stage"
                        " ON CONFLICT (call_id, day) DO UPDATE SET {}"
                    ).format(s, sql.SQL(_COLS), sql.SQL(_COLS), update)
                )
                n = cur.rowcount
            self._db.commit()
            return n
        except psycopg.Error as exc:
            self._db.rollback()
            raise StoreError(f"PostgreSQL COPY ingest failed: {exc}".strip()) from None

    def _select(self, q: CdrQuery, what: str) -> list[tuple[Any, ...]]:
        pn = self.codec.pseudonym(q.subject) if q.subject else None
        where, params = where_clause(q, pn, "%s")
        extra = []
        if q.start_from is not None:  # lets the planner prune partitions
            extra.append("day >= %s")
            params.append(day_of(q.start_from))
        if q.start_to is not None:
            extra.append("day <= %s")
            params.append(day_of(q.start_to))
        if extra:
            where = (where + " AND " if where else " WHERE ") + " AND ".join(extra)
        text = f"SELECT {what} FROM {_q(self.schema)}.cdr{where}"
        if what != "COUNT(*)":
            text += " ORDER BY start_ts, call_id"
            if q.limit is not None:
                text += f" LIMIT {int(q.limit)}"
        return self._fetch(text, params)

    def rows(self, q: CdrQuery) -> list[tuple[Any, ...]]:
        out = []
        for raw in self._select(q, _COLS.replace("day", "to_char(day, 'YYYY-MM-DD')")):
            r = list(raw)
            for i in (IDX["caller_pn"], IDX["callee_pn"], IDX["caller_enc"], IDX["callee_enc"]):
                if r[i] is not None:
                    r[i] = bytes(r[i])
            out.append(tuple(r))
        return out

    def query(self, q: CdrQuery) -> list[Cdr]:
        return [self.codec.decode(r, self.name) for r in self.rows(q)]

    def count(self, q: CdrQuery) -> int:
        return int(self._select(q, "COUNT(*)")[0][0])

    def delete(self, call_ids: Iterable[str]) -> int:
        ids = list(call_ids)
        return self._rowcount(f"DELETE FROM {_q(self.schema)}.cdr WHERE call_id = ANY(%s)", ids)

    def minimize(self, call_ids: Iterable[str]) -> int:
        ids = list(call_ids)
        return self._rowcount(
            f"UPDATE {_q(self.schema)}.cdr SET caller_pn = NULL, callee_pn = NULL,"
            " caller_enc = NULL, callee_enc = NULL, lineage = jsonb_set(lineage::jsonb, '{3}',"
            " (lineage::jsonb -> 3) || '\"minimized:direct identifier\"'::jsonb)::text"
            " WHERE call_id = ANY(%s)",
            ids,
        )

    def drop_days_before(self, day: str) -> list[str]:
        """Retention by partition: drop whole days older than ``day`` (YYYY-MM-DD)."""
        gone = [d for d in sorted(self._days) if d < day]
        self._exec(
            *(
                sql.SQL("DROP TABLE IF EXISTS {}.{}").format(
                    sql.Identifier(self.schema), sql.Identifier("cdr_p" + d.replace("-", ""))
                )
                for d in gone
            )
        )
        self._days.difference_update(gone)
        return gone

    def _rowcount(self, text: str, ids: list[str]) -> int:
        try:
            with self._db.cursor() as cur:
                cur.execute(text, [ids])
                n = cur.rowcount
            self._db.commit()
            return n
        except psycopg.Error as exc:
            self._db.rollback()
            raise StoreError(f"PostgreSQL: {exc}".strip()) from None

    # --- event journal ---------------------------------------------------------------------

    def journal_append(self, events: Iterable[Event]) -> int:
        rows = [self.codec.encode_event(e) for e in events]
        self.codec.cipher.keys.flush()
        try:
            with self._db.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {_q(self.schema)}.event_journal VALUES (%s,%s,%s,%s,%s,%s,%s)"
                    " ON CONFLICT DO NOTHING",
                    rows,
                )
                n = cur.rowcount
            self._db.commit()
            return n
        except psycopg.Error as exc:
            self._db.rollback()
            raise StoreError(f"PostgreSQL journal append failed: {exc}".strip()) from None

    def journal_events(self, call_ids: Iterable[str] | None = None) -> list[Event]:
        base = f"SELECT payload FROM {_q(self.schema)}.event_journal"
        if call_ids is None:
            rows = self._fetch(base, [])
        else:
            rows = self._fetch(base + " WHERE call_id = ANY(%s)", [list(call_ids)])
        return [self.codec.decode_event(r[0]) for r in rows]

    def journal_drop(self, call_ids: Iterable[str]) -> int:
        return self._rowcount(
            f"DELETE FROM {_q(self.schema)}.event_journal WHERE call_id = ANY(%s)", list(call_ids)
        )


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
