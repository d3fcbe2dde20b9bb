"""The non-CDR stores under the retention engine and subject erasure: log files, quality
captures, HEP archives, Redis location bindings and the subscriber database (the stores of
``callward web`` are in :mod:`callward.privacy.web_stores`).

Each is a :class:`callward.records.retention.RetainedStore` (items with an age, stage changes)
and an :class:`Erasable` (``erase`` removes one subject's data, for ``callward privacy shred``).
The same legal holds apply to both: :func:`erase_subject` refuses while a hold covers the
subject (GDPR Art. 17(3)(e): erasure does not apply to data needed for legal claims).

Files: a log file's *redacted* form is the file passed through
:func:`callward.privacy.redact.redact_text` (renamed ``*.redacted``); captures and HEP archives
cannot be redacted in place, so their first stage change is the purge. Deleted files are
overwritten with zeros before they are unlinked (best effort: a copy-on-write or journaling
file system may keep old blocks; the data directory belongs on an encrypted volume).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from callward.errors import PolicyError, StoreError
from callward.privacy.pseudonym import Pseudonymizer
from callward.privacy.redact import redact_text
from callward.privacy.retention_policy import Stage
from callward.privacy.shred import subject_needles
from callward.privacy.subscriber_retention import DirectoryRows, SubscriberRows
from callward.records.retention import LegalHold, RetainedItem

__all__ = [
    "Erasable",
    "ErasureReport",
    "FileTreeStore",
    "RedisLocationStore",
    "erase_subject",
    "wipe_file",
]

_REDACTED = ".redacted"
_MAX_REDACT_BYTES = 512 * 1024 * 1024


class Erasable(Protocol):
    name: str

    def erase(self, pn: str, needles: dict[str, bytes]) -> int:
        """Remove the subject's data (``pn`` = hex pseudonym, ``needles`` = byte forms of the
        identifier); returns how many items changed."""


def wipe_file(path: Path) -> None:
    """Overwrite a file with zeros, then unlink it."""
    try:
        size = path.stat().st_size
        with path.open("r+b") as fh:
            while size > 0:
                n = min(size, 1 << 20)
                fh.write(b"\0" * n)
                size -= n
            fh.flush()
            os.fsync(fh.fileno())
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"{path.name}: cannot delete: {exc.strerror}") from None


@dataclass
class FileTreeStore:
    """Files under ``root`` (logs, captures, HEP archives), aged by modification time."""

    name: str
    data_class: str
    root: Path
    redactable: bool = False  # text files that redact_text can rewrite
    pseudonymizer: Pseudonymizer | None = None
    supports: frozenset[Stage] = field(init=False)

    def __post_init__(self) -> None:
        self.supports = (
            frozenset({Stage.REDACTED, Stage.PURGED}) if self.redactable
            else frozenset({Stage.PURGED})
        )  # fmt: skip

    def files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.rglob("*") if p.is_file() and not p.is_symlink())

    def items(self, older_than: float) -> Iterable[RetainedItem]:
        for p in self.files():
            mtime = p.stat().st_mtime
            if mtime < older_than:
                stage = Stage.REDACTED if p.name.endswith(_REDACTED) else Stage.FULL
                yield RetainedItem(self.name, p, str(p.relative_to(self.root)), "", mtime, stage)

    def apply(self, stage: Stage, items: Sequence[RetainedItem]) -> int:
        n = 0
        for it in items:
            path: Path = it.key
            if stage is Stage.REDACTED and self.redactable:
                self._redact(path)
            else:
                wipe_file(path)
            n += 1
        return n

    def _redact(self, path: Path) -> None:
        if path.stat().st_size > _MAX_REDACT_BYTES:
            wipe_file(path)  # too large to rewrite safely: fail closed
            return
        out = path.with_name(path.name + _REDACTED)
        mtime = path.stat().st_mtime
        with path.open(encoding="utf-8", errors="replace") as src, out.open("w") as dst:
            for line in src:
                dst.write(redact_text(line.rstrip("\n"), self.pseudonymizer) + "\n")
        os.utime(out, (mtime, mtime))  # the redacted copy keeps the data's age
        wipe_file(path)

    def erase(self, pn: str, needles: dict[str, bytes]) -> int:
        """Redactable files: lines naming the subject become ``[erased]``; other files that
        contain the subject in any form are deleted."""
        n = 0
        for p in self.files():
            data = p.read_bytes()
            if not any(nd in data for nd in needles.values()):
                continue
            if self.redactable:
                lines = data.split(b"\n")
                kept = [b"[erased]" if any(nd in ln for nd in needles.values()) else ln
                        for ln in lines]  # fmt: skip
                tmp = p.with_name(p.name + ".erasing")
                tmp.write_bytes(b"\n".join(kept))
                mtime = p.stat().st_mtime
                wipe_file(p)
                os.replace(tmp, p)
                os.utime(p, (mtime, mtime))
            else:
                wipe_file(p)
            n += 1
        return n


@dataclass
class RedisLocationStore:
    """Registrar bindings in Redis (``<prefix>:loc:<aor>`` hashes, JSON values as written by
    ``edge.location.RedisLocation``). A binding's age counts from its expiry: the moment it
    stops being needed to route calls."""

    client: Any  # redis.Redis
    pseudonymizer: Pseudonymizer
    prefix: str = "callward"
    name: str = "location"
    data_class: str = "location"
    supports: frozenset[Stage] = frozenset({Stage.PURGED})

    def _bindings(self) -> Iterable[tuple[bytes, bytes, dict[str, Any]]]:
        for key in self.client.scan_iter(f"{self.prefix}:loc:*"):
            for fld, raw in self.client.hgetall(key).items():
                try:
                    yield key, fld, json.loads(raw)
                except ValueError:
                    yield key, fld, {}

    def _pn(self, aor: str) -> str:
        try:
            return self.pseudonymizer.pseudonym(aor)
        except PolicyError:
            return ""

    def items(self, older_than: float) -> Iterable[RetainedItem]:
        for key, fld, b in self._bindings():
            ts = float(b.get("expires_at") or 0.0)
            if ts < older_than:
                pn = self._pn(str(b.get("aor") or ""))
                yield RetainedItem(self.name, (key, fld), f"binding:{pn[:16]}", "", ts,
                                   Stage.FULL, (pn,) if pn else ())  # fmt: skip

    def apply(self, stage: Stage, items: Sequence[RetainedItem]) -> int:
        return sum(int(self.client.hdel(k, f)) for k, f in (i.key for i in items))

    def plaintext(self, needles: dict[str, bytes]) -> list[str]:
        """Where (``binding:<pseudonym>``) any form of the subject is stored in clear."""
        out = []
        for key, fld, b in self._bindings():
            raw = key + b"\0" + fld + b"\0" + json.dumps(b).encode()
            if any(nd in raw for nd in needles.values()):
                out.append(f"binding:{self._pn(str(b.get('aor') or ''))[:16]}")
        return out

    def erase(self, pn: str, needles: dict[str, bytes]) -> int:
        n = 0
        for key, fld, b in list(self._bindings()):
            raw = key + b"\0" + fld + b"\0" + json.dumps(b).encode()
            if self._pn(str(b.get("aor") or "")) == pn or any(nd in raw for nd in needles.values()):
                n += int(self.client.hdel(key, fld))
        return n


@dataclass(frozen=True, slots=True)
class ErasureReport:
    pseudonym: str
    per_store: dict[str, int]


def erase_subject(
    identifier: str,
    pseudonymizer: Pseudonymizer,
    stores: Iterable[Erasable],
    holds: Iterable[LegalHold],
    now: float,
) -> ErasureReport:
    """Erase one subject from every store; PolicyError while a legal hold covers them."""
    pn = pseudonymizer.pseudonym(identifier)
    blocking = [h.hold_id for h in holds if h.active(now) and h.covers_subject(pn)]
    if blocking:
        raise PolicyError(
            f"subject {pn[:12]}…: erasure suspended by legal hold {', '.join(blocking)}"
            " (GDPR Art. 17(3)(e)); release the hold first"
        )
    needles = subject_needles(identifier)
    return ErasureReport(pn, {s.name: s.erase(pn, needles) for s in stores})


@dataclass
class CdrKeyErasure:
    """CDRs are erased by crypto-shredding the subject's key (every hot, cold and backup copy
    becomes unreadable at once, see :mod:`callward.privacy.shred`)."""

    keys: Any  # KeyStore
    reason: str
    name: str = "cdr"

    def erase(self, pn: str, needles: dict[str, bytes]) -> int:
        return int(self.keys.shred(pn, self.reason))


@dataclass
class RetentionSetup:
    """Every store callward writes under ``data_dir``, for the engine, erasure and verify."""

    stores: list[Any]  # RetainedStore
    erasables: list[Any]  # Erasable (without the CDR key shred, which needs a reason)
    scan_paths: list[Path]  # files/dirs ``privacy verify`` searches for plaintext
    location: RedisLocationStore | None = None
    linked: list[Any] = field(default_factory=list)  # rows tied to the subject via the directory
    subscribers: Any = None  # SubscriberRows (PostgreSQL rows are searched by query)
    postgres: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # CDR schemas

    def close(self) -> None:
        for s in self.stores:
            close = getattr(s, "close", None)
            if close is not None and s.name in ("cdr-aggregates", "phone-telemetry"):
                close()


def _cdr_tiers(records: Any) -> Any:
    """The CDR tiers retention governs: hot + cold, or the hot store alone when the cold tier's
    extra (``callward[cold]``: duckdb, pyarrow) is not installed *and* no cold file exists, so
    ``pip install callward`` runs the demo and the edge. Cold files without the extra stay an
    error (the missing-extra line): their deadlines must not be skipped silently."""
    try:
        return records.tiered
    except ModuleNotFoundError as exc:
        cold = Path(records.data_dir) / "cold"
        if (exc.name or "").split(".")[0] not in ("duckdb", "pyarrow") or (
            cold.is_dir() and any(cold.rglob("*.parquet"))
        ):
            raise
        return records.store


def open_retention(config: Any, records: Any, location_client: Any = None) -> RetentionSetup:
    """Build the retained stores from a :class:`~callward.config.CallwardConfig` and opened
    :class:`~callward.records.service.Records`. ``location_client`` overrides the Redis client
    (tests); with ``edge.location = memory`` bindings live only in the edge's RAM and expire."""
    from callward.records.retention import AggregateStore, CdrRetention

    d = Path(records.data_dir)
    rc = config.retention
    pseudo = records.codec.cipher.pseudonymizer
    logs = FileTreeStore("logs", "log", Path(rc.logs_dir or d / "logs"), True, pseudo)
    caps = FileTreeStore(
        "quality-captures", "quality_capture", Path(rc.captures_dir or d / "captures")
    )
    hep = FileTreeStore("hep-archive", "hep_archive", Path(rc.hep_dir or d / "hep"))
    recs = FileTreeStore("recordings", "recording", d / "recordings")
    aggregates = AggregateStore(d / "aggregates.db")
    stores: list[Any] = [
        CdrRetention(_cdr_tiers(records), aggregates), aggregates, logs, caps, hep, recs,
    ]  # fmt: skip
    erasables: list[Any] = [logs, caps, hep]
    if (d / "telemetry.sqlite").exists():  # phone telemetry (callward web): the CDR rules
        from callward.records.telemetry import TelemetryStore

        stores.append(TelemetryStore(d / "telemetry.sqlite"))
    if (d / "consent.db").exists():  # withdrawn/superseded consent evidence, the consent rules
        from callward.privacy.consent import ConsentRetention

        stores.append(ConsentRetention(d / "consent.db"))
    scan: list[Path] = [d, logs.root, caps.root, hep.root]
    sub = SubscriberRows(str(config.edge.subscribers), pseudo)
    stores.append(sub)
    erasables.append(sub)
    if sub.path is not None:
        scan.append(sub.path)
    pg: list[tuple[str, tuple[str, ...]]] = []
    if config.storage.postgres_url:  # the hot CDR store and its event journal
        pg.append((config.storage.postgres_url, ("callward",)))
    directory = Path(config.identity.directory)
    directory = directory if directory.is_absolute() else d / directory
    from callward.privacy.web_stores import PhoneStateRows, WebSessionRows

    phone = PhoneStateRows(d / "phone-state.sqlite", directory, pseudo)  # before the directory
    sessions = WebSessionRows(d / "web-sessions.sqlite")
    rows = DirectoryRows(directory, pseudo)
    stores += [phone, sessions]
    erasables += [phone, sessions, rows]
    sub.linked += [phone, rows]  # a subscriber purged by retention leaves them too
    scan.append(directory)
    location = None
    loc_spec = str(config.edge.location)
    if location_client is not None or loc_spec.startswith(("redis://", "rediss://", "unix://")):
        client = location_client
        if client is None:
            import redis

            client = redis.Redis.from_url(loc_spec, socket_timeout=2)
        location = RedisLocationStore(client, pseudo, config.edge.location_prefix)
        stores.append(location)
        erasables.append(location)
    return RetentionSetup(stores, erasables, scan, location, linked=[phone], subscribers=sub,
                          postgres=pg)  # fmt: skip
