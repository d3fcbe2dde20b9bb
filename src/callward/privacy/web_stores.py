"""The stores ``callward web`` writes under retention, erasure and verification.

* ``phone-state.sqlite`` (:mod:`callward.web.phone_state`): presence entries (tenant, AOR,
  status) aged from their expiry (a withdrawn status has none: purged at the next run), daily
  quota counters aged from the end of their day (data class ``phone_state``); preferences and
  presence watch lists, keyed by the OAuth subject, live as long as the subscriber: they are
  erased with the subject (``privacy shred``) and go when retention purges the subscriber row.
  A purge records the presence version it happened at, so a watcher that last polled before
  it reads the purged AORs as ``offline`` (:meth:`callward.web.presence.PresenceStore.delta`).
* ``web-sessions.sqlite`` (:mod:`callward.web.sessions`): dashboard sessions (SHA-256 of the
  id, actor) aged from their last use (data class ``web_session``; a session is dead after
  30 min idle or 8 h anyway); erasure deletes the sessions whose actor names the subject.

The phone-state rows name a subscriber by OAuth subject and AOR, not by number: erasure and
``privacy verify`` resolve a number to them through the identity directory, so they run before
the directory rows are deleted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callward.errors import PolicyError, StoreError
from callward.privacy.pseudonym import Pseudonymizer
from callward.privacy.retention_policy import Stage
from callward.privacy.subscriber_retention import subject_of
from callward.records.retention import RetainedItem

__all__ = ["PhoneStateRows", "WebSessionRows"]

DAY = 86400


def _forms(needles: dict[str, bytes]) -> set[str]:
    return {nd.decode("utf-8", "ignore") for k, nd in needles.items() if k.endswith("/utf-8")}


def _names(aor: str, forms: set[str]) -> bool:
    return subject_of(aor) in forms or subject_of(aor.split("@", 1)[0]) in forms


def _open(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(str(path), isolation_level=None, timeout=5)
        db.execute("PRAGMA secure_delete=ON")
        return db
    except sqlite3.Error as exc:
        raise StoreError(f"{path.name}: {exc}") from None


def _compact(db: sqlite3.Connection) -> None:
    """Fold the WAL in and rebuild the file so no free page or old frame keeps a value."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("VACUUM")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@dataclass
class PhoneStateRows:
    path: Path
    directory: Path  # the identity directory: number -> (OAuth subject, AOR)
    pseudonymizer: Pseudonymizer
    name: str = "phone-state"
    data_class: str = "phone_state"
    supports: frozenset[Stage] = frozenset({Stage.PURGED})

    def _pn(self, aor: str) -> str:
        subj = subject_of(aor)
        try:
            return self.pseudonymizer.pseudonym(subj) if subj else ""
        except PolicyError:
            return ""

    def _run(self, fn: Any) -> Any:
        if not self.path.exists():
            return None
        db = _open(self.path)
        try:
            db.execute("BEGIN IMMEDIATE")
            out = fn(db)
            db.execute("COMMIT")
            return out
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path.name}: phone state: {exc}") from None
        finally:
            db.close()

    def items(self, older_than: float) -> Iterable[RetainedItem]:
        def read(db: sqlite3.Connection) -> list[RetainedItem]:
            out = []
            for tenant, aor, version, exp in db.execute(
                "SELECT tenant, aor, version, expires_at FROM presence WHERE expires_at < ?",
                (older_than,),
            ):
                pn = self._pn(aor)
                out.append(RetainedItem(self.name, ("presence", tenant, aor, version),
                                        f"presence:{pn[:16]}", tenant, float(exp), Stage.FULL,
                                        (pn,) if pn else ()))  # fmt: skip
            for name, day in db.execute("SELECT DISTINCT name, day FROM quota WHERE day < ?",
                                        (int(older_than // DAY),)):  # fmt: skip
                out.append(RetainedItem(self.name, ("quota", name, day), f"quota:{name}/{day}",
                                        "", float((day + 1) * DAY)))  # fmt: skip
            return out

        return self._run(read) or []

    def apply(self, stage: Stage, items: Sequence[RetainedItem]) -> int:
        def purge(db: sqlite3.Connection) -> int:
            n = 0
            for it in items:
                if it.key[0] == "presence":  # unless republished since it was planned
                    n += db.execute("DELETE FROM presence WHERE tenant = ? AND aor = ? AND"
                                    " version = ?", it.key[1:]).rowcount  # fmt: skip
                else:
                    n += db.execute("DELETE FROM quota WHERE name = ? AND day = ?",
                                    it.key[1:]).rowcount  # fmt: skip
            if n:
                self._mark_purge(db)
            return n

        n = int(self._run(purge) or 0)
        if n:
            self._run_plain(_compact)
        return n

    @staticmethod
    def _mark_purge(db: sqlite3.Connection) -> None:
        # The presence version counter of callward web's phone-state schema (web/phone_state.py
        # bumps it the same way); privacy sits below web, so the two SQL lines are read here.
        row = db.execute("SELECT value FROM counter WHERE name = 'presence'").fetchone()
        v = int(row[0] if row else 0) + 1
        db.execute("INSERT OR REPLACE INTO counter VALUES ('presence', ?)", (v,))
        db.execute("INSERT OR REPLACE INTO counter VALUES ('presence_purged', ?)", (v,))

    def _run_plain(self, fn: Any) -> None:
        db = _open(self.path)
        try:
            fn(db)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path.name}: phone state: {exc}") from None
        finally:
            db.close()

    def _identities(self, forms: set[str]) -> tuple[set[str], set[str]]:
        """(OAuth subjects, AORs) the directory links to the subject."""
        if not self.directory.exists():
            return set(), set()
        try:
            db = sqlite3.connect(f"file:{self.directory}?mode=ro", uri=True, timeout=5)
            try:
                rows = db.execute("SELECT subject, aor, msisdn FROM identity").fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.directory.name}: identity directory: {exc}") from None
        hit = [(s, a) for s, a, m in rows if (m and subject_of(m) in forms) or _names(a, forms)]
        return {s for s, _ in hit}, {a for _, a in hit}

    def _rows(self, db: sqlite3.Connection, subjects: set[str], aors: set[str]) -> list[Any]:
        """(table, key, watch list) of every row of the subject."""
        out: list[Any] = []
        for (s,) in db.execute("SELECT subject FROM prefs"):
            if s in subjects:
                out.append(("prefs", s, None))
        for (k,) in db.execute("SELECT DISTINCT key FROM quota"):
            if k in subjects:
                out.append(("quota", k, None))
        for t, a in db.execute("SELECT tenant, aor FROM presence"):
            if a in aors:
                out.append(("presence", (t, a), None))
        for s, raw in db.execute("SELECT subject, aors FROM presence_watch"):
            watched = json.loads(raw)
            if s in subjects or aors & set(watched):
                out.append(("presence_watch", s, watched))
        return out

    def _targets(
        self, db: sqlite3.Connection, needles: dict[str, bytes]
    ) -> tuple[list[Any], set[str], set[str]]:
        forms = _forms(needles)
        subjects, aors = self._identities(forms)
        aors |= {a for (a,) in db.execute("SELECT aor FROM presence") if _names(a, forms)}
        return self._rows(db, subjects, aors), subjects, aors

    def erase(self, pn: str, needles: dict[str, bytes]) -> int:
        def go(db: sqlite3.Connection) -> int:
            rows, subjects, aors = self._targets(db, needles)
            for table, key, watched in rows:
                if table == "presence":
                    db.execute("DELETE FROM presence WHERE tenant = ? AND aor = ?", key)
                elif table == "presence_watch" and key not in subjects:  # another's list
                    kept = [a for a in watched if a not in aors]
                    db.execute("UPDATE presence_watch SET rev = rev + 1, aors = ? WHERE"
                               " subject = ?", (json.dumps(kept), key))  # fmt: skip
                else:
                    col = "key" if table == "quota" else "subject"
                    db.execute(f"DELETE FROM {table} WHERE {col} = ?", (key,))
            if any(t == "presence" for t, _, _ in rows):
                self._mark_purge(db)
            return len(rows)

        n = int(self._run(go) or 0)
        if n:
            self._run_plain(_compact)
        return n

    def plaintext(self, needles: dict[str, bytes]) -> list[str]:
        """``<table>:<pseudonym>`` of each row linked to the subject (by AOR or, through the
        identity directory, by OAuth subject)."""
        pn = ""
        for k, nd in needles.items():
            if k.endswith("/utf-8"):
                pn = self._pn(nd.decode("utf-8", "ignore"))
                break

        def look(db: sqlite3.Connection) -> list[str]:
            rows, _, _ = self._targets(db, needles)
            return [f"{t}:{pn[:16]}" for t, _, _ in rows]

        return list(self._run(look) or [])


@dataclass
class WebSessionRows:
    path: Path
    name: str = "web-sessions"
    data_class: str = "web_session"
    supports: frozenset[Stage] = frozenset({Stage.PURGED})

    def _run(self, fn: Any) -> Any:
        if not self.path.exists():
            return None
        db = _open(self.path)
        try:
            return fn(db)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path.name}: web sessions: {exc}") from None
        finally:
            db.close()

    def items(self, older_than: float) -> Iterable[RetainedItem]:
        def read(db: sqlite3.Connection) -> list[RetainedItem]:
            out = []
            for key, created, row in db.execute("SELECT key, created, row FROM session"):
                try:
                    seen = float(json.loads(row).get("l", created))
                except (ValueError, TypeError, AttributeError):
                    seen = float(created)
                if seen < older_than:
                    out.append(RetainedItem(self.name, (key, row), f"session:{key[:12]}", "",
                                            seen))  # fmt: skip
            return out

        return self._run(read) or []

    def _delete(self, keys: Sequence[tuple[str, ...]], where: str) -> int:
        def go(db: sqlite3.Connection) -> int:
            n = sum(db.execute(f"DELETE FROM session WHERE {where}", k).rowcount for k in keys)
            if n:
                _compact(db)
            return n

        return int(self._run(go) or 0)

    def apply(self, stage: Stage, items: Sequence[RetainedItem]) -> int:
        # unless used since it was planned (the row changes on every use)
        return self._delete([i.key for i in items], "key = ? AND row = ?")

    def erase(self, pn: str, needles: dict[str, bytes]) -> int:
        forms = _forms(needles)

        def match(db: sqlite3.Connection) -> list[tuple[str]]:
            return [(k,) for k, actor in db.execute("SELECT key, actor FROM session")
                    if any(f in actor for f in forms)]  # fmt: skip

        return self._delete(self._run(match) or [], "key = ?")
