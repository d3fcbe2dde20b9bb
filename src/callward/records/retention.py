"""The retention engine: staged plans over every store callward writes, legal holds, a scheduler.

Policy (which stage data of a tenant and data class must be in at a given age) lives in
:mod:`callward.privacy.retention_policy` and fails closed. This module applies it to *stores*:
anything implementing :class:`RetainedStore` — the CDR store (hot and cold, here), log files,
quality captures, HEP archives, Redis location bindings and subscriber rows
(:mod:`callward.privacy.retention_stores`). One planner, one set of legal holds, one audit trail.

A store that cannot produce a stage's form (a pcap cannot be redacted in place) moves straight to
the next stage it supports when that deadline passes: failing closed, never keeping data longer.

A legal hold suspends every stage change for matching items until it expires or is released;
holds and each executed stage change are written to the audit trail (before the change) with the
rule's legal basis.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from callward.errors import PolicyError, StoreError
from callward.privacy.retention_policy import RetentionPolicy, Stage
from callward.records.audit import AuditLog
from callward.records.rows import IDX, CdrQuery

__all__ = [
    "DAY",
    "AggregateStore",
    "CdrRetention",
    "HoldRegistry",
    "LegalHold",
    "PlanItem",
    "RetainedItem",
    "RetainedStore",
    "RetentionPlan",
    "RetentionScheduler",
    "execute_plan",
    "plan_retention",
]

DAY = 86400.0
_AUDIT_ACTION = {Stage.REDACTED: "minimize", Stage.AGGREGATED: "aggregate", Stage.PURGED: "purge"}


@dataclass(frozen=True, slots=True)
class RetainedItem:
    """One unit a store ages as a whole. ``label`` goes into plans and the audit trail and
    must not be personal (call id, file name, pseudonym); ``key`` is the store's own handle."""

    store: str
    key: Any
    label: str
    tenant: str
    ts: float
    stage: Stage = Stage.FULL
    subjects: tuple[str, ...] = ()  # hex pseudonyms of the data subjects in the item


class RetainedStore(Protocol):
    name: str
    data_class: str
    supports: frozenset[Stage]

    def items(self, older_than: float) -> Iterable[RetainedItem]:
        """Items whose time is before ``older_than`` (epoch s)."""

    def apply(self, stage: Stage, items: Sequence[RetainedItem]) -> int:
        """Move items to ``stage`` (one the store supports); returns how many moved."""


# --- legal holds -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LegalHold:
    hold_id: str
    reason: str
    ticket: str
    created_by: str
    created: float
    expires: float
    subject_pn: str = ""  # hex pseudonym; '' = any subject
    tenant: str = ""
    call_ids: tuple[str, ...] = ()
    start_from: float | None = None
    start_to: float | None = None

    def active(self, now: float) -> bool:
        return self.created <= now < self.expires

    def matches(self, item: RetainedItem) -> bool:
        if self.tenant and item.tenant != self.tenant:
            return False
        if self.call_ids and (item.store != "cdr" or item.key not in self.call_ids):
            return False
        if self.start_from is not None and item.ts < self.start_from:
            return False
        if self.start_to is not None and item.ts >= self.start_to:
            return False
        return not self.subject_pn or self.subject_pn in item.subjects

    def covers_subject(self, pn: str) -> bool:
        """Whether erasing subject ``pn`` would destroy data this hold preserves."""
        return self.subject_pn == pn or not (self.subject_pn or self.call_ids)


class HoldRegistry:
    """Legal holds in their own SQLite file; every change is audited."""

    def __init__(self, path: Path | str, audit: AuditLog) -> None:
        self.audit = audit
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS holds (hold_id TEXT PRIMARY KEY, body TEXT NOT NULL,"
                " released REAL)"
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: hold registry unavailable: {exc}") from None

    def place(
        self,
        *,
        actor: str,
        reason: str,
        ticket: str,
        days: float,
        now: float,
        subject_pn: str = "",
        tenant: str = "",
        call_ids: Iterable[str] = (),
        start_from: float | None = None,
        start_to: float | None = None,
    ) -> LegalHold:
        if not (subject_pn or tenant or call_ids or start_from or start_to):
            raise PolicyError("legal hold: name at least one of subject, tenant, calls, period")
        if days <= 0:
            raise PolicyError("legal hold: expiry must be in the future (days > 0)")
        hold = LegalHold(
            uuid.uuid4().hex[:12], reason, ticket, actor, now, now + days * DAY, subject_pn,
            tenant, tuple(sorted(call_ids)), start_from, start_to,
        )  # fmt: skip
        self.audit.record(
            actor, "hold", reason, ticket, hold.call_ids, subject_pn,
            detail=json.dumps({"hold_id": hold.hold_id, "expires": hold.expires}),
        )  # fmt: skip
        self._db.execute(
            "INSERT INTO holds VALUES (?,?,NULL)", (hold.hold_id, json.dumps(asdict(hold)))
        )
        return hold

    def release(self, hold_id: str, *, actor: str, reason: str, ticket: str, now: float) -> None:
        cur = self._db.execute(
            "UPDATE holds SET released=? WHERE hold_id=? AND released IS NULL", (now, hold_id)
        )
        if cur.rowcount != 1:
            raise PolicyError(f"legal hold {hold_id!r}: not found or already released")
        self.audit.record(actor, "release", reason, ticket, detail=json.dumps({"hold": hold_id}))

    def active(self, now: float) -> list[LegalHold]:
        out = []
        rows = self._db.execute("SELECT body FROM holds WHERE released IS NULL").fetchall()
        for (body,) in rows:
            d = json.loads(body)
            d["call_ids"] = tuple(d["call_ids"])
            hold = LegalHold(**d)
            if hold.active(now):
                out.append(hold)
        return out

    def close(self) -> None:
        self._db.close()


# --- CDRs and their aggregates ------------------------------------------------------------------


class AggregateStore:
    """Anonymous per-tenant, per-hour CDR aggregates (calls, answered, seconds, MOS sum):
    what analytics keep after identifiers and records are gone. Released outside only through
    the k-anonymous export (:mod:`callward.privacy.anonymize`)."""

    name = "cdr-aggregates"
    data_class = "cdr"
    supports = frozenset({Stage.AGGREGATED, Stage.PURGED})

    def __init__(self, path: Path | str) -> None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS cdr_hourly (tenant TEXT NOT NULL, hour REAL NOT NULL,"
                " disposition TEXT NOT NULL, calls INTEGER NOT NULL, seconds REAL NOT NULL,"
                " mos_sum REAL NOT NULL, mos_n INTEGER NOT NULL,"
                " PRIMARY KEY (tenant, hour, disposition))"
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: aggregate store unavailable: {exc}") from None

    def add_rows(self, rows: Iterable[tuple[Any, ...]]) -> int:
        n = 0
        self._db.execute("BEGIN")
        for r in rows:
            start, end = r[IDX["start_ts"]], r[IDX["end_ts"]]
            answer = r[IDX["answer_ts"]]
            secs = max(0.0, float(end) - float(answer)) if answer and end else 0.0
            mos = r[IDX["mos_min"]]
            self._db.execute(
                "INSERT INTO cdr_hourly VALUES (?,?,?,1,?,?,?) ON CONFLICT(tenant, hour,"
                " disposition) DO UPDATE SET calls=calls+1, seconds=seconds+excluded.seconds,"
                " mos_sum=mos_sum+excluded.mos_sum, mos_n=mos_n+excluded.mos_n",
                (r[IDX["tenant"]], float(start) // 3600 * 3600, r[IDX["disposition"]], secs,
                 float(mos or 0.0), 1 if mos is not None else 0),
            )  # fmt: skip
            n += 1
        self._db.execute("COMMIT")
        return n

    def rows(self) -> list[tuple[str, float, str, int, float, float, int]]:
        return list(self._db.execute("SELECT * FROM cdr_hourly ORDER BY tenant, hour"))

    def items(self, older_than: float) -> Iterable[RetainedItem]:
        for tenant, hour, disp in self._db.execute(
            "SELECT tenant, hour, disposition FROM cdr_hourly WHERE hour < ?", (older_than,)
        ).fetchall():
            label = f"{tenant}/{int(hour)}/{disp}"
            yield RetainedItem(self.name, (tenant, hour, disp), label, tenant, hour,
                               Stage.AGGREGATED)  # fmt: skip

    def apply(self, stage: Stage, items: Sequence[RetainedItem]) -> int:
        self._db.execute("BEGIN")
        n = 0
        for it in items:
            n += self._db.execute(
                "DELETE FROM cdr_hourly WHERE tenant=? AND hour=? AND disposition=?", it.key
            ).rowcount
        self._db.execute("COMMIT")
        return n

    def close(self) -> None:
        self._db.close()


@dataclass
class CdrRetention:
    """The CDR store (hot, cold or tiered) as a retained store: redacted = identifiers and
    their pseudonym index blanked (traffic data stays), aggregated = folded into
    :class:`AggregateStore` and the record deleted, purged = record deleted."""

    store: Any
    aggregates: AggregateStore
    name: str = "cdr"
    data_class: str = "cdr"
    supports: frozenset[Stage] = frozenset({Stage.REDACTED, Stage.AGGREGATED, Stage.PURGED})

    def items(self, older_than: float) -> Iterable[RetainedItem]:
        for row in self.store.rows(CdrQuery(start_to=older_than)):
            has_ids = row[IDX["caller_enc"]] is not None or row[IDX["callee_enc"]] is not None
            pns = tuple(bytes(p).hex() for p in (row[IDX["caller_pn"]], row[IDX["callee_pn"]]) if p)
            yield RetainedItem(
                self.name, row[0], row[0], row[IDX["tenant"]], float(row[IDX["start_ts"]]),
                Stage.FULL if has_ids else Stage.REDACTED, pns,
            )  # fmt: skip

    def apply(self, stage: Stage, items: Sequence[RetainedItem]) -> int:
        ids = [i.key for i in items]
        if stage is Stage.REDACTED:
            return int(self.store.minimize(ids))
        if stage is Stage.AGGREGATED:
            self.aggregates.add_rows(self.store.rows(CdrQuery(call_ids=tuple(ids))))
        return int(self.store.delete(ids))


# --- planning and execution -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanItem:
    store: str
    label: str
    tenant: str
    age_days: float
    action: str  # "redact" | "aggregate" | "purge" | "held"
    reason: str
    held_by: tuple[str, ...] = ()
    item: RetainedItem | None = field(default=None, compare=False, repr=False)
    target: Stage = Stage.PURGED


_ACTION = {Stage.REDACTED: "redact", Stage.AGGREGATED: "aggregate", Stage.PURGED: "purge"}


@dataclass(frozen=True)
class RetentionPlan:
    now: float
    items: tuple[PlanItem, ...]
    conflicts: tuple[str, ...]

    def of(self, action: str, store: str | None = None) -> list[PlanItem]:
        return [i for i in self.items if i.action == action and store in (None, i.store)]

    def summary(self) -> dict[str, Any]:
        groups: dict[tuple[str, str, str], int] = {}
        for i in self.items:
            k = (i.store, i.action, i.reason)
            groups[k] = groups.get(k, 0) + 1
        return {
            "now": self.now,
            **{a: len(self.of(a)) for a in ("redact", "aggregate", "purge", "held")},
            "reasons": [
                {"store": s, "action": a, "reason": r, "count": n}
                for (s, a, r), n in sorted(groups.items())
            ],
            "conflicts": list(self.conflicts),
        }


def _supported(stage: Stage, supports: frozenset[Stage]) -> Stage:
    """The first stage >= ``stage`` the store can produce (purge is always possible)."""
    for s in Stage:
        if s >= stage and (s in supports or s is Stage.PURGED):
            return s
    return Stage.PURGED


def plan_retention(
    stores: Iterable[RetainedStore],
    policy: RetentionPolicy,
    holds: Iterable[LegalHold],
    now: float,
) -> RetentionPlan:
    """What a retention run at ``now`` would do to each store, and under which rule."""
    holds = [h for h in holds if h.active(now)]
    items: list[PlanItem] = []
    conflicts: set[str] = set()
    for store in stores:
        tenants = ["", *policy.tenants]
        scheds = {t: policy.schedule(t, store.data_class) for t in tenants}
        first = min(s.first_deadline() for s in scheds.values())
        for item in store.items(now - first * DAY):
            sched = scheds.get(item.tenant)
            if sched is None:
                sched = scheds[item.tenant] = policy.schedule(item.tenant, store.data_class)
            conflicts.update(f"tenant {item.tenant or '(default)'}: {c}" for c in sched.conflicts)
            age = (now - item.ts) / DAY
            target = _supported(sched.stage_for(age), store.supports)
            if sched.stage_for(age) is Stage.FULL or target <= item.stage:
                continue
            reason = (f"{store.data_class} older than {sched.at(sched.stage_for(age)):g} d"
                      f" ({sched.basis})")  # fmt: skip
            held = tuple(h.hold_id for h in holds if h.matches(item))
            action = _ACTION[target]
            if held:
                reason, action = f"{reason}; suspended by legal hold", "held"
            items.append(PlanItem(store.name, item.label, item.tenant, round(age, 2), action,
                                  reason, held, item, target))  # fmt: skip
    return RetentionPlan(now, tuple(items), tuple(sorted(conflicts)))


def execute_plan(
    plan: RetentionPlan, stores: Iterable[RetainedStore], audit: AuditLog, actor: str
) -> dict[str, int]:
    """Apply a plan; each (store, stage) batch is audited *before* it runs, so a crash
    mid-run is visible in the trail."""
    done = {"redact": 0, "aggregate": 0, "purge": 0}
    for store in stores:
        for stage in (Stage.REDACTED, Stage.AGGREGATED, Stage.PURGED):
            batch = [i for i in plan.of(_ACTION[stage], store.name) if i.item is not None]
            if not batch:
                continue
            reasons = sorted({i.reason for i in batch})
            audit.record(
                actor, _AUDIT_ACTION[stage], "; ".join(reasons)[:2000], "retention-policy",
                [i.label for i in batch], detail=json.dumps({"store": store.name}),
            )  # fmt: skip
            done[_ACTION[stage]] += store.apply(stage, [i.item for i in batch if i.item])
    return done


@dataclass
class RetentionScheduler:
    """Runs retention over all stores every ``interval_s`` (daily by default); injected clock.
    ``callward serve`` starts :meth:`run_forever` (see :mod:`callward.runtime`)."""

    stores: Sequence[RetainedStore]
    policy: RetentionPolicy
    holds: HoldRegistry
    audit: AuditLog
    clock: Callable[[], float] = time.time
    interval_s: float = DAY
    actor: str = "retention-scheduler"
    retry_s: float = 300.0
    runs: int = 0
    failures: int = 0
    last_error: str = ""

    def run_once(self) -> dict[str, int]:
        now = self.clock()
        plan = plan_retention(self.stores, self.policy, self.holds.active(now), now)
        done = execute_plan(plan, self.stores, self.audit, self.actor)
        self.runs += 1
        return done

    async def run_forever(self, stop: asyncio.Event) -> None:
        """A failed run (a busy or unreachable store) is counted and retried after ``retry_s``;
        the loop never ends on it, so one bad night does not stop retention for good. Each
        batch is audited before it is applied, so a retried run redoes only what did not run.
        Store errors name the store and the failure, never a subject."""
        while not stop.is_set():
            wait = self.interval_s
            try:
                await asyncio.to_thread(self.run_once)
            except (StoreError, PolicyError) as exc:
                self.failures += 1
                self.last_error = str(exc)[:200]
                wait = min(self.interval_s, self.retry_s)
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass
