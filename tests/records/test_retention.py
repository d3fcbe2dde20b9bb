"""Retention engine over CDRs: hand-computed ages against the shipped GDPR/CCPA/LOCAL-TEL rule
sets, stage by stage (full -> redacted -> aggregated -> purged), conflicts, legal holds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from callward.errors import PolicyError
from callward.privacy.retention_policy import load_policy
from callward.records.audit import AuditLog
from callward.records.cold import ColdCdrStore, TieredStore, move_aged
from callward.records.retention import (
    DAY,
    AggregateStore,
    CdrRetention,
    HoldRegistry,
    RetentionScheduler,
    execute_plan,
    plan_retention,
)
from callward.records.rows import CdrQuery, RecordCodec
from callward.records.store_sqlite import SqliteCdrStore
from callward.records.synthetic import synthetic_cdrs

NOW = 1_800_000_000.0
AGES = [10, 200, 300, 380, 420, 1200]  # days
SETS = ["builtin:GDPR", "builtin:CCPA", "builtin:LOCAL-TEL"]


def _policy(**tenants: tuple[str, ...]):
    return load_policy(SETS, tenants)


def _stores(store, tmp_path: Path):
    agg = AggregateStore(tmp_path / "agg.db")
    return [CdrRetention(store, agg), agg], agg


def test_gdpr_default_and_conflicting_local_rule(
    tmp_path: Path, sqlite_store: SqliteCdrStore
) -> None:
    for i, age in enumerate(AGES):
        (c,) = synthetic_cdrs(1, start=NOW - age * DAY, seed=i, prefix=f"g{age}")
        (d,) = synthetic_cdrs(1, start=NOW - age * DAY, seed=i, prefix=f"a{age}", tenant="acme")
        sqlite_store.write([c, d])
    stores, _ = _stores(sqlite_store, tmp_path)
    plan = plan_retention(stores, _policy(acme=("GDPR", "LOCAL-TEL")), [], NOW)
    got = {i.label.split("-")[0]: i.action for i in plan.items}
    # GDPR (gdpr.yaml): redact > 180 d, aggregate > 365 d, purge > 1095 d.
    assert got["g200"] == "redact" and got["g300"] == "redact"
    assert got["g380"] == "aggregate" and got["g420"] == "aggregate"
    assert got["g1200"] == "purge" and "g10" not in got
    # GDPR + LOCAL-TEL: nothing redacted before the local keep_min 270 d; LOCAL-TEL purges at
    # 400 d (the earliest purge), GDPR aggregates at 365 d.
    assert "a200" not in got and got["a300"] == "redact" and got["a380"] == "aggregate"
    assert got["a420"] == "purge" and got["a1200"] == "purge"
    assert any(
        "GDPR redacted at 180 d overridden by LOCAL-TEL keep_min 270 d" in c for c in plan.conflicts
    )
    reasons = {i.label.split("-")[0]: i.reason for i in plan.items}
    assert "180 d" in reasons["g200"] and "1095 d" in reasons["g1200"]


def test_stages_execute_and_aggregates_survive_the_records(
    tmp_path: Path, sqlite_store: SqliteCdrStore
) -> None:
    cdrs = [
        c
        for i, age in enumerate(AGES)
        for c in synthetic_cdrs(2, start=NOW - age * DAY, seed=i, prefix=f"s{age}")
    ]
    sqlite_store.write(cdrs)
    stores, agg = _stores(sqlite_store, tmp_path)
    audit = AuditLog(tmp_path / "audit.db")
    done = execute_plan(plan_retention(stores, _policy(), [], NOW), stores, audit, "ops")
    assert done == {"redact": 4, "aggregate": 4, "purge": 2}
    left = {c.call_id.split("-")[0]: c for c in sqlite_store.query(CdrQuery())}
    assert set(left) == {"s10", "s200", "s300"}
    assert left["s10"].caller and left["s200"].caller == "" and left["s300"].callee == ""
    # the aggregated calls are in hourly aggregates (two calls per age, same tenant)
    assert sum(r[3] for r in agg.rows()) == 4
    # a second run finds nothing new; aggregates are purged once they pass 1095 d
    assert execute_plan(plan_retention(stores, _policy(), [], NOW), stores, audit, "ops") == {
        "redact": 0,
        "aggregate": 0,
        "purge": 0,
    }
    later = NOW + 800 * DAY
    execute_plan(plan_retention(stores, _policy(), [], later), stores, audit, "ops")
    # s380/s420 aggregates (now > 1095 d) purged; s10/s200 (810/1000 d) just aggregated;
    # s300 (1100 d) went straight from redacted to purged
    assert sorted(r[3] for r in agg.rows()) == [2, 2]
    assert all((later - r[1]) / DAY < 1095 for r in agg.rows())
    assert sqlite_store.count(CdrQuery()) == 0
    assert [e.action for e in audit.entries()][:3] == ["minimize", "aggregate", "purge"]
    assert audit.verify() == []


def test_ccpa_periods(tmp_path: Path, sqlite_store: SqliteCdrStore) -> None:
    for i, age in enumerate(AGES):
        (c,) = synthetic_cdrs(1, start=NOW - age * DAY, seed=i, prefix=f"c{age}", tenant="ca")
        sqlite_store.write([c])
    stores, _ = _stores(sqlite_store, tmp_path)
    plan = plan_retention(stores, _policy(ca=("CCPA",)), [], NOW)
    got = {i.label.split("-")[0]: i.action for i in plan.items}
    assert got == {"c380": "redact", "c420": "redact", "c1200": "aggregate"}


def test_legal_hold_suspends_then_expires_and_everything_is_audited(
    tmp_path: Path, sqlite_store: SqliteCdrStore, codec: RecordCodec
) -> None:
    old = NOW - 1200 * DAY
    cdrs = [
        dataclasses.replace(c, caller="tel:+447700900777")
        for c in synthetic_cdrs(3, start=old, spacing_s=60, prefix="h")
    ] + list(synthetic_cdrs(3, start=old, prefix="x", subjects=5))
    sqlite_store.write(cdrs)
    cold = ColdCdrStore(tmp_path / "cold", codec)
    move_aged(sqlite_store, cold, old + 90)  # two of the held ones go cold
    store = TieredStore(sqlite_store, cold)
    audit = AuditLog(tmp_path / "audit.db")
    holds = HoldRegistry(tmp_path / "holds.db", audit)
    pn = codec.pseudonym("+447700900777").hex()
    hold = holds.place(actor="legal@op", reason="litigation 2026-17", ticket="LEG-17", days=30,
                       now=NOW, subject_pn=pn)  # fmt: skip
    stores, _ = _stores(store, tmp_path)
    plan = plan_retention(stores, _policy(), holds.active(NOW), NOW)
    assert {i.label for i in plan.of("held")} == {"h-0@edge-1", "h-1@edge-1", "h-2@edge-1"}
    assert all(i.held_by == (hold.hold_id,) for i in plan.of("held"))
    assert len(plan.of("purge")) == 3
    assert execute_plan(plan, stores, audit, "ops")["purge"] == 3
    assert store.count(CdrQuery()) == 3 and cold.count(CdrQuery()) == 2
    # 31 days later the hold has expired: the scheduler purges hot and cold copies.
    later = NOW + 31 * DAY
    sched = RetentionScheduler(stores, _policy(), holds, audit, clock=lambda: later)
    assert sched.run_once()["purge"] == 3
    assert store.count(CdrQuery()) == 0 and cold.files() == []
    actions = [e.action for e in audit.entries()]
    assert actions == ["hold", "purge", "purge"] and audit.verify() == []
    with pytest.raises(PolicyError):
        holds.place(actor="a", reason="r", ticket="t", days=1, now=NOW)


def test_release_hold(tmp_path: Path, sqlite_store: SqliteCdrStore) -> None:
    audit = AuditLog(tmp_path / "audit.db")
    holds = HoldRegistry(tmp_path / "holds.db", audit)
    h = holds.place(actor="a", reason="r", ticket="t", days=10, now=NOW, tenant="acme")
    assert holds.active(NOW + DAY) == [h]
    holds.release(h.hold_id, actor="a", reason="case closed", ticket="t", now=NOW + DAY)
    assert holds.active(NOW + DAY) == []
    with pytest.raises(PolicyError):
        holds.release(h.hold_id, actor="a", reason="again", ticket="t", now=NOW + DAY)
    assert [e.action for e in audit.entries()] == ["hold", "release"]


async def test_scheduler_loop_runs_until_stopped(tmp_path: Path, sqlite_store) -> None:
    import asyncio

    sqlite_store.write(list(synthetic_cdrs(4, start=NOW - 1500 * DAY, prefix="s")))
    audit = AuditLog(tmp_path / "audit.db")
    stores, _ = _stores(sqlite_store, tmp_path)
    sched = RetentionScheduler(stores, _policy(), HoldRegistry(tmp_path / "h.db", audit),
                               audit, clock=lambda: NOW, interval_s=0.05)  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run_forever(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert sqlite_store.count(CdrQuery()) == 0 and sched.runs >= 2
    assert [e.action for e in audit.entries()] == ["purge"]  # later runs found nothing to do


async def test_scheduler_survives_a_failing_store_and_retries(
    tmp_path: Path, sqlite_store: SqliteCdrStore
) -> None:
    import asyncio

    from callward.errors import StoreError

    sqlite_store.write(list(synthetic_cdrs(3, start=NOW - 1500 * DAY, prefix="f")))
    audit = AuditLog(tmp_path / "audit.db")
    stores, _ = _stores(sqlite_store, tmp_path)
    real_apply = stores[0].apply
    calls = {"n": 0}

    def flaky_apply(stage, items):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise StoreError("cdr.db: database is locked")
        return real_apply(stage, items)

    stores[0].apply = flaky_apply  # type: ignore[method-assign]
    sched = RetentionScheduler(stores, _policy(), HoldRegistry(tmp_path / "h.db", audit),
                               audit, clock=lambda: NOW, interval_s=3600, retry_s=0.05)  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run_forever(stop))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if sched.runs:
            break
    stop.set()
    await asyncio.wait_for(task, 5)
    assert sched.failures == 1 and "locked" in sched.last_error
    assert sched.runs >= 1 and sqlite_store.count(CdrQuery()) == 0  # the retry purged them
