"""Retention: hand-computed ages against GDPR/CCPA/local rules, conflicts, legal holds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from callward.errors import PolicyError
from callward.records.audit import AuditLog
from callward.records.cold import ColdCdrStore, TieredStore, move_aged
from callward.records.retention import (
    DAY,
    HoldRegistry,
    PurgeScheduler,
    RetentionPolicy,
    RetentionRule,
    execute_plan,
    plan_purge,
)
from callward.records.rows import CdrQuery, RecordCodec
from callward.records.schema import DataClass
from callward.records.store_sqlite import SqliteCdrStore
from callward.records.synthetic import synthetic_cdrs

NOW = 1_800_000_000.0
AGES = [10, 200, 300, 380, 420]  # days


def test_gdpr_default_and_conflicting_local_rule(sqlite_store: SqliteCdrStore) -> None:
    for i, age in enumerate(AGES):
        (c,) = synthetic_cdrs(1, start=NOW - age * DAY, seed=i, prefix=f"g{age}")
        (d,) = synthetic_cdrs(1, start=NOW - age * DAY, seed=i, prefix=f"a{age}", tenant="acme")
        sqlite_store.write([c, d])
    policy = RetentionPolicy(tenants={"acme": ("GDPR", "LOCAL-TEL")})
    plan = plan_purge(sqlite_store, policy, [], NOW)
    got = {i.call_id.split("-")[0]: i.action for i in plan.items}
    # GDPR: identifiers > 180 d minimized, records > 365 d deleted.
    assert got["g200"] == "minimize" and got["g300"] == "minimize"
    assert got["g380"] == "delete" and got["g420"] == "delete" and "g10" not in got
    # GDPR + LOCAL-TEL: identifiers kept until the local minimum (270 d) despite GDPR's 180 d,
    # traffic data deleted at GDPR's 365 d (>= local minimum, <= local maximum 400 d).
    assert "a200" not in got and got["a300"] == "minimize" and got["a380"] == "delete"
    assert any("GDPR max 180 d overridden by LOCAL-TEL min 270 d" in c for c in plan.conflicts)
    reasons = {i.call_id.split("-")[0]: i.reason for i in plan.items}
    assert "180 d" in reasons["g200"] and "365 d" in reasons["g420"]


def test_ccpa_periods(sqlite_store: SqliteCdrStore) -> None:
    for i, age in enumerate(AGES):
        (c,) = synthetic_cdrs(1, start=NOW - age * DAY, seed=i, prefix=f"c{age}", tenant="ca")
        sqlite_store.write([c])
    plan = plan_purge(sqlite_store, RetentionPolicy(tenants={"ca": ("CCPA",)}), [], NOW)
    got = {i.call_id.split("-")[0]: i.action for i in plan.items}
    assert got == {"c380": "minimize", "c420": "minimize"}  # 365 d < age < 730 d


def test_rules_are_validated() -> None:
    with pytest.raises(PolicyError):
        RetentionRule("X", DataClass.TRAFFIC_DATA, 30, 10, "bad")


def test_legal_hold_suspends_then_expires_and_everything_is_audited(
    tmp_path: Path, sqlite_store: SqliteCdrStore, codec: RecordCodec
) -> None:
    cdrs = [
        dataclasses.replace(c, caller="tel:+447700900777")
        for c in synthetic_cdrs(3, start=NOW - 400 * DAY, spacing_s=60, prefix="h")
    ] + list(synthetic_cdrs(3, start=NOW - 400 * DAY, prefix="x", subjects=5))
    sqlite_store.write(cdrs)
    cold = ColdCdrStore(tmp_path / "cold", codec)
    move_aged(sqlite_store, cold, NOW - 400 * DAY + 90)  # two of the held ones go cold
    store = TieredStore(sqlite_store, cold)
    audit = AuditLog(tmp_path / "audit.db")
    holds = HoldRegistry(tmp_path / "holds.db", audit)
    pn = codec.pseudonym("+447700900777").hex()
    hold = holds.place(actor="legal@op", reason="litigation 2026-17", ticket="LEG-17", days=30,
                       now=NOW, subject_pn=pn)  # fmt: skip
    plan = plan_purge(store, RetentionPolicy(), holds.active(NOW), NOW)
    assert {i.call_id for i in plan.of("held")} == {"h-0@edge-1", "h-1@edge-1", "h-2@edge-1"}
    assert all(i.held_by == (hold.hold_id,) for i in plan.of("held"))
    assert len(plan.of("delete")) == 3
    assert execute_plan(plan, store, audit, "ops") == {"delete": 3, "minimize": 0}
    assert store.count(CdrQuery()) == 3 and cold.count(CdrQuery()) == 2
    # 31 days later the hold has expired: the scheduler purges hot and cold copies.
    later = NOW + 31 * DAY
    sched = PurgeScheduler(store, RetentionPolicy(), holds, audit, clock=lambda: later)
    assert sched.run_once()["delete"] == 3
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

    sqlite_store.write(list(synthetic_cdrs(4, start=NOW - 500 * DAY, prefix="s")))
    audit = AuditLog(tmp_path / "audit.db")
    sched = PurgeScheduler(sqlite_store, RetentionPolicy(), HoldRegistry(tmp_path / "h.db", audit),
                           audit, clock=lambda: NOW, interval_s=0.05)  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run_forever(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert sqlite_store.count(CdrQuery()) == 0
    assert [e.action for e in audit.entries()] == ["purge"]  # later runs found nothing to do
