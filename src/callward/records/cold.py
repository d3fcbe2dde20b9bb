"""Cold CDR storage: day-partitioned Parquet files (pyarrow) queried with DuckDB.

Why: hot stores are sized for recent traffic; legal requests reach back years. Parquet is
columnar and compressed (a CDR costs a fraction of its SQLite size) and DuckDB queries it in place
with the same :class:`~callward.records.rows.CdrQuery` as the hot stores.

Layout (Hive partitioning, so a time-bounded query reads only the days it needs)::

    <root>/day=YYYY-MM-DD/part-<id>.parquet   CDR rows sorted by call_id
    <root>/day=YYYY-MM-DD/idx-<id>.parquet    (pn, call_id) for caller and callee, sorted by pn

Why a sorted subject index instead of bloom filters: a subscriber calls every day, so their
pseudonym appears in almost every row group and a per-row-group bloom filter skips almost
nothing. Sorted files make Parquet's per-row-group min/max statistics exact range indexes:
``pn = ?`` on the index reads one small row group per file, and the follow-up
``call_id IN (...)`` on the data files reads one row group per hit.

Purge is a rewrite: files holding affected rows are rewritten without them (or with identifiers
blanked) to a temporary name and atomically renamed over the original.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from callward.errors import StoreError
from callward.records.rows import COLUMNS, IDX, CdrQuery, RecordCodec, day_of, where_clause
from callward.records.schema import Cdr

__all__ = ["ColdCdrStore", "TieredStore", "move_aged"]

_FILE_COLUMNS = tuple(c for c in COLUMNS if c != "day")  # day lives in the directory name
SCHEMA = pa.schema(
    [
        ("call_id", pa.string()), ("tenant", pa.string()), ("schema_version", pa.int16()),
        ("start_ts", pa.float64()), ("answer_ts", pa.float64()), ("end_ts", pa.float64()),
        ("status", pa.int32()), ("disposition", pa.string()), ("caller_pn", pa.binary()),
        ("callee_pn", pa.binary()), ("caller_enc", pa.binary()), ("callee_enc", pa.binary()),
        ("packets", pa.int64()), ("lost", pa.int64()), ("jitter_ms", pa.float64()),
        ("mos_min", pa.float64()), ("codecs", pa.string()), ("flags", pa.string()),
        ("legs", pa.string()), ("lineage", pa.string()),
    ]
)  # fmt: skip
_IDENT = ("caller_pn", "callee_pn", "caller_enc", "callee_enc")
INDEX_SCHEMA = pa.schema([("pn", pa.binary()), ("call_id", pa.string())])
INDEX_ROW_GROUP = 32_768


def _add_step(lineage: str, step: str) -> str:
    v = json.loads(lineage)
    v[3] = [*v[3], step]
    return json.dumps(v, separators=(",", ":"))


class ColdCdrStore:
    """Parquet + DuckDB implementation of :class:`callward.records.rows.CdrStore`."""

    name = "cold"

    def __init__(self, root: Path | str, codec: RecordCodec, row_group_size: int = 4096):
        self.root = Path(root)
        self.codec = codec
        self.row_group_size = row_group_size
        self.root.mkdir(parents=True, exist_ok=True)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def files(self) -> list[Path]:
        return sorted(self.root.glob("day=*/part-*.parquet"))

    # --- writing ------------------------------------------------------------------------------

    def write(self, cdrs: Iterable[Cdr]) -> int:
        return self.write_rows([self.codec.encode(c) for c in cdrs])

    def write_rows(self, rows: Iterable[tuple[Any, ...]], step: str = "moved:cold") -> int:
        """Write encoded rows, one new data + index file pair per day present."""
        self.codec.cipher.keys.flush()
        by_day: dict[str, list[tuple[Any, ...]]] = {}
        for r in rows:
            by_day.setdefault(r[IDX["day"]], []).append(r)
        n = 0
        for day, group in by_day.items():
            group.sort(key=lambda r: r[0])
            cols: dict[str, list[Any]] = {c: [] for c in _FILE_COLUMNS}
            for r in group:
                for c in _FILE_COLUMNS:
                    cols[c].append(r[IDX[c]])
            if step:
                cols["lineage"] = [_add_step(x, step) for x in cols["lineage"]]
            part = uuid.uuid4().hex
            # index first: a crash leaves an index entry without data (harmless: the follow-up
            # probe finds nothing), never data that a subject lookup cannot find.
            self._write_index(self.root / f"day={day}" / f"idx-{part}.parquet", group)
            self._write_file(self.root / f"day={day}" / f"part-{part}.parquet", cols)
            n += len(group)
        return n

    def _write_index(self, path: Path, rows: list[tuple[Any, ...]]) -> None:
        pairs = [(r[i], r[0]) for r in rows for i in (IDX["caller_pn"], IDX["callee_pn"]) if r[i]]
        pairs.sort()
        table = pa.table(
            {"pn": [p for p, _ in pairs], "call_id": [c for _, c in pairs]}, schema=INDEX_SCHEMA
        )
        self._write_file(path, table, INDEX_ROW_GROUP)

    def _write_file(
        self, path: Path, cols: dict[str, list[Any]] | pa.Table, row_group: int = 0
    ) -> None:
        table = cols if isinstance(cols, pa.Table) else pa.table(cols, schema=SCHEMA)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            pq.write_table(
                table, tmp, compression="zstd", row_group_size=row_group or self.row_group_size
            )
            os.replace(tmp, path)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"{path}: cannot write Parquet: {exc}") from None

    # --- reading (DuckDB) ---------------------------------------------------------------------

    def _sql(
        self, q: CdrQuery, what: str, pn: bytes | None, filename: bool = False
    ) -> tuple[str, list[Any]]:
        where, params = where_clause(q, pn)
        extra: list[str] = []
        if q.start_from is not None:  # partition pruning on the hive key
            extra.append("day >= ?")
            params.append(day_of(q.start_from))
        if q.start_to is not None:
            extra.append("day <= ?")
            params.append(day_of(q.start_to))
        if extra:
            where = (where + " AND " if where else " WHERE ") + " AND ".join(extra)
        src = (
            f"read_parquet('{self.root.as_posix()}/day=*/part-*.parquet', hive_partitioning=true"
            f"{', filename=true' if filename else ''}, hive_types={{'day': VARCHAR}})"
        )
        return f"SELECT {what} FROM {src}{where}", params

    def _run(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        if not self.files():
            return []
        try:
            with self._lock:
                if self._con is None:
                    self._con = duckdb.connect()
                return self._con.execute(sql, params).fetchall()
        except duckdb.Error as exc:
            raise StoreError(f"{self.root}: cold query failed: {exc}") from None

    def subject_calls(self, q: CdrQuery) -> list[tuple[str, str]]:
        """(call_id, day) of the subject's CDRs, from the sorted index files. The index has no
        timestamps: a time window narrows it by day partition only, and the data probe
        applies the exact bounds."""
        assert q.subject
        pn = self.codec.pseudonym(q.subject)
        src = (
            f"read_parquet('{self.root.as_posix()}/day=*/idx-*.parquet', hive_partitioning=true,"
            " hive_types={'day': VARCHAR})"
        )
        where: list[str] = ["pn = ?"]
        params: list[Any] = [pn]
        if q.start_from is not None:
            where.append("day >= ?")
            params.append(day_of(q.start_from))
        if q.start_to is not None:
            where.append("day <= ?")
            params.append(day_of(q.start_to))
        sql = f"SELECT DISTINCT call_id, day FROM {src} WHERE {' AND '.join(where)}"
        return [(r[0], r[1]) for r in self._run(sql, params)]

    def rows(self, q: CdrQuery) -> list[tuple[Any, ...]]:
        cols = ", ".join(COLUMNS)
        order = " ORDER BY start_ts, call_id" + (f" LIMIT {int(q.limit)}" if q.limit else "")
        if q.subject:
            hits = self.subject_calls(q)
            ids = {c for c, _ in hits}
            if q.call_ids:
                ids &= set(q.call_ids)
            if not ids:
                return []
            days = sorted({d for c, d in hits if c in ids})
            base = CdrQuery(q.tenant, None, tuple(sorted(ids)), q.start_from, q.start_to,
                            q.disposition)  # fmt: skip
            sql, params = self._sql(base, cols, None)
            sql += f" AND day IN ({', '.join('?' * len(days))})"
            return self._run(sql + order, [*params, *days])
        sql, params = self._sql(q, cols, None)
        return self._run(sql + order, params)

    def query(self, q: CdrQuery) -> list[Cdr]:
        return [self.codec.decode(r, self.name) for r in self.rows(q)]

    def count(self, q: CdrQuery) -> int:
        if q.subject:
            return len(self.rows(CdrQuery(**{**_fields(q), "limit": None})))
        sql, params = self._sql(q, "COUNT(*)", None)
        got = self._run(sql, params)
        return int(got[0][0]) if got else 0

    # --- purge by rewriting files -------------------------------------------------------------

    def _files_with(self, call_ids: list[str]) -> list[str]:
        if not call_ids:
            return []
        found: set[str] = set()
        for i in range(0, len(call_ids), 5000):
            chunk = call_ids[i : i + 5000]
            sql, params = self._sql(
                CdrQuery(call_ids=tuple(chunk)), "DISTINCT filename", None, True
            )
            found.update(r[0] for r in self._run(sql, params))
        return sorted(found)

    def _rewrite(self, call_ids: Iterable[str], minimize: bool) -> int:
        ids = sorted(set(call_ids))
        affected = 0
        id_arr = pa.array(ids, type=pa.string())
        for name in self._files_with(ids):
            path = Path(name)
            table = pq.read_table(path, schema=SCHEMA)
            mask = pc.is_in(table["call_id"], value_set=id_arr)
            hits = pc.sum(mask).as_py() or 0
            if not hits:
                continue
            affected += hits
            self._rewrite_index(path, id_arr)
            if minimize:
                cols = {}
                for c in table.column_names:
                    col = table[c]
                    if c in _IDENT:
                        col = pc.if_else(mask, pa.scalar(None, type=col.type), col)
                    elif c == "lineage":
                        vals = col.to_pylist()
                        flags = mask.to_pylist()
                        col = pa.array(
                            [_add_step(v, "minimized:direct identifier") if f else v
                             for v, f in zip(vals, flags, strict=True)],
                            type=pa.string(),
                        )  # fmt: skip
                    cols[c] = col
                self._write_file(path, pa.table(cols, schema=SCHEMA))
            else:
                kept = table.filter(pc.invert(mask))
                if len(kept):
                    self._write_file(path, kept)
                else:
                    path.unlink()
        return affected

    def _rewrite_index(self, data_path: Path, id_arr: pa.Array) -> None:
        """Both purge actions drop the subject index entries of the affected calls (a
        minimized record no longer has a subject)."""
        idx = data_path.with_name("idx-" + data_path.name[len("part-") :])
        if not idx.exists():
            return
        table = pq.read_table(idx, schema=INDEX_SCHEMA)
        kept = table.filter(pc.invert(pc.is_in(table["call_id"], value_set=id_arr)))
        if len(kept) == len(table):
            return
        if len(kept):
            self._write_file(idx, kept, INDEX_ROW_GROUP)
        else:
            idx.unlink()

    def delete(self, call_ids: Iterable[str]) -> int:
        return self._rewrite(call_ids, minimize=False)

    def minimize(self, call_ids: Iterable[str]) -> int:
        return self._rewrite(call_ids, minimize=True)


def _fields(q: CdrQuery) -> dict[str, Any]:
    return {f: getattr(q, f) for f in q.__dataclass_fields__}


def move_aged(hot: Any, cold: ColdCdrStore, before_ts: float, chunk: int = 100_000) -> int:
    """Move hot rows that started before ``before_ts`` to cold storage.

    Written to cold first, deleted from hot second: a crash in between leaves a row in both,
    which :class:`TieredStore` reads once (hot wins), never a row in neither."""
    moved = 0
    while True:
        rows = hot.rows(CdrQuery(start_to=before_ts, limit=chunk))
        if not rows:
            return moved
        cold.write_rows(rows)
        hot.delete([r[0] for r in rows])
        moved += len(rows)
        if len(rows) < chunk:
            return moved


class TieredStore:
    """Hot + cold behind the one query API: writes go hot, reads/purges cover both."""

    name = "tiered"

    def __init__(self, hot: Any, cold: ColdCdrStore) -> None:
        self.hot = hot
        self.cold = cold
        self.codec = cold.codec

    def close(self) -> None:
        self.hot.close()

    def write(self, cdrs: Iterable[Cdr]) -> int:
        return int(self.hot.write(cdrs))

    def rows(self, q: CdrQuery) -> list[tuple[Any, ...]]:
        hot = self.hot.rows(q)
        seen = {r[0] for r in hot}
        merged: list[tuple[Any, ...]] = hot + [r for r in self.cold.rows(q) if r[0] not in seen]
        merged.sort(key=lambda r: (r[IDX["start_ts"]], r[0]))
        return merged[: q.limit] if q.limit else merged

    def query(self, q: CdrQuery) -> list[Cdr]:
        hot = self.hot.query(q)
        seen = {c.call_id for c in hot}
        merged: list[Cdr] = hot + [c for c in self.cold.query(q) if c.call_id not in seen]
        merged.sort(key=lambda c: (c.start_ts, c.call_id))
        return merged[: q.limit] if q.limit else merged

    def count(self, q: CdrQuery) -> int:
        return len(self.rows(CdrQuery(**{**_fields(q), "limit": None})))

    def delete(self, call_ids: Iterable[str]) -> int:
        ids = list(call_ids)
        return int(self.hot.delete(ids)) + self.cold.delete(ids)

    def minimize(self, call_ids: Iterable[str]) -> int:
        ids = list(call_ids)
        return int(self.hot.minimize(ids)) + self.cold.minimize(ids)
