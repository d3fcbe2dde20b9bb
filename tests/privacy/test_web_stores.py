"""The stores `callward web` writes under retention: expired presence entries, past quota days
and dead dashboard sessions are purged; a watcher that read before the purge sees the purged
AORs as offline; live sessions and current presence stay."""

from __future__ import annotations

from pathlib import Path

from callward.privacy import Pseudonymizer
from callward.privacy.retention_policy import load_policy
from callward.privacy.web_stores import PhoneStateRows, WebSessionRows
from callward.records.audit import AuditLog
from callward.records.retention import DAY, HoldRegistry, execute_plan, plan_retention
from callward.web.phone_api import DailyQuota
from callward.web.phone_state import PhoneStateDb
from callward.web.presence import PresenceStore
from callward.web.sessions import SessionStore, SqliteSessions
from callward.web.settings import Principal

NOW = 1_800_000_000.0
POLICY = load_policy(["builtin:GDPR", "builtin:CCPA", "builtin:LOCAL-TEL"])
PSEUDO = Pseudonymizer(b"k" * 32)
ALICE, BOB, CAROL, DAN, EVE = (f"{u}@ims.example" for u in ("alice", "bob", "carol", "dan", "eve"))


def test_expired_presence_and_past_quota_days_are_purged_and_watchers_read_offline(
    tmp_path: Path,
) -> None:
    path = tmp_path / "phone-state.sqlite"
    db = PhoneStateDb(path)
    presence = PresenceStore(db)
    presence.publish("t1", ALICE, "available", "at work", NOW - 2 * DAY)  # expired 2 days ago
    presence.publish("t1", BOB, "busy", "", NOW + 3600)  # current
    presence.publish("t1", CAROL, "away", "", NOW + 3600)
    presence.withdraw("t1", CAROL)  # explicitly offline
    presence.publish("t1", DAN, "available", "", NOW - 3 * DAY)  # expired, but under a hold
    presence.publish("t1", EVE, "away", "", NOW - 3600)  # expired an hour ago: kept a day
    presence.watch("sub-9", [ALICE, BOB, CAROL, DAN])
    _, first = presence.delta("t1", "sub-9", 0, NOW - 4 * DAY)
    presence.delta("t1", "sub-9", 0, NOW - 60)  # marks EVE offline, keeps her expiry
    quota = DailyQuota(100, db, name="discovery")
    assert quota.take("sub-1", 5, NOW - 3 * DAY)
    db.close()
    rows = PhoneStateRows(path, tmp_path / "identity.sqlite", PSEUDO)
    audit = AuditLog(tmp_path / "audit.db")
    holds = HoldRegistry(tmp_path / "holds.db", audit)
    holds.place(actor="legal", reason="case", ticket="L-2", days=30, now=NOW - DAY,
                subject_pn=PSEUDO.pseudonym(DAN))  # fmt: skip
    plan = plan_retention([rows], POLICY, holds.active(NOW), NOW)
    got = sorted((i.label.split(":")[0], i.action) for i in plan.items)
    assert got == [("presence", "held"), ("presence", "purge"), ("presence", "purge"),
                   ("quota", "purge")]  # fmt: skip
    assert execute_plan(plan, [rows], audit, "retention")["purge"] == 3
    assert b"at work" not in path.read_bytes()  # secure_delete, WAL folded in, VACUUM
    db = PhoneStateDb(path)
    presence = PresenceStore(db)
    _, delta = presence.delta("t1", "sub-9", first["version"], NOW)
    assert {c["aor"]: c["status"] for c in delta["changes"]} == {
        ALICE: "offline", CAROL: "offline", DAN: "offline"}  # fmt: skip
    _, again = presence.delta("t1", "sub-9", delta["version"], NOW + 1)
    assert again["changes"] == []  # told once
    assert DailyQuota(100, db, name="discovery").used(NOW - 3 * DAY) == {}
    db.close()


def test_dead_dashboard_sessions_are_purged_and_live_ones_stay(tmp_path: Path) -> None:
    now = [NOW - 2 * DAY]
    path = tmp_path / "web-sessions.sqlite"
    store = SessionStore(lambda: now[0], backend=SqliteSessions(path))
    old = store.create(Principal(actor="ops-old"))
    now[0] = NOW - 60
    live = store.create(Principal(actor="ops-live"))
    store.close()
    rows = WebSessionRows(path)
    audit = AuditLog(tmp_path / "audit.db")
    plan = plan_retention([rows], POLICY, [], NOW)
    assert [i.action for i in plan.items] == ["purge"]
    assert execute_plan(plan, [rows], audit, "retention")["purge"] == 1
    assert b"ops-old" not in path.read_bytes()
    now[0] = NOW
    store = SessionStore(lambda: now[0], backend=SqliteSessions(path))
    assert store.get(old) is None and store.get(live) == Principal(actor="ops-live")
    store.close()
