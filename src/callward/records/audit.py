"""Access audit trail for CDRs: who read or exported which records, when, why, under which ticket.

Tamper evidence: every entry carries ``hash = SHA-256(prev_hash || canonical(entry))`` (a hash
chain, as in RFC 6962's Merkle log, reduced to a list). Editing, deleting or reordering an entry
breaks the chain at that point. Cutting entries off the *end* does not break a chain, so the head
(seq, hash) is also written to an anchor file after every append; operators ship that anchor to
write-once storage or a separate host, where an attacker with database access cannot rewrite it.

Reads are refused without a reason and a ticket (GDPR Art. 5(2) accountability: the controller
must be able to demonstrate each access was for a stated purpose).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callward.errors import PolicyError, StoreError
from callward.private_files import private_file
from callward.records.rows import CdrQuery
from callward.records.schema import Cdr

__all__ = ["GENESIS", "AuditEntry", "AuditLog", "AuditedReader"]

GENESIS = "0" * 64
ACTIONS = frozenset(
    {"read", "export", "purge", "minimize", "hold", "release", "shred", "restore", "move",
     # retention stages, consent decisions, key management, lawful interception (own trail)
     "aggregate", "consent", "recording", "backup", "rotate", "warrant", "intercept"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    ts: float
    actor: str
    action: str
    reason: str
    ticket: str
    records: tuple[str, ...]
    subject: str  # a pseudonym, never the identifier itself
    detail: str
    prev_hash: str
    hash: str

    def body(self) -> bytes:
        return json.dumps(
            [self.seq, repr(self.ts), self.actor, self.action, self.reason, self.ticket,
             list(self.records), self.subject, self.detail],
            separators=(",", ":"),
            ensure_ascii=True,
        ).encode()  # fmt: skip


def _chain(prev: str, body: bytes) -> str:
    return hashlib.sha256(prev.encode() + b"\n" + body).hexdigest()


class AuditLog:
    """Hash-chained audit trail in SQLite, with a head anchor file."""

    def __init__(
        self,
        path: Path | str,
        anchor: Path | str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.anchor = Path(anchor) if anchor is not None else Path(str(path) + ".head")
        self.clock = clock
        try:
            private_file(self.path)  # personal data: 0600 in a 0700 folder
            # used from worker threads (scheduler, asyncio.to_thread): one lock serializes it
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            self._lock = threading.RLock()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, ts REAL NOT NULL,"
                " actor TEXT NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL,"
                " ticket TEXT NOT NULL, records TEXT NOT NULL, subject TEXT NOT NULL,"
                " detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: audit trail unavailable: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def record(
        self,
        actor: str,
        action: str,
        reason: str,
        ticket: str,
        records: Iterable[str] = (),
        subject: str = "",
        detail: str = "",
    ) -> AuditEntry:
        if action not in ACTIONS:
            raise PolicyError(f"audit action {action!r}: expected one of {sorted(ACTIONS)}")
        if not actor.strip() or not reason.strip() or not ticket.strip():
            raise PolicyError("CDR access needs an actor, a stated reason and a ticket")
        ids = tuple(sorted(set(records)))
        with self._lock:
            return self._append(actor, action, reason, ticket, ids, subject, detail)

    def _append(
        self,
        actor: str,
        action: str,
        reason: str,
        ticket: str,
        ids: tuple[str, ...],
        subject: str,
        detail: str,
    ) -> AuditEntry:
        try:
            self._db.execute("BEGIN IMMEDIATE")  # serializes appenders across processes
            last = self._db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            row = last.fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
            draft = AuditEntry(
                seq, self.clock(), actor, action, reason, ticket, ids, subject, detail, prev, ""
            )
            entry = AuditEntry(**{**_asdict(draft), "hash": _chain(prev, draft.body())})
            self._db.execute(
                "INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (entry.seq, entry.ts, actor, action, reason, ticket, json.dumps(list(ids)),
                 subject, detail, prev, entry.hash),
            )  # fmt: skip
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StoreError(f"{self.path}: audit append failed: {exc}") from None
        self._write_anchor(entry)
        return entry

    def _write_anchor(self, entry: AuditEntry) -> None:
        tmp = self.anchor.with_name(self.anchor.name + ".tmp")
        tmp.write_text(f"{entry.seq} {entry.hash}\n", encoding="ascii")
        os.replace(tmp, self.anchor)

    def entries(self) -> list[AuditEntry]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM audit ORDER BY rowid").fetchall()
        return [
            AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], tuple(json.loads(r[6])), r[7], r[8],
                       r[9], r[10])
            for r in rows
        ]  # fmt: skip

    def verify(self) -> list[str]:
        """Problems found (empty list = intact): broken links, wrong hashes, gaps, truncation."""
        problems: list[str] = []
        prev, expect = GENESIS, 1
        try:
            entries = self.entries()
        except (sqlite3.Error, ValueError) as exc:
            return [f"audit trail unreadable: {exc}"]
        for e in entries:
            if e.seq != expect:
                problems.append(f"entry {e.seq}: expected sequence {expect} (deleted/reordered)")
            if e.prev_hash != prev:
                problems.append(f"entry {e.seq}: prev_hash does not link to the previous entry")
            if _chain(e.prev_hash, e.body()) != e.hash:
                problems.append(f"entry {e.seq}: content does not match its hash (edited)")
            prev, expect = e.hash, e.seq + 1
        if self.anchor.exists():
            try:
                a_seq, a_hash = self.anchor.read_text(encoding="ascii").split()
            except ValueError:
                return [*problems, "anchor file unreadable"]
            by_seq = {e.seq: e for e in entries}
            head = by_seq.get(int(a_seq))
            if head is None:
                problems.append(f"anchor names entry {a_seq} which is missing (truncated)")
            elif head.hash != a_hash:
                problems.append(f"entry {a_seq}: differs from the anchored head hash")
            elif entries and entries[-1].seq > int(a_seq):
                problems.append("entries after the anchored head were not anchored")
        elif entries:
            problems.append("anchor file missing")
        return problems


def _asdict(e: AuditEntry) -> dict[str, Any]:
    return {f: getattr(e, f) for f in e.__dataclass_fields__}


@dataclass
class AuditedReader:
    """Every read goes through here: the audit entry is written *before* data is returned, so
    a crash can over-report an access but never hide one."""

    store: Any  # a CdrStore
    audit: AuditLog
    actor: str

    def query(self, q: CdrQuery, reason: str, ticket: str, action: str = "read") -> list[Cdr]:
        if not reason.strip() or not ticket.strip():
            raise PolicyError("CDR access needs a stated reason and a ticket")
        found: list[Cdr] = self.store.query(q)
        subject = self.store.codec.pseudonym(q.subject).hex() if q.subject else ""
        self.audit.record(
            self.actor, action, reason, ticket, [c.call_id for c in found], subject,
            detail=json.dumps({"store": self.store.name, "count": len(found)}),
        )  # fmt: skip
        return found
