"""What the web serves to phones (not to operators): contact discovery with delta sync,
preferences with ETags, and the telemetry ingest. Routes are in :mod:`callward.web.routes.phone`.

Phones authenticate with the OAuth access token they already hold for SIP (RFC 6750 bearer,
verified like the edge does: :mod:`callward.edge.bearer`), and the token's subject is mapped
through the identity directory on every request, so a revoked subject is refused at once.

Nothing here keeps what a phone asked: discovery answers from an index of *reachable
subscribers*, and the only per-phone state is a daily counter (rate limit) and the phone's own
preferences. Telemetry lands in ``telemetry.sqlite`` next to the CDRs
(:class:`callward.records.telemetry.TelemetryStore`), keyed by the subject's pseudonym, and the
retention engine ages it with the CDR rules.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import threading
from typing import Any

import zstandard

from callward.edge.directory import Identity, SqliteDirectory
from callward.privacy.discovery import discovery_hash
from callward.ua.psi import oprf_key, seal_entry
from callward.web.phone_state import PhoneStateDb

__all__ = [
    "DailyQuota",
    "DiscoveryIndex",
    "PrefsStore",
    "PsiTable",
    "decode_telemetry",
]

MAX_TELEMETRY_COMPRESSED = 64 * 1024
MAX_TELEMETRY_DECODED = 1024 * 1024
MAX_TELEMETRY_RECORDS = 2000
DAY = 86400.0


class DailyQuota:
    """Units used per (key, UTC day), in the phone-state database shared by the web workers
    (so N workers do not grant N times the limit); days other than today are dropped."""

    def __init__(self, limit: int, db: PhoneStateDb | None = None, *, name: str = "q") -> None:
        self.limit = limit
        self.db = db or PhoneStateDb()
        self.name = name

    def take(self, key: str, units: int, now: float) -> bool:
        day = int(now // DAY)

        def go(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM quota WHERE name = ? AND day != ?", (self.name, day))
            row = conn.execute("SELECT used FROM quota WHERE name = ? AND day = ? AND key = ?",
                               (self.name, day, key)).fetchone()  # fmt: skip
            used = int(row[0]) if row else 0
            if used + units > self.limit:
                return False
            conn.execute("INSERT OR REPLACE INTO quota VALUES (?, ?, ?, ?)",
                         (self.name, day, key, used + units))  # fmt: skip
            return True

        return self.db.transaction(go)

    def used(self, now: float) -> dict[str, int]:
        """Today's counters (tests, operators)."""
        rows = self.db.query("SELECT key, used FROM quota WHERE name = ? AND day = ?",
                             (self.name, int(now // DAY)))  # fmt: skip
        return {str(k): int(u) for k, u in rows}

    def retry_after(self, now: float) -> int:
        return int(DAY - now % DAY) + 1


class DiscoveryIndex:
    """``prefix -> AOR`` over the directory's reachable numbers, rebuilt when the directory
    version changes (a version/ETag-coherent server-side cache)."""

    def __init__(self, directory: SqliteDirectory, salt: bytes) -> None:
        self.directory = directory
        self.salt = salt
        self.salt_id = hashlib.sha256(b"salt-id" + salt).hexdigest()[:12]
        self._built_at = -1
        self._index: dict[tuple[str, str], str] = {}  # (tenant, prefix) -> aor
        self.rebuilds = 0

    def _fresh(self) -> int:
        version = self.directory.version()
        if version != self._built_at:
            index: dict[tuple[str, str], str] = {}
            for tenant in self.directory.tenants():
                for msisdn, aor in self.directory.reachable_msisdns(tenant):
                    index[(tenant, discovery_hash(self.salt, msisdn))] = aor
            self._index, self._built_at = index, version
            self.rebuilds += 1
        return version

    def sync(self, who: Identity, since: int, added: list[str]) -> dict[str, Any]:
        """Matches for ``added`` prefixes, plus the AORs changed since version ``since``."""
        version = self._fresh()
        matches = [
            {"h": h, "aor": aor}
            for h in added
            if (aor := self._index.get((who.tenant, h))) is not None and aor != who.aor
        ]
        gone: list[str] = []
        if 0 < since < version:
            for change in self.directory.changes_since(since, 10_000):
                ident = self.directory.by_subject(change.subject)
                if ident is not None and ident.tenant == who.tenant:
                    gone.append(ident.aor)
        return {"version": version, "salt_id": self.salt_id, "matches": matches,
                "gone": sorted(set(gone))}  # fmt: skip


class PsiTable:
    """The OPRF contact-discovery table (:mod:`callward.ua.psi`) per tenant: an id and the
    sealed AOR for every reachable subscriber number, rebuilt when the directory version
    changes; the OPRF key comes from the discovery salt (a new salt is a new key)."""

    def __init__(self, directory: SqliteDirectory, salt: bytes) -> None:
        self.directory = directory
        self.key = oprf_key(salt)
        self.key_id = hashlib.sha256(b"psi-key-id" + salt).hexdigest()[:12]
        self._lock = threading.Lock()
        self._tables: dict[str, tuple[int, bytes]] = {}  # tenant -> (version, JSON body)
        self.builds = 0

    def document(self, tenant: str) -> tuple[str, bytes]:
        """(ETag, JSON body) of the tenant's table."""
        version = self.directory.version()
        with self._lock:
            held = self._tables.get(tenant)
            if held is None or held[0] != version:
                rows = sorted(
                    seal_entry(self.key, msisdn, aor)
                    for msisdn, aor in self.directory.reachable_msisdns(tenant)
                )
                body = json.dumps({"key_id": self.key_id, "version": version, "entries": [
                    [base64.b64encode(i).decode(), base64.b64encode(c).decode()] for i, c in rows
                ]}, separators=(",", ":")).encode()  # fmt: skip
                held = self._tables[tenant] = (version, body)
                self.builds += 1
        return f'"{self.key_id}.{held[0]}"', held[1]


class PrefsStore:
    """A phone's preferences, one JSON document per subject with a version (the ETag), in the
    shared phone-state database (:mod:`callward.web.phone_state`). Conditional writes only:
    ``If-Match`` must name the current version (RFC 9110 §13.1.1)."""

    def __init__(self, db: PhoneStateDb | None = None) -> None:
        self.db = db or PhoneStateDb()

    def get(self, subject: str) -> tuple[int, dict[str, Any]]:
        rows = self.db.query("SELECT version, doc FROM prefs WHERE subject = ?", (subject,))
        if not rows:
            return 0, {}
        return int(rows[0][0]), json.loads(rows[0][1])

    def put(self, subject: str, if_match: int, doc: dict[str, Any]) -> tuple[bool, int]:
        def cas(conn: sqlite3.Connection) -> tuple[bool, int]:
            row = conn.execute("SELECT version FROM prefs WHERE subject = ?",
                               (subject,)).fetchone()  # fmt: skip
            version = int(row[0]) if row else 0
            if if_match != version:
                return False, version
            conn.execute("INSERT OR REPLACE INTO prefs VALUES (?, ?, ?)",
                         (subject, version + 1, json.dumps(doc)))  # fmt: skip
            return True, version + 1

        return self.db.transaction(cas)


def decode_telemetry(body: bytes, encoding: str | None) -> list[dict[str, Any]]:
    """A telemetry batch: JSON array of flat objects, zstd-compressed (``Content-Encoding:
    zstd``, RFC 8878). ValueError with one line on anything else."""
    if len(body) > MAX_TELEMETRY_COMPRESSED:
        raise ValueError(f"batch larger than {MAX_TELEMETRY_COMPRESSED} bytes")
    if (encoding or "").strip().lower() != "zstd":
        raise ValueError("telemetry must be sent with Content-Encoding: zstd")
    try:
        raw = zstandard.ZstdDecompressor().decompress(body, max_output_size=MAX_TELEMETRY_DECODED)
    except zstandard.ZstdError:
        raise ValueError("body is not a zstd frame (or decodes past 1 MiB)") from None
    if len(raw) > MAX_TELEMETRY_DECODED:
        raise ValueError("decoded batch larger than 1 MiB")
    try:
        records = json.loads(raw)
    except ValueError:
        raise ValueError("decoded batch is not JSON") from None
    if not isinstance(records, list) or len(records) > MAX_TELEMETRY_RECORDS:
        raise ValueError(f"expected a JSON array of at most {MAX_TELEMETRY_RECORDS} records")
    out: list[dict[str, Any]] = []
    for r in records:
        if not isinstance(r, dict) or not isinstance(r.get("kind"), str):
            raise ValueError("every record must be an object with a 'kind'")
        if not isinstance(r.get("ts"), int | float) or any(
            isinstance(v, dict | list) for v in r.values()
        ):
            raise ValueError("every record needs a numeric 'ts' and flat values")
        out.append(r)
    return out
