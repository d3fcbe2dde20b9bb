"""Crypto-shredding: per-subject data keys wrapped by a master key.

Why: a CDR is copied into many places (the hot SQLite/PostgreSQL store, its WAL, cold Parquet
files, backups). Deleting every copy of a subject's number from all of them, including backups
we cannot rewrite, is impractical; encrypting each subject-identifying field under a key that
belongs to that subject, and deleting that key, makes every copy unreadable at once.

* Data encryption keys (DEKs): one random AES-256 key per subject pseudonym
  (:mod:`callward.privacy.pseudonym`), used with AES-GCM (NIST SP 800-38D), random 96-bit nonces.
* Key encryption key (KEK): the master key; a DEK is stored only wrapped by it
  (AES-GCM with the pseudonym as associated data so a wrapped key cannot be moved to another
  subject).
* The key store is its own SQLite file with ``secure_delete`` on and a rollback journal (no WAL)
  so a deleted key is overwritten in place rather than left in a log.
* A shred ledger keeps (pseudonym, time) of erased subjects so a key backup restored later can
  never resurrect an erased key.
* Key backups use envelope encryption: a fresh backup DEK encrypts the key set, and that DEK is
  wrapped by a separate backup KEK kept offline.

A sealed field is self-describing: ``0x01 | pseudonym (16 bytes) | nonce (12) | ciphertext+tag``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from callward.errors import PolicyError, StoreError
from callward.privacy.kms import KeyRing, LocalKek
from callward.privacy.pseudonym import Pseudonymizer, normalize_subject

__all__ = [
    "FieldCipher",
    "KeyStore",
    "PlaintextFinding",
    "SealedFieldError",
    "load_or_create_key",
    "subject_needles",
    "verify_no_plaintext",
]

_FORMAT = 1
_PN_BYTES = 16
_NONCE = 12
_HEADER = 1 + _PN_BYTES + _NONCE


class SealedFieldError(PolicyError):
    """A sealed field is malformed."""


def load_or_create_key(path: Path) -> bytes:
    """Read a 32-byte key file, creating it (mode 0600) with random bytes when absent."""
    try:
        if path.exists():
            data = path.read_bytes()
            if len(data) != 32:
                raise PolicyError(f"{path}: expected a 32-byte key file")
            return data
        path.parent.mkdir(parents=True, exist_ok=True)
        key = AESGCM.generate_key(bit_length=256)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key
    except OSError as exc:
        raise StoreError(f"{path}: cannot read or create key: {exc.strerror}") from None


@dataclass
class KeyStore:
    """Wrapped subject DEKs in a SQLite file (see module docstring for why not WAL)."""

    path: Path | str
    master_key: bytes | KeyRing  # raw bytes = one local KEK with id "master"
    _db: sqlite3.Connection = field(init=False, repr=False)
    ring: KeyRing = field(init=False, repr=False)
    cache_size: int = 1_000_000
    _cache: dict[str, AESGCM] = field(init=False, default_factory=dict, repr=False)
    _pending: list[tuple[str, bytes, float, str]] = field(
        init=False, default_factory=list, repr=False
    )
    _lock: threading.RLock = field(init=False, default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.master_key, KeyRing):
            self.ring = self.master_key
        else:
            self.ring = KeyRing.single(LocalKek(bytes(self.master_key)))
        try:
            if str(self.path) != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            if str(self.path) != ":memory:":
                os.chmod(self.path, 0o600)  # wrapped keys: defence in depth
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS subject_keys (pn TEXT PRIMARY KEY, wrapped BLOB NOT"
                " NULL, created REAL NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS shred_ledger (pn TEXT PRIMARY KEY, ts REAL NOT NULL,"
                " reason TEXT NOT NULL)"
            )
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(subject_keys)")}
            if "kek" not in cols:  # stores from before key rotation: all under "master"
                self._db.execute(
                    "ALTER TABLE subject_keys ADD COLUMN kek TEXT NOT NULL DEFAULT 'master'"
                )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: key store unavailable: {exc}") from None

    def close(self) -> None:
        self.flush()
        self._db.close()

    def _wrap(self, pn: str, dek: bytes) -> tuple[bytes, str]:
        kek = self.ring.current
        return kek.wrap(dek, pn.encode()), kek.kek_id

    def _unwrap(self, pn: str, wrapped: bytes, kek_id: str = "master") -> bytes:
        try:
            return self.ring.get(kek_id).unwrap(bytes(wrapped), pn.encode())
        except PolicyError:
            raise PolicyError(f"key {pn[:8]}…: cannot unwrap (wrong master key?)") from None

    def _new(self, pn: str) -> AESGCM:
        dek = AESGCM.generate_key(bit_length=256)
        wrapped, kid = self._wrap(pn, dek)
        self._pending.append((pn, wrapped, time.time(), kid))
        return AESGCM(dek)

    def aead(self, pn: str, create: bool) -> AESGCM | None:
        """The AEAD for subject ``pn``; created on first use when ``create``.

        New keys are buffered and written by :meth:`flush` in one transaction: stores call it
        before committing data sealed under those keys, so a committed ciphertext always has its
        key on disk and bulk ingest does not pay one key-store commit per new subject."""
        hit = self._cache.get(pn)
        if hit is not None:
            return hit
        with self._lock:
            return self._aead_locked(pn, create)

    def _aead_locked(self, pn: str, create: bool) -> AESGCM | None:
        hit = self._cache.get(pn)
        if hit is not None:
            return hit
        row = self._db.execute("SELECT wrapped, kek FROM subject_keys WHERE pn=?", (pn,)).fetchone()
        if row is None:
            if not create:
                return None
            aead = self._new(pn)
        else:
            aead = AESGCM(self._unwrap(pn, row[0], row[1]))
        if len(self._cache) > self.cache_size:
            self.flush()
            self._cache.clear()
        self._cache[pn] = aead
        return aead

    def prefetch(self, pns: Iterable[str], create: bool = True) -> None:
        """Load (and, with ``create``, make) the keys of many subjects with one query per 500:
        bulk ingest then pays no per-subject key-store round trip."""
        with self._lock:
            missing = [p for p in set(pns) if p and p not in self._cache]
            for i in range(0, len(missing), 500):
                chunk = missing[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT pn, wrapped, kek FROM subject_keys WHERE pn IN ({marks})", chunk
                ).fetchall()
                found = {pn: (w, k) for pn, w, k in rows}
                for pn in chunk:
                    if pn in found:
                        self._cache[pn] = AESGCM(self._unwrap(pn, *found[pn]))
                    elif create:
                        self._cache[pn] = self._new(pn)

    def flush(self) -> None:
        """Persist keys created since the last flush (one transaction)."""
        if not self._pending:
            return
        with self._lock:
            pending, self._pending = self._pending, []
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO subject_keys (pn, wrapped, created, kek) VALUES (?,?,?,?)",
                pending,
            )
            self._db.execute("COMMIT")

    def has_key(self, pn: str) -> bool:
        self.flush()
        row = self._db.execute("SELECT 1 FROM subject_keys WHERE pn=?", (pn,)).fetchone()
        return row is not None

    def shred(self, pn: str, reason: str, now: float | None = None) -> bool:
        """Delete the subject's DEK (returns whether one existed) and record it in the ledger."""
        self.flush()
        with self._lock:
            return self._shred_locked(pn, reason, now)

    def _shred_locked(self, pn: str, reason: str, now: float | None) -> bool:
        self._cache.pop(pn, None)
        ts = time.time() if now is None else now
        cur = self._db.execute("DELETE FROM subject_keys WHERE pn=?", (pn,))
        self._db.execute("INSERT OR REPLACE INTO shred_ledger VALUES (?,?,?)", (pn, ts, reason))
        # VACUUM rebuilds the file so no free page keeps the wrapped key (belt and braces with
        # secure_delete, which already zeroes the deleted cell).
        self._db.execute("VACUUM")
        return cur.rowcount > 0

    def shredded(self) -> dict[str, float]:
        return dict(self._db.execute("SELECT pn, ts FROM shred_ledger").fetchall())

    def export_deks(self) -> Iterator[tuple[str, bytes, float]]:
        """(pseudonym, plaintext DEK, created) of every subject key: for envelope backups
        only (:mod:`callward.privacy.key_backup`), which re-encrypt them at once."""
        self.flush()
        with self._lock:
            rows = self._db.execute(
                "SELECT pn, wrapped, created, kek FROM subject_keys ORDER BY pn"
            ).fetchall()
        for pn, wrapped, created, kek in rows:
            yield pn, self._unwrap(pn, wrapped, kek), created

    def import_deks(self, rows: Iterable[tuple[str, bytes, float]]) -> int:
        """Insert plaintext DEKs wrapped under the current KEK (not overwriting), skipping any
        subject erased after the key was created."""
        ledger = self.shredded()
        out = []
        for pn, dek, created in rows:
            if pn in ledger and ledger[pn] >= created:
                continue
            wrapped, kid = self._wrap(pn, dek)
            out.append((pn, wrapped, created, kid))
        with self._lock:
            self._db.execute("BEGIN")
            n = 0
            for row in out:
                n += self._db.execute(
                    "INSERT OR IGNORE INTO subject_keys (pn, wrapped, created, kek)"
                    " VALUES (?,?,?,?)",
                    row,
                ).rowcount
            self._db.execute("COMMIT")
        return n

    def count(self, kek_id: str | None = None) -> int:
        self.flush()
        if kek_id is None:
            return int(self._db.execute("SELECT COUNT(*) FROM subject_keys").fetchone()[0])
        q = "SELECT COUNT(*) FROM subject_keys WHERE kek=?"
        return int(self._db.execute(q, (kek_id,)).fetchone()[0])

    def rewrap(self, batch: int = 500) -> int:
        """Re-wrap every subject key not under the current KEK, ``batch`` keys per short
        transaction: readers and writers keep working between batches (no downtime), and the
        cache holds unwrapped keys so nothing in flight notices. Returns keys re-wrapped."""
        self.flush()
        cur = self.ring.current.kek_id
        done = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT pn, wrapped, kek FROM subject_keys WHERE kek<>? LIMIT ?", (cur, batch)
                ).fetchall()
                if not rows:
                    return done
                self._db.execute("BEGIN IMMEDIATE")
                for pn, wrapped, kek in rows:
                    new, kid = self._wrap(pn, self._unwrap(pn, wrapped, kek))
                    self._db.execute(
                        "UPDATE subject_keys SET wrapped=?, kek=? WHERE pn=? AND kek=?",
                        (new, kid, pn, kek),
                    )
                self._db.execute("COMMIT")
                done += len(rows)

    def merge_ledger(self, ledger: dict[str, float]) -> None:
        for pn, ts in ledger.items():
            self._cache.pop(pn, None)
            self._db.execute(
                "INSERT OR IGNORE INTO shred_ledger VALUES (?,?,?)", (pn, ts, "restored ledger")
            )
            self._db.execute("DELETE FROM subject_keys WHERE pn=? AND created<=?", (pn, ts))


@dataclass
class FieldCipher:
    """Seals subject-identifying fields under the subject's DEK; opens them while it exists."""

    keys: KeyStore
    pseudonymizer: Pseudonymizer
    _pool: bytes = field(default=b"", init=False, repr=False)
    _pos: int = field(default=0, init=False, repr=False)

    def seal(self, identifier: str, pn_raw: bytes | None = None) -> bytes | None:
        """Encrypt ``identifier`` (None for an empty one) under its own subject's key;
        ``pn_raw`` is its 16-byte pseudonym when the caller has already computed it."""
        if not identifier:
            return None
        if pn_raw is None:
            pn_raw = self.pseudonymizer.digest(identifier)
        aead = self.keys.aead(pn_raw.hex(), create=True)
        assert aead is not None
        nonce = self._nonce()
        return b"\x01" + pn_raw + nonce + aead.encrypt(nonce, identifier.encode(), pn_raw)

    def _nonce(self) -> bytes:
        # Random 96-bit nonces (SP 800-38D §8.2.2), drawn from the OS in blocks: one syscall per
        # 4096 seals instead of one per seal.
        if self._pos >= len(self._pool):
            self._pool = os.urandom(_NONCE * 4096)
            self._pos = 0
        pos = self._pos
        self._pos = pos + _NONCE
        return self._pool[pos : pos + _NONCE]

    def open(self, blob: bytes | None) -> str | None:
        """Decrypt a sealed field; None when the subject's key was shredded (or blob is None)."""
        if blob is None:
            return None
        blob = bytes(blob)
        if len(blob) < _HEADER + 16 or blob[0] != _FORMAT:
            raise SealedFieldError("sealed field: unknown format or truncated")
        pn_raw = blob[1 : 1 + _PN_BYTES]
        aead = self.keys.aead(pn_raw.hex(), create=False)
        if aead is None:
            return None
        try:
            return aead.decrypt(blob[1 + _PN_BYTES : _HEADER], blob[_HEADER:], pn_raw).decode()
        except InvalidTag:
            return None  # a key re-created after shredding cannot open the old ciphertext

    def shred_subject(self, identifier: str, reason: str, now: float | None = None) -> str:
        """Crypto-shred the subject behind ``identifier``; returns its pseudonym."""
        pn = self.pseudonymizer.pseudonym(identifier)
        self.keys.shred(pn, reason, now)
        return pn


# --- plaintext verification ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaintextFinding:
    path: str
    where: str  # "bytes@<offset>" or "parquet:<column>"
    needle_kind: str  # which form matched (never the plaintext itself)


def subject_needles(identifier: str) -> dict[str, bytes]:
    """Byte forms a subject's identifier may take in a file (utf-8 and utf-16-le)."""
    forms = {"given": identifier.strip(), "normalized": normalize_subject(identifier)}
    norm = forms["normalized"]
    if norm.startswith("+"):
        forms["digits"] = norm[1:]
    out: dict[str, bytes] = {}
    for kind, text in forms.items():
        if len(text) >= 6:
            out[f"{kind}/utf-8"] = text.encode("utf-8")
            out[f"{kind}/utf-16"] = text.encode("utf-16-le")
    return out


def _expand(paths: Iterable[Path]) -> list[Path]:
    files: dict[Path, None] = {}  # ordered set: a file named twice is scanned once
    for p in paths:
        if p.is_dir():
            files.update((q, None) for q in sorted(p.rglob("*")) if q.is_file())
        elif p.exists():
            files[p] = None
        for suffix in ("-wal", "-journal", "-shm"):
            side = Path(str(p) + suffix)
            if side.exists():
                files[side] = None
    return list(dict.fromkeys(f.resolve() for f in files))


def verify_no_plaintext(paths: Iterable[Path], identifier: str) -> list[PlaintextFinding]:
    """Scan files (SQLite databases with their -wal/-journal, Parquet files, any directory) for
    any plaintext form of ``identifier``. Parquet pages may be compressed, so Parquet files are
    also decoded and every string/binary value searched. Empty list = clean."""
    needles = subject_needles(identifier)
    findings: list[PlaintextFinding] = []
    for path in _expand(paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"{path}: cannot read for verification: {exc.strerror}") from None
        for kind, needle in needles.items():
            at = data.find(needle)
            if at >= 0:
                findings.append(PlaintextFinding(str(path), f"bytes@{at}", kind))
        if path.suffix == ".parquet":
            findings.extend(_scan_parquet(path, needles))
    return findings


def _scan_parquet(path: Path, needles: dict[str, bytes]) -> list[PlaintextFinding]:
    import pyarrow.parquet as pq

    out: list[PlaintextFinding] = []
    table = pq.read_table(path)
    for name in table.column_names:
        col = table.column(name)
        if str(col.type) not in ("string", "large_string", "binary", "large_binary"):
            continue
        for value in col.to_pylist():
            if value is None:
                continue
            raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            for kind, needle in needles.items():
                if needle in raw:
                    out.append(PlaintextFinding(str(path), f"parquet:{name}", kind))
                    break
    return out
