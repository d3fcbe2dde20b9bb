"""Presence for phones with the least data on the wire and on the server (routes in
:mod:`callward.web.routes.phone`).

* A phone **publishes** its own status (``available``, ``away``, ``busy``, ``dnd``) with a
  lifetime, like a SIP PUBLISH (RFC 3903 §4: the state dies with its ``Expires``); an expired
  status reads ``offline``.
* A phone **watches** at most :data:`MAX_WATCH` AORs of its own tenant: the contacts it
  matched through discovery, never its address book.
* It **reads deltas**: ``GET .../presence?since=V`` answers only what changed among its watched
  AORs after version ``V``; the ETag names the newest version among them (and the watch
  list's revision), so ``If-None-Match`` with the last ETag costs a bodiless 304 when nothing
  changed. A partition or handover on the phone ends in one such revalidation
  (:mod:`callward.ua.cache`: presence is never shown stale).

Kept in the phone-state database shared by the web workers of a host
(:mod:`callward.web.phone_state`). What a phone watches is not logged or exported.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from callward.web.phone_state import PhoneStateDb

__all__ = ["MAX_WATCH", "STATUSES", "EmergencyInfo", "PresenceStore"]

STATUSES = ("available", "away", "busy", "dnd")
MAX_WATCH = 500
MAX_NOTE = 64


class PresenceStore:
    """In the shared phone-state database (:mod:`callward.web.phone_state`): every worker
    serves the same versions and ETags."""

    def __init__(self, db: PhoneStateDb | None = None, *, max_entries: int = 100_000) -> None:
        self.db = db or PhoneStateDb()
        self.max_entries = max_entries

    def publish(self, tenant: str, aor: str, status: str, note: str, expires_at: float) -> int:
        if status not in STATUSES:
            raise ValueError(f"status {status[:20]!r}: expected one of {', '.join(STATUSES)}")

        def go(conn: sqlite3.Connection) -> int:
            known = conn.execute("SELECT 1 FROM presence WHERE tenant = ? AND aor = ?",
                                 (tenant, aor)).fetchone()  # fmt: skip
            if known is None:
                (n,) = conn.execute("SELECT count(*) FROM presence").fetchone()
                if n >= self.max_entries:
                    raise ValueError("presence store full")
            v = PhoneStateDb.next_version(conn, "presence")
            conn.execute("INSERT OR REPLACE INTO presence VALUES (?, ?, ?, ?, ?, ?)",
                         (tenant, aor, status, note[:MAX_NOTE], expires_at, v))  # fmt: skip
            return v

        return self.db.transaction(go)

    def withdraw(self, tenant: str, aor: str) -> None:
        """An explicit ``offline`` (PUBLISH with Expires: 0)."""

        def go(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM presence WHERE tenant = ? AND aor = ?",
                            (tenant, aor)).fetchone():  # fmt: skip
                v = PhoneStateDb.next_version(conn, "presence")
                conn.execute(
                    "UPDATE presence SET status = 'offline', note = '', expires_at = 0,"
                    " version = ? WHERE tenant = ? AND aor = ?",
                    (v, tenant, aor),
                )

        self.db.transaction(go)

    def watch(self, subject: str, aors: list[str]) -> int:
        def go(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT rev FROM presence_watch WHERE subject = ?",
                               (subject,)).fetchone()  # fmt: skip
            rev = (int(row[0]) if row else 0) + 1
            chosen = sorted(set(aors))[:MAX_WATCH]
            conn.execute("INSERT OR REPLACE INTO presence_watch VALUES (?, ?, ?)",
                         (subject, rev, json.dumps(chosen)))  # fmt: skip
            return rev

        return self.db.transaction(go)

    def delta(
        self, tenant: str, subject: str, since: int, now: float
    ) -> tuple[str, dict[str, Any]]:
        """(ETag, body) for what changed among ``subject``'s watched AORs after ``since``."""

        def go(conn: sqlite3.Connection) -> tuple[str, dict[str, Any]]:
            # expiry: every status past its lifetime reads offline, with a new version
            if conn.execute("SELECT 1 FROM presence WHERE status != 'offline' AND "
                            "expires_at <= ? LIMIT 1", (now,)).fetchone():  # fmt: skip
                v = PhoneStateDb.next_version(conn, "presence")
                conn.execute("UPDATE presence SET status = 'offline', note = '',"  # keeps its
                             " version = ? WHERE status != 'offline' AND expires_at <= ?",  # age
                             (v, now))  # fmt: skip
            row = conn.execute("SELECT rev, aors FROM presence_watch WHERE subject = ?",
                               (subject,)).fetchone()  # fmt: skip
            rev, aors = (int(row[0]), json.loads(row[1])) if row else (0, [])
            # retention deletes expired entries (privacy/web_stores.py) and records when: a
            # watcher that last read before that purge learns such AORs are offline
            mark = conn.execute("SELECT value FROM counter WHERE name = 'presence_purged'"
                                ).fetchone()  # fmt: skip
            purged = int(mark[0]) if mark else 0
            newest = 0
            changes: list[dict[str, Any]] = []
            for aor in aors:
                st = conn.execute("SELECT status, note, version FROM presence WHERE tenant = ? "
                                  "AND aor = ?", (tenant, aor)).fetchone()  # fmt: skip
                if st is None:
                    if purged:
                        newest = max(newest, purged)
                        if 0 < since < purged:
                            changes.append({"aor": aor, "status": "offline", "note": ""})
                    continue
                newest = max(newest, int(st[2]))
                if st[2] > since:
                    changes.append({"aor": aor, "status": st[0], "note": st[1]})
            return f'"{rev}.{newest}"', {"version": newest, "watch": rev, "changes": changes}

        return self.db.transaction(go)


@dataclass(frozen=True, slots=True)
class EmergencyInfo:
    """The emergency numbers phones must treat as such (never blocked by credit, fraud or
    registration state) and the route to send them to: a document with a content ETag, cached
    on the phone for ever (usable with no network, ua/cache.py ``emergency``)."""

    numbers: tuple[str, ...]
    route: str

    def document(self) -> tuple[str, bytes]:
        body = json.dumps({"numbers": list(self.numbers), "route": self.route},
                          separators=(",", ":"), sort_keys=True).encode()  # fmt: skip
        return f'"{hashlib.sha256(body).hexdigest()[:16]}"', body
