"""Subscriber store: who may register, with HA1 hashes only (never a plaintext password).

Two implementations behind one small interface (style.md §7): SQLite (embedded default) and
PostgreSQL (scale-out, shared by every edge node). Both keep one row per (username, realm)
with an MD5 and a SHA-256 HA1 (RFC 8760 lets the client choose), plus the tenant.

Each row also carries ``created`` and ``last_seen`` (epoch seconds): the retention engine ages a
subscriber from the later of the two (:mod:`callward.privacy.retention_stores`), so an account
unused for the ``subscriber`` period of the rule set is purged. ``last_seen`` is bumped by
:meth:`touch` when a REGISTER saves bindings (at most once an hour per AOR and process;
PostgreSQL writes it from a background thread, never on the event loop). Rows
from before these columns existed get ``created`` = the time of the migration: their real age is
unknown, and purging a customer's account on a guess would be worse than keeping it one period.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from callward.errors import StoreError
from callward.private_files import private_file
from callward.sip.auth import DigestAlgorithm, ha1

__all__ = [
    "PostgresSubscribers",
    "SqliteSubscribers",
    "Subscriber",
    "SubscriberStore",
    "open_subscribers",
]


@dataclass(frozen=True, slots=True)
class Subscriber:
    username: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    tenant: str = "default"

    @classmethod
    def from_password(
        cls, username: str, realm: str, password: str, tenant: str = "default"
    ) -> Subscriber:
        """Hash at provisioning time; the password is not kept anywhere."""
        return cls(
            username,
            realm,
            ha1(DigestAlgorithm.MD5, username, realm, password),
            ha1(DigestAlgorithm.SHA256, username, realm, password),
            tenant,
        )

    def ha1_for(self) -> dict[str, str]:
        return {"MD5": self.ha1_md5, "SHA-256": self.ha1_sha256}


class SubscriberStore(Protocol):
    def get(self, username: str, realm: str) -> Subscriber | None: ...

    def put(self, sub: Subscriber) -> None: ...

    def delete(self, username: str, realm: str) -> bool: ...

    def touch(self, username: str, now: float) -> None:
        """The subscriber ``username`` (any realm) was active at ``now`` (for retention)."""
        ...

    def close(self) -> None: ...


_SCHEMA = """CREATE TABLE IF NOT EXISTS {table} (
    username TEXT NOT NULL,
    realm TEXT NOT NULL,
    ha1_md5 TEXT NOT NULL,
    ha1_sha256 TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default',
    created DOUBLE PRECISION,
    last_seen DOUBLE PRECISION,
    PRIMARY KEY (username, realm)
)"""
_COLS = "username, realm, ha1_md5, ha1_sha256, tenant, created, last_seen"
_AGE_COLS = ("created", "last_seen")


class SqliteSubscribers:
    """Embedded default; safe to share between the event loop and a CLI in another process."""

    def __init__(self, path: str | Path, table: str = "subscribers") -> None:
        if not table.isidentifier():
            raise StoreError(f"invalid table name {table!r}")
        self._table = table
        self._lock = threading.Lock()
        if str(path) != ":memory:":
            private_file(path)  # HA1 digests are enough to log in: 0600 in a 0700 folder
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=5)
            self._db.execute(_SCHEMA.format(table=table))
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for col in _AGE_COLS:
                if col not in have:  # a database from before retention aged subscribers
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {col} DOUBLE PRECISION")
            self._db.execute(
                f"UPDATE {table} SET created = ? WHERE created IS NULL", (time.time(),)
            )
            self._db.commit()
        except sqlite3.Error as exc:
            raise StoreError(f"subscriber store {path}: {exc}") from None

    def get(self, username: str, realm: str) -> Subscriber | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT username, realm, ha1_md5, ha1_sha256, tenant FROM {self._table} "
                "WHERE username = ? AND realm = ?",
                (username, realm),
            ).fetchone()
        return None if row is None else Subscriber(*row)

    def put(self, sub: Subscriber) -> None:
        """Add or update (``created`` stays the first provisioning time)."""
        with self._lock:
            self._db.execute(
                f"INSERT INTO {self._table} ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, NULL) "
                "ON CONFLICT (username, realm) DO UPDATE SET ha1_md5 = excluded.ha1_md5, "
                "ha1_sha256 = excluded.ha1_sha256, tenant = excluded.tenant",
                (sub.username, sub.realm, sub.ha1_md5, sub.ha1_sha256, sub.tenant, time.time()),
            )
            self._db.commit()

    def touch(self, username: str, now: float) -> None:
        with self._lock:
            try:
                self._db.execute(
                    f"UPDATE {self._table} SET last_seen = ? WHERE username = ?", (now, username)
                )
                self._db.commit()
            except sqlite3.Error as exc:
                raise StoreError(f"subscriber store: {exc}") from None

    def delete(self, username: str, realm: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                f"DELETE FROM {self._table} WHERE username = ? AND realm = ?", (username, realm)
            )
            self._db.commit()
        return cur.rowcount > 0

    def close(self) -> None:
        self._db.close()


class PostgresSubscribers:
    """PostgreSQL store (psycopg 3, autocommit). ``table`` lets tests use a private table."""

    def __init__(self, url: str, table: str = "callward_subscribers") -> None:
        import psycopg

        if not table.isidentifier():
            raise StoreError(f"invalid table name {table!r}")
        self._table = table
        self._lock = threading.Lock()
        self._touches: ThreadPoolExecutor | None = None
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=5)
            self._db.execute(_SCHEMA.format(table=table))
            for col in _AGE_COLS:  # tables from before retention aged subscribers
                self._db.execute(
                    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {col} DOUBLE PRECISION"
                )
            self._db.execute(
                f"UPDATE {table} SET created = %s WHERE created IS NULL", (time.time(),)
            )
        except psycopg.Error as exc:
            raise StoreError(f"subscriber store: {str(exc).splitlines()[0]}") from None

    def get(self, username: str, realm: str) -> Subscriber | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT username, realm, ha1_md5, ha1_sha256, tenant FROM {self._table} "
                "WHERE username = %s AND realm = %s",
                (username, realm),
            ).fetchone()
        return None if row is None else Subscriber(*row)

    def put(self, sub: Subscriber) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT INTO {self._table} ({_COLS}) VALUES (%s, %s, %s, %s, %s, %s, NULL) "
                "ON CONFLICT (username, realm) DO UPDATE SET ha1_md5 = EXCLUDED.ha1_md5, "
                "ha1_sha256 = EXCLUDED.ha1_sha256, tenant = EXCLUDED.tenant",
                (sub.username, sub.realm, sub.ha1_md5, sub.ha1_sha256, sub.tenant, time.time()),
            )

    def touch(self, username: str, now: float) -> None:
        """Queued to one background thread: the edge may answer REGISTERs inline on its
        event loop, which must not wait for a network round trip (bookkeeping only: a
        failed write is dropped; ``close`` waits for queued ones)."""
        if self._touches is None:
            self._touches = ThreadPoolExecutor(1, thread_name_prefix="subscriber-touch")
        self._touches.submit(self._touch, username, now)

    def _touch(self, username: str, now: float) -> None:
        import psycopg

        with self._lock:
            try:
                self._db.execute(
                    f"UPDATE {self._table} SET last_seen = %s WHERE username = %s",
                    (now, username),
                )
            except psycopg.Error:
                pass  # retention ages from an older last_seen: never fails the REGISTER

    def delete(self, username: str, realm: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                f"DELETE FROM {self._table} WHERE username = %s AND realm = %s",
                (username, realm),
            )
        return cur.rowcount > 0

    def flush(self) -> None:
        """Wait for queued ``touch`` writes."""
        if self._touches is not None:
            self._touches.shutdown(wait=True)
            self._touches = None

    def drop(self) -> None:
        """Remove the table (tests clean up after themselves)."""
        with self._lock:
            self._db.execute(f"DROP TABLE IF EXISTS {self._table}")

    def close(self) -> None:
        self.flush()
        self._db.close()


def open_subscribers(spec: str) -> SubscriberStore:
    """``postgresql://...`` → PostgreSQL; ``sqlite:PATH`` or a bare path → SQLite."""
    if spec.startswith(("postgresql://", "postgres://")):
        return PostgresSubscribers(spec)
    if spec.startswith("sqlite:"):
        spec = spec[len("sqlite:") :]
    return SqliteSubscribers(spec)
