"""Retention: per-jurisdiction, per-data-class periods; legal holds; a purge planner/scheduler.

Rules have a *minimum* (a legal obligation to keep, e.g. a national telecom data-retention rule)
and a *maximum* (storage limitation, GDPR Art. 5(1)(e); ePrivacy Directive 2002/58/EC Art. 6(1)-(2):
traffic data is erased or anonymised when no longer needed, billing data kept only until the bill
can no longer be challenged). When a tenant falls under several jurisdictions the earliest maximum
applies, except that no data is removed before the latest minimum: a legal obligation to retain
(GDPR Art. 6(1)(c), Art. 17(3)(b)) overrides erasure, and the plan says so.

Two actions, by data class (see :mod:`callward.records.schema.registry`):

* ``minimize`` — direct identifiers past their maximum are blanked, traffic data stays;
* ``delete`` — traffic data past its maximum: the whole record goes (hot and cold).

A legal hold suspends both for matching records until it expires or is released; holds and purges
are written to the audit trail with their reason.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from callward.errors import PolicyError, StoreError
from callward.records.audit import AuditLog
from callward.records.rows import IDX, CdrQuery, day_of
from callward.records.schema import DataClass

__all__ = [
    "DEFAULT_RULES",
    "HoldRegistry",
    "LegalHold",
    "PlanItem",
    "PurgePlan",
    "PurgeScheduler",
    "RetentionPolicy",
    "RetentionRule",
    "execute_plan",
    "plan_purge",
]

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class RetentionRule:
    jurisdiction: str
    data_class: DataClass
    min_days: int
    max_days: int | None
    basis: str

    def __post_init__(self) -> None:
        if self.min_days < 0 or (self.max_days is not None and self.max_days < self.min_days):
            raise PolicyError(
                f"retention rule {self.jurisdiction}/{self.data_class}: need 0 <= min <= max"
            )


_D, _T = DataClass.DIRECT_IDENTIFIER, DataClass.TRAFFIC_DATA
DEFAULT_RULES: tuple[RetentionRule, ...] = (
    RetentionRule("GDPR", _D, 0, 180, "GDPR Art. 5(1)(e); ePrivacy 2002/58/EC Art. 6(2) billing"),
    RetentionRule("GDPR", _T, 0, 365, "GDPR Art. 5(1)(e): storage limitation"),
    RetentionRule("CCPA", _D, 0, 365, "CCPA §1798.100(a)(3): disclosed retention period"),
    RetentionRule("CCPA", _T, 0, 730, "CCPA §1798.100(a)(3): disclosed retention period"),
    RetentionRule("LOCAL-TEL", _D, 270, 400, "local telecom rule: keep 270 d, at most 400 d"),
    RetentionRule("LOCAL-TEL", _T, 270, 400, "local telecom rule: keep 270 d, at most 400 d"),
)


@dataclass(frozen=True, slots=True)
class Effective:
    max_days: float | None
    min_days: float
    basis: str
    conflict: str


@dataclass(frozen=True)
class RetentionPolicy:
    rules: tuple[RetentionRule, ...] = DEFAULT_RULES
    tenants: dict[str, tuple[str, ...]] = field(default_factory=dict)  # tenant -> jurisdictions
    default: tuple[str, ...] = ("GDPR",)

    def jurisdictions(self, tenant: str) -> tuple[str, ...]:
        return self.tenants.get(tenant, self.default)

    def effective(self, tenant: str, data_class: DataClass) -> Effective:
        rules = [
            r
            for r in self.rules
            if r.jurisdiction in self.jurisdictions(tenant) and r.data_class == data_class
        ]
        maxes = [r for r in rules if r.max_days is not None]
        lo = max((r.min_days for r in rules), default=0)
        if not maxes:
            return Effective(None, lo, "no maximum configured", "")
        tightest = min(maxes, key=lambda r: r.max_days or 0)
        limit = float(tightest.max_days or 0)
        conflict = ""
        if lo > limit:
            keeper = max(rules, key=lambda r: r.min_days)
            conflict = (
                f"{tightest.jurisdiction} max {tightest.max_days} d overridden by "
                f"{keeper.jurisdiction} min {keeper.min_days} d (legal obligation to retain)"
            )
            limit = float(lo)
            return Effective(limit, lo, keeper.basis, conflict)
        return Effective(limit, lo, f"{tightest.jurisdiction}: {tightest.basis}", conflict)


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

    def matches(self, row: tuple[Any, ...]) -> bool:
        if self.tenant and row[IDX["tenant"]] != self.tenant:
            return False
        if self.call_ids and row[0] not in self.call_ids:
            return False
        ts = row[IDX["start_ts"]]
        if self.start_from is not None and ts < self.start_from:
            return False
        if self.start_to is not None and ts >= self.start_to:
            return False
        if self.subject_pn:
            pns = {row[IDX["caller_pn"]], row[IDX["callee_pn"]]}
            if bytes.fromhex(self.subject_pn) not in {bytes(p) for p in pns if p}:
                return False
        return True


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


# --- planning and execution -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanItem:
    call_id: str
    tenant: str
    day: str
    age_days: float
    action: str  # "delete" | "minimize" | "held"
    reason: str
    held_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class PurgePlan:
    now: float
    items: tuple[PlanItem, ...]
    conflicts: tuple[str, ...]

    def of(self, action: str) -> list[PlanItem]:
        return [i for i in self.items if i.action == action]

    def summary(self) -> dict[str, Any]:
        groups: dict[tuple[str, str], int] = {}
        for i in self.items:
            groups[(i.action, i.reason)] = groups.get((i.action, i.reason), 0) + 1
        return {
            "now": self.now,
            "delete": len(self.of("delete")),
            "minimize": len(self.of("minimize")),
            "held": len(self.of("held")),
            "reasons": [
                {"action": a, "reason": r, "count": n} for (a, r), n in sorted(groups.items())
            ],
            "conflicts": list(self.conflicts),
        }


def plan_purge(
    store: Any, policy: RetentionPolicy, holds: Iterable[LegalHold], now: float
) -> PurgePlan:
    """What a purge at ``now`` would do to ``store`` (hot, cold or tiered), and why."""
    holds = [h for h in holds if h.active(now)]
    tenants = set(policy.tenants) | {""}
    shortest = min(
        (
            policy.effective(t, dc).max_days or float("inf")
            for t in tenants
            for dc in (DataClass.DIRECT_IDENTIFIER, DataClass.TRAFFIC_DATA)
        ),
        default=float("inf"),
    )
    if shortest == float("inf"):
        return PurgePlan(now, (), ())
    items: list[PlanItem] = []
    conflicts: set[str] = set()
    for row in store.rows(CdrQuery(start_to=now - shortest * DAY)):
        tenant = row[IDX["tenant"]]
        age = (now - row[IDX["start_ts"]]) / DAY
        traffic = policy.effective(tenant, DataClass.TRAFFIC_DATA)
        direct = policy.effective(tenant, DataClass.DIRECT_IDENTIFIER)
        for eff in (traffic, direct):
            if eff.conflict:
                conflicts.add(f"tenant {tenant}: {eff.conflict}")
        has_ids = row[IDX["caller_enc"]] is not None or row[IDX["callee_enc"]] is not None
        if traffic.max_days is not None and age > traffic.max_days:
            action = "delete"
            reason = f"traffic data older than {traffic.max_days:g} d ({traffic.basis})"
        elif direct.max_days is not None and age > direct.max_days and has_ids:
            action = "minimize"
            reason = f"direct identifiers older than {direct.max_days:g} d ({direct.basis})"
        else:
            continue
        held = tuple(h.hold_id for h in holds if h.matches(row))
        if held:
            reason = f"{reason}; suspended by legal hold"
            action = "held"
        items.append(PlanItem(row[0], tenant, day_of(row[IDX["start_ts"]]), round(age, 2),
                              action, reason, held))  # fmt: skip
    return PurgePlan(now, tuple(items), tuple(sorted(conflicts)))


def execute_plan(plan: PurgePlan, store: Any, audit: AuditLog, actor: str) -> dict[str, int]:
    """Apply a plan. The audit entry is written first: a crash mid-purge is visible."""
    done = {"delete": 0, "minimize": 0}
    for action in ("delete", "minimize"):
        items = plan.of(action)
        if not items:
            continue
        reasons = sorted({i.reason for i in items})
        audit.record(
            actor, "purge" if action == "delete" else "minimize", "; ".join(reasons)[:2000],
            "retention-policy", [i.call_id for i in items],
        )  # fmt: skip
        ids = [i.call_id for i in items]
        done[action] = store.delete(ids) if action == "delete" else store.minimize(ids)
    return done


@dataclass
class PurgeScheduler:
    """Runs the purge every ``interval_s`` (daily by default) with an injected clock."""

    store: Any
    policy: RetentionPolicy
    holds: HoldRegistry
    audit: AuditLog
    clock: Callable[[], float] = time.time
    interval_s: float = DAY
    actor: str = "retention-scheduler"

    def run_once(self) -> dict[str, int]:
        now = self.clock()
        plan = plan_purge(self.store, self.policy, self.holds.active(now), now)
        return execute_plan(plan, self.store, self.audit, self.actor)

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.run_once)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass
