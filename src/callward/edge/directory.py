"""One store for who a subscriber is: SIP AOR ↔ MSISDN ↔ OAuth subject, with change events.

The edge asks it on every Bearer-authenticated request (the token says *who logged in*, the
directory says *which AOR that is today*), the web's contact discovery asks it which numbers are
reachable, and an operator changes it (``callward identity``). Every change bumps a version
and appends an :class:`IdentityChange` (added / renumbered / moved / revoked / restored), so:

* a renumbered MSISDN or a revoked subject applies to the *next* request: nothing caches the
  mapping longer than one request;
* consumers that do cache (the web's discovery index, a phone's contact list) ask
  :meth:`SqliteDirectory.changes_since` with the version they last saw.

SQLite (WAL) is the embedded store; the edge and the web open the same file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from callward.errors import StoreError

__all__ = ["Identity", "IdentityChange", "IdentityDirectory", "SqliteDirectory"]

CHANGE_KINDS = ("added", "renumbered", "moved", "revoked", "restored")


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str  # OAuth ``sub`` at the issuer
    aor: str  # user@domain
    msisdn: str | None = None  # E.164 with "+", or None
    tenant: str = "default"
    revoked: bool = False

    def __post_init__(self) -> None:
        if not (0 < len(self.subject) <= 255) or "@" not in self.aor or len(self.aor) > 255:
            raise StoreError("identity: subject 1..255 chars and an AOR user@domain expected")
        if self.msisdn is not None and not (
            self.msisdn.startswith("+") and self.msisdn[1:].isdigit() and len(self.msisdn) <= 16
        ):
            raise StoreError("identity: msisdn must be E.164 (+ and up to 15 digits)")


@dataclass(frozen=True, slots=True)
class IdentityChange:
    version: int
    subject: str
    kind: str
    at: float


class IdentityDirectory(Protocol):
    def by_subject(self, subject: str) -> Identity | None: ...

    def by_aor(self, aor: str) -> Identity | None: ...

    def by_msisdn(self, msisdn: str) -> Identity | None: ...

    def put(self, identity: Identity) -> int: ...

    def renumber(self, subject: str, msisdn: str | None) -> int: ...

    def revoke(self, subject: str, *, revoked: bool = True) -> int: ...

    def version(self) -> int: ...

    def changes_since(self, version: int, limit: int = 1000) -> list[IdentityChange]: ...

    def reachable_msisdns(self, tenant: str | None = None) -> list[tuple[str, str]]: ...

    def tenants(self) -> list[str]: ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS identity (
    subject TEXT PRIMARY KEY,
    aor TEXT NOT NULL UNIQUE,
    msisdn TEXT UNIQUE,
    tenant TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS identity_change (
    version INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL
);
"""


class SqliteDirectory:
    """The embedded :class:`IdentityDirectory`. Thread-safe (one connection, one lock)."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: identity directory: {exc}") from None

    def _one(self, where: str, value: str) -> Identity | None:
        with self._lock:
            try:
                row = self._db.execute(
                    f"SELECT subject, aor, msisdn, tenant, revoked FROM identity WHERE {where} = ?",
                    (value,),
                ).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"identity directory: {exc}") from None
        return None if row is None else Identity(row[0], row[1], row[2], row[3], bool(row[4]))

    def by_subject(self, subject: str) -> Identity | None:
        return self._one("subject", subject)

    def by_aor(self, aor: str) -> Identity | None:
        return self._one("aor", aor)

    def by_msisdn(self, msisdn: str) -> Identity | None:
        return self._one("msisdn", msisdn)

    def _change(self, subject: str, kind: str, sql: str, args: tuple[object, ...]) -> int:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.execute(sql, args)
                if cur.rowcount == 0:
                    self._db.execute("ROLLBACK")
                    raise StoreError(f"identity directory: no subject {subject[:40]!r}")
                cur = self._db.execute(
                    "INSERT INTO identity_change (subject, kind, at) VALUES (?, ?, ?)",
                    (subject, kind, self._clock()),
                )
                self._db.execute("COMMIT")
                return int(cur.lastrowid or 0)
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise StoreError("identity directory: AOR or MSISDN already taken") from None
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"identity directory: {exc}") from None

    def put(self, identity: Identity) -> int:
        old = self.by_subject(identity.subject)
        kind = "added" if old is None else "moved"
        if old is not None and old.aor == identity.aor and old.msisdn != identity.msisdn:
            kind = "renumbered"
        return self._change(
            identity.subject,
            kind,
            "INSERT INTO identity (subject, aor, msisdn, tenant, revoked) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(subject) DO UPDATE SET aor=excluded.aor, msisdn=excluded.msisdn,"
            " tenant=excluded.tenant, revoked=excluded.revoked",
            (identity.subject, identity.aor, identity.msisdn, identity.tenant,
             int(identity.revoked)),
        )  # fmt: skip

    def renumber(self, subject: str, msisdn: str | None) -> int:
        Identity(subject, "x@y", msisdn)  # validates the number
        return self._change(
            subject, "renumbered", "UPDATE identity SET msisdn = ? WHERE subject = ?",
            (msisdn, subject),
        )  # fmt: skip

    def revoke(self, subject: str, *, revoked: bool = True) -> int:
        return self._change(
            subject, "revoked" if revoked else "restored",
            "UPDATE identity SET revoked = ? WHERE subject = ?", (int(revoked), subject),
        )  # fmt: skip

    def version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(version) FROM identity_change").fetchone()
        return int(row[0] or 0)

    def changes_since(self, version: int, limit: int = 1000) -> list[IdentityChange]:
        with self._lock:
            rows = self._db.execute(
                "SELECT version, subject, kind, at FROM identity_change WHERE version > ?"
                " ORDER BY version LIMIT ?",
                (version, max(1, min(limit, 10_000))),
            ).fetchall()
        return [IdentityChange(int(v), s, k, float(a)) for v, s, k, a in rows]

    def reachable_msisdns(self, tenant: str | None = None) -> list[tuple[str, str]]:
        """``(msisdn, aor)`` of every non-revoked identity with a number (discovery index)."""
        sql = "SELECT msisdn, aor FROM identity WHERE msisdn IS NOT NULL AND revoked = 0"
        args: tuple[str, ...] = ()
        if tenant is not None:
            sql, args = sql + " AND tenant = ?", (tenant,)
        with self._lock:
            return [(str(m), str(a)) for m, a in self._db.execute(sql, args).fetchall()]

    def tenants(self) -> list[str]:
        with self._lock:
            return [str(r[0]) for r in self._db.execute("SELECT DISTINCT tenant FROM identity")]

    def close(self) -> None:
        with self._lock:
            self._db.close()
