"""Client telemetry rows (call quality and data usage reported by phones through
``callward web``), stored next to the CDRs and aged by the same retention rules.

Rows are keyed by tenant and the subscriber's *pseudonym* (never the OAuth subject or a number)
and carry flat metrics only. As a :class:`~callward.records.retention.RetainedStore` of data
class ``cdr`` the retention engine treats a (tenant, pseudonym, UTC day) group like a CDR of that
day: purged when the tenant's CDR schedule says so (no redacted form: the rows hold no
identifier to blank), suspended by legal holds on the pseudonym, audited.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from callward.errors import StoreError
from callward.privacy.retention_policy import Stage
from callward.records.retention import RetainedItem

__all__ = ["TelemetryStore"]

DAY = 86400.0


class TelemetryStore:
    name = "phone-telemetry"
    data_class = "cdr"
    supports = frozenset({Stage.PURGED})

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS telemetry (tenant TEXT NOT NULL, subject TEXT NOT NULL,"
                " ts REAL NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS telemetry_ts ON telemetry (tenant, ts)")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: telemetry store: {exc}") from None

    def add(self, tenant: str, pseudonym: str, records: list[dict[str, Any]]) -> int:
        rows = [
            (tenant, pseudonym, float(r["ts"]), str(r["kind"])[:40],
             json.dumps(r, separators=(",", ":"), sort_keys=True))
            for r in records
        ]  # fmt: skip
        with self._lock, self._db:
            self._db.executemany("INSERT INTO telemetry VALUES (?, ?, ?, ?, ?)", rows)
        return len(rows)

    def count(self, tenant: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM telemetry", ()
        if tenant is not None:
            sql, args = sql + " WHERE tenant = ?", (tenant,)  # type: ignore[assignment]
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])

    def items(self, older_than: float) -> Iterable[RetainedItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT tenant, subject, CAST(ts / 86400 AS INTEGER) AS day FROM telemetry"
                " WHERE ts < ? GROUP BY tenant, subject, day",
                (older_than,),
            ).fetchall()
        for tenant, subject, day in rows:
            yield RetainedItem(
                self.name, (tenant, subject, int(day)), f"telemetry:{int(day)}:{subject[:12]}",
                tenant, int(day) * DAY, Stage.FULL, (subject,),
            )  # fmt: skip

    def apply(self, stage: Stage, items: Sequence[RetainedItem]) -> int:
        removed = 0
        with self._lock, self._db:
            for item in items:
                tenant, subject, day = item.key
                cur = self._db.execute(
                    "DELETE FROM telemetry WHERE tenant = ? AND subject = ? AND ts >= ? AND ts < ?",
                    (tenant, subject, day * DAY, (day + 1) * DAY),
                )
                removed += cur.rowcount
        return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()
