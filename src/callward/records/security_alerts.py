"""The consumer of :class:`~callward.events.SecurityAlert` events (admission, scanners, fraud,
failed auth, TLS expiry): a structured log line, a per-rule count, the newest alerts in memory,
and (``callward serve``) a bounded SQLite store the dashboard's security view reads
(:class:`SecurityAlertStore`, ``<data_dir>/security_alerts.sqlite``, 0600).

Nothing from the alert reaches the log in the clear: the source (an address or an account) is
replaced by a keyed pseudonym (stable, so an operator can correlate repeated alerts without
seeing the address), the rule is a bounded label, and the detail is reduced to printable ASCII
before the privacy layer's redaction processor sees it too.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import structlog

from callward.errors import StoreError
from callward.events import SECURITY_ALERT_RULES, Event, SecurityAlert
from callward.privacy.pseudonym import Pseudonymizer
from callward.private_files import private_file

__all__ = ["KNOWN_RULES", "AlertRecord", "SecurityAlertLog", "SecurityAlertStore", "safe_text"]

log = structlog.get_logger("callward.security")

KNOWN_RULES = SECURITY_ALERT_RULES


def safe_text(text: str, limit: int = 120) -> str:
    """Printable ASCII only (control characters, ESC sequences and non-ASCII become '?')."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:limit])


@dataclass(frozen=True, slots=True)
class AlertRecord:
    ts: float
    node: str
    tenant: str
    rule: str
    source: str  # pseudonym
    detail: str


_SCHEMA = """CREATE TABLE IF NOT EXISTS security_alerts (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, node TEXT NOT NULL, tenant TEXT NOT NULL,
    rule TEXT NOT NULL, source TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS security_alerts_ts ON security_alerts (ts);"""


class SecurityAlertStore:
    """Alerts as the log recorded them (pseudonymized source, sanitised text), newest
    ``max_rows`` kept: older rows are deleted in batches, never the whole table at once."""

    def __init__(self, path: str | Path, *, max_rows: int = 50_000) -> None:
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._since_trim = 0
        if str(path) != ":memory:":
            private_file(path)  # pseudonyms and attack details: operator eyes only
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=5)
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"security alert store {path}: {exc}") from None

    def append(self, r: AlertRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO security_alerts (ts, node, tenant, rule, source, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (r.ts, r.node, r.tenant, r.rule, r.source, r.detail),
            )
            self._since_trim += 1
            if self._since_trim >= 1000:
                self._since_trim = 0
                self._db.execute(
                    "DELETE FROM security_alerts WHERE id <= "
                    "(SELECT MAX(id) FROM security_alerts) - ?",
                    (self.max_rows,),
                )
            self._db.commit()

    def recent(self, limit: int = 50, tenants: tuple[str, ...] = ()) -> list[AlertRecord]:
        """Newest first; ``tenants`` non-empty: only alerts of those tenants."""
        where, args = self._scope(tenants)
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, node, tenant, rule, source, detail FROM security_alerts"
                f"{where} ORDER BY id DESC LIMIT ?",
                (*args, max(1, min(limit, 1000))),
            ).fetchall()
        return [AlertRecord(*row) for row in rows]

    def counts(self, since: float = 0.0, tenants: tuple[str, ...] = ()) -> dict[str, int]:
        where, args = self._scope(tenants)
        clause = f"{where} AND ts >= ?" if where else " WHERE ts >= ?"
        with self._lock:
            rows = self._db.execute(
                f"SELECT rule, COUNT(*) FROM security_alerts{clause} GROUP BY rule "
                "ORDER BY COUNT(*) DESC",
                (*args, since),
            ).fetchall()
        return {str(rule): int(n) for rule, n in rows}

    @staticmethod
    def _scope(tenants: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        if not tenants:
            return "", ()
        return f" WHERE tenant IN ({', '.join('?' * len(tenants))})", tenants

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SecurityAlertLog:
    def __init__(
        self,
        pseudonymizer: Pseudonymizer | None = None,
        *,
        keep: int = 500,
        store: SecurityAlertStore | None = None,
    ) -> None:
        # A per-process key when none is configured: stable within a run, useless outside it.
        self.pseudonymizer = pseudonymizer or Pseudonymizer(secrets.token_bytes(32))
        self.recent: deque[AlertRecord] = deque(maxlen=keep)
        self.counts: dict[str, int] = {}
        self.store = store

    def handle(self, event: Event) -> None:
        if not isinstance(event, SecurityAlert):
            return
        rule = event.rule if event.rule in KNOWN_RULES else "other"
        source = "src:" + self.pseudonymizer.digest(event.source).hex()[:12] if event.source else ""
        record = AlertRecord(
            event.ts, safe_text(event.node, 40), safe_text(event.tenant, 40), rule, source,
            safe_text(event.detail),
        )  # fmt: skip
        self.recent.append(record)
        self.counts[rule] = self.counts.get(rule, 0) + 1
        if self.store is not None:
            try:
                self.store.append(record)
            except sqlite3.Error:  # a full disk must not stop the alert from being logged
                log.warning("security_alert_store_failed", rule=rule)
        log.warning(
            "security_alert", rule=rule, source_pseudonym=source, detail=record.detail,
            node=record.node, tenant=record.tenant,
        )  # fmt: skip
