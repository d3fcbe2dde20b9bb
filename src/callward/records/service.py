"""The records area wired together, for other areas (edge demo, web, CLI) to call.

Embedded default, everything under ``data_dir`` (``var/`` by default)::

    var/keys/master.key      32-byte KEK (0600)      var/keys.db    wrapped subject keys
    var/keys/pseudonym.key   32-byte HMAC key (0600) var/cdr.db     hot CDRs (SQLite, WAL)
    var/cold/day=.../        cold Parquet            var/audit.db   hash-chained access trail
    var/holds.db             legal holds

Wiring an :class:`~callward.events.InProcessBus` to write CDRs::

    records = open_records(Path("var"))
    sink = CdrSink(records.store)          # assembles per call, upserts into SQLite
    bus.subscribe(sink.handle)
    ...
    sink.flush()                            # at shutdown: incomplete calls written, flagged

In production the master key comes from a KMS/HSM instead of a file; the file exists so that a
fresh clone runs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from callward.config import PrivacyConfig, RecordsConfig
from callward.events import Event
from callward.privacy.kms import load_pseudonym_key, open_kms
from callward.privacy.pseudonym import Pseudonymizer
from callward.privacy.retention_policy import RetentionPolicy, load_policy
from callward.privacy.shred import FieldCipher, KeyStore
from callward.records.assembly import Reconciler
from callward.records.audit import AuditLog
from callward.records.retention import HoldRegistry
from callward.records.rows import RecordCodec
from callward.records.schema import Cdr
from callward.records.store_sqlite import SqliteCdrStore

if TYPE_CHECKING:  # pyarrow/duckdb load only when cold storage is used (fast demo start-up)
    from callward.records.cold import ColdCdrStore, TieredStore

__all__ = ["DEFAULT_RULE_SETS", "CdrSink", "Records", "open_records"]

DEFAULT_RULE_SETS = ("builtin:GDPR", "builtin:CCPA", "builtin:LOCAL-TEL")


@dataclass
class Records:
    data_dir: Path
    keys: KeyStore
    codec: RecordCodec
    store: Any  # SqliteCdrStore (embedded) or PostgresCdrStore
    audit: AuditLog
    holds: HoldRegistry
    config: RecordsConfig

    @property
    def cold(self) -> ColdCdrStore:
        from callward.records.cold import ColdCdrStore

        return ColdCdrStore(self.data_dir / "cold", self.codec)

    @property
    def tiered(self) -> TieredStore:
        from callward.records.cold import TieredStore

        return TieredStore(self.store, self.cold)

    def policy(self, rule_sets: Iterable[str] = DEFAULT_RULE_SETS) -> RetentionPolicy:
        """The retention policy for this deployment's tenants; ConfigError (fail closed) on an
        unknown jurisdiction or a data class without a rule."""
        return load_policy(rule_sets, self.config.jurisdictions, self.config.default_jurisdictions)

    def close(self) -> None:
        self.store.close()
        self.holds.close()
        self.audit.close()
        self.keys.close()


def open_records(
    data_dir: Path | str = "var",
    config: RecordsConfig | None = None,
    postgres_url: str | None = None,
    privacy: PrivacyConfig | None = None,
) -> Records:
    """Open the records area; with ``postgres_url`` the hot store is PostgreSQL (schema
    ``callward``) instead of ``data_dir/cdr.db``. Keys, audit and holds stay in ``data_dir``.
    ``privacy.kms`` picks where the master and pseudonym keys come from (key files by default,
    or a PKCS#11 token: :mod:`callward.privacy.kms`)."""
    d = Path(data_dir)
    cfg = config or RecordsConfig()
    pcfg = privacy or PrivacyConfig()
    ring = open_kms(pcfg, d / "keys")
    keys = KeyStore(d / "keys.db", ring)
    pseudo = Pseudonymizer(load_pseudonym_key(ring, d / "keys", pcfg.kms == "file"))
    codec = RecordCodec(FieldCipher(keys, pseudo))
    audit = AuditLog(d / "audit.db")
    return Records(
        data_dir=d,
        keys=keys,
        codec=codec,
        store=_hot_store(d, codec, cfg, postgres_url),
        audit=audit,
        holds=HoldRegistry(d / "holds.db", audit),
        config=cfg,
    )


def _hot_store(d: Path, codec: RecordCodec, cfg: RecordsConfig, url: str | None) -> Any:
    if url:
        from callward.records.store_postgres import PostgresCdrStore

        return PostgresCdrStore(url, codec)
    return SqliteCdrStore(d / "cdr.db", codec, batch_size=cfg.batch_size)


@dataclass
class CdrSink:
    """An InProcessBus subscriber: assembles events per call and upserts CDRs into a store.

    Synchronous on purpose (SQLite writes of a handful of rows take well under a millisecond
    with WAL), so a demo sees its CDR the moment the call ends. ``written`` keeps the last CDR
    written per call (the newest ``WRITTEN_MAX`` calls: a long-running edge must not hold every
    CDR it ever wrote) for callers that want to show it."""

    WRITTEN_MAX = 1000

    store: SqliteCdrStore
    clock: Callable[[], float] = time.time
    grace_s: float = 0.0
    timeout_s: float = 3600.0
    reconciler: Reconciler = field(init=False)
    written: OrderedDict[str, Cdr] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.reconciler = Reconciler(
            clock=self.clock, timeout_s=self.timeout_s, grace_s=self.grace_s
        )

    def handle(self, event: Event) -> None:
        self.reconciler.observe(event)
        self.poll()

    def poll(self) -> list[Cdr]:
        """Write whatever is due now (call periodically if events can stop arriving)."""
        due = self.reconciler.due()
        if due:
            self.store.write(due)
            self._remember(due)
        return due

    def flush(self) -> list[Cdr]:
        out = self.reconciler.flush()
        if out:
            self.store.write(out)
            self._remember(out)
        return out

    def _remember(self, cdrs: list[Cdr]) -> None:
        written = self.written
        for c in cdrs:
            written.pop(c.call_id, None)
            written[c.call_id] = c
        while len(written) > self.WRITTEN_MAX:
            written.popitem(last=False)
