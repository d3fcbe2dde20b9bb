"""The phone API's shared state (preferences, presence, daily quotas) in one SQLite file,
``<data_dir>/phone-state.sqlite`` (WAL), so every ``callward web`` worker of a host answers the
same ETags: a conditional write accepted by one worker is a 412 for a stale ``If-Match`` in
another, and a status published through one is in the deltas served by the others.

Each change runs in one ``BEGIN IMMEDIATE`` transaction (compare-and-set on the version), so
two workers cannot both accept writes against the same ETag. ``:memory:`` gives a private
store (one process, tests).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from callward.errors import StoreError

__all__ = ["PhoneStateDb"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prefs (subject TEXT PRIMARY KEY, version INTEGER NOT NULL,
                                  doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS presence (tenant TEXT NOT NULL, aor TEXT NOT NULL,
    status TEXT NOT NULL, note TEXT NOT NULL, expires_at REAL NOT NULL,
    version INTEGER NOT NULL, PRIMARY KEY (tenant, aor));
CREATE TABLE IF NOT EXISTS presence_watch (subject TEXT PRIMARY KEY, rev INTEGER NOT NULL,
                                           aors TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS quota (name TEXT NOT NULL, day INTEGER NOT NULL, key TEXT NOT NULL,
                                  used INTEGER NOT NULL, PRIMARY KEY (name, day, key));
"""


class PhoneStateDb:
    def __init__(self, path: Path | str = ":memory:") -> None:
        try:
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                       timeout=5.0)  # fmt: skip
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"phone state: {exc}") from None
        if str(path) != ":memory:":
            Path(path).chmod(0o600)
        self._lock = threading.Lock()

    def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` inside ``BEGIN IMMEDIATE`` (the write lock across processes)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return out
            except sqlite3.Error as exc:
                raise StoreError(f"phone state: {exc}") from None

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"phone state: {exc}") from None

    @staticmethod
    def next_version(conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT value FROM counter WHERE name = ?", (name,)).fetchone()
        value = (row[0] if row else 0) + 1
        conn.execute("INSERT OR REPLACE INTO counter VALUES (?, ?)", (name, value))
        return int(value)

    def close(self) -> None:
        with self._lock:
            self._db.close()
