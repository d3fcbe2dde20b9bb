"""Subscriber rows aged by retention (created/last_seen), under legal holds, and a subject's
MSISDN planted in every store callward writes found by `privacy verify` and removed by `privacy
shred`: SQLite and PostgreSQL subscriber tables, the identity directory, Redis location bindings,
logs, quality captures, HEP archives, and the web phone state and dashboard sessions."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callward.cli import app
from callward.edge.answers import StoreAnswers
from callward.edge.directory import Identity, SqliteDirectory
from callward.edge.location import Binding, MemoryLocation, RedisLocation
from callward.edge.pending import LocationUpdate
from callward.edge.subscribers import PostgresSubscribers, SqliteSubscribers, Subscriber
from callward.errors import PolicyError
from callward.privacy import Pseudonymizer
from callward.privacy.retention_policy import load_policy
from callward.privacy.retention_stores import erase_subject
from callward.privacy.shred import subject_needles
from callward.privacy.subscriber_retention import DirectoryRows, SubscriberRows
from callward.records.audit import AuditLog
from callward.records.retention import DAY, HoldRegistry, execute_plan, plan_retention
from callward.web.phone_api import DailyQuota, PrefsStore
from callward.web.phone_state import PhoneStateDb
from callward.web.presence import PresenceStore
from callward.web.sessions import SessionStore, SqliteSessions
from callward.web.settings import Principal

NOW = 1_800_000_000.0
MSISDN = "+447700900123"
OTHER = "+447700900999"
PG = "postgresql://127.0.0.1:5432/test"
POLICY = load_policy(["builtin:GDPR"])  # subscriber: purge 3650 d after last activity
PSEUDO = Pseudonymizer(b"k" * 32)


def _age(path: Path, user: str, created: float | None, seen: float | None) -> None:
    db = sqlite3.connect(path)
    db.execute("UPDATE subscribers SET created=?, last_seen=? WHERE username=?",
               (created, seen, user))  # fmt: skip
    db.commit()
    db.close()


def test_subscribers_age_from_last_seen_and_are_purged_unless_held(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.sqlite"
    subs = SqliteSubscribers(path)
    for user in (MSISDN, OTHER, "+447700900555"):
        subs.put(Subscriber.from_password(user, "ims.example", "pw", tenant="t1"))
    subs.close()
    _age(path, MSISDN, NOW - 4000 * DAY, None)  # provisioned 11 years ago, never seen
    _age(path, OTHER, NOW - 4000 * DAY, NOW - 10 * DAY)  # old contract, active last week
    _age(path, "+447700900555", NOW - 3700 * DAY, NOW - 3660 * DAY)  # idle for 10 years
    directory = SqliteDirectory(tmp_path / "identity.sqlite")
    directory.put(Identity("sub-555", "u555@ims.example", "+447700900555"))
    directory.put(Identity("sub-999", "u999@ims.example", OTHER))
    directory.close()
    rows = SubscriberRows(f"sqlite:{path}", PSEUDO)
    rows.linked.append(DirectoryRows(tmp_path / "identity.sqlite", PSEUDO))
    plan = plan_retention([rows], POLICY, [], NOW)
    labels = {i.label: i.action for i in plan.items}
    assert labels == {f"subscriber:{PSEUDO.pseudonym(MSISDN)[:16]}": "purge",
                      f"subscriber:{PSEUDO.pseudonym('+447700900555')[:16]}": "purge"}  # fmt: skip
    # a legal hold on one subject keeps that row; the other goes
    audit = AuditLog(tmp_path / "audit.db")
    holds = HoldRegistry(tmp_path / "holds.db", audit)
    holds.place(actor="legal", reason="case", ticket="L-1", days=30, now=NOW,
                subject_pn=PSEUDO.pseudonym(MSISDN))  # fmt: skip
    plan = plan_retention([rows], POLICY, holds.active(NOW), NOW)
    assert sorted(i.action for i in plan.items) == ["held", "purge"]
    assert execute_plan(plan, [rows], audit, "retention")["purge"] == 1
    left = SqliteSubscribers(path)
    assert left.get(MSISDN, "ims.example") is not None
    assert left.get("+447700900555", "ims.example") is None
    assert left.get(OTHER, "ims.example") is not None
    left.close()
    assert b"+447700900555" not in path.read_bytes()  # secure_delete + VACUUM
    directory = SqliteDirectory(tmp_path / "identity.sqlite")  # the directory row went too
    assert directory.by_msisdn("+447700900555") is None and directory.by_msisdn(OTHER)
    directory.close()
    with pytest.raises(PolicyError, match="legal hold"):
        erase_subject(MSISDN, PSEUDO, [rows], holds.active(NOW), NOW)


def test_register_touches_last_seen_once_an_hour(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.sqlite"
    subs = SqliteSubscribers(path)
    subs.put(Subscriber.from_password(MSISDN, "ims.example", "pw"))
    answers = StoreAnswers(MemoryLocation(), subs)
    aor = f"{MSISDN}@ims.example"
    b = Binding(aor, f"sip:{MSISDN}@192.0.2.1", "k", NOW + 600, "c", 1, "udp:192.0.2.1:5060")

    def seen() -> float | None:
        db = sqlite3.connect(path)
        (v,) = db.execute("SELECT last_seen FROM subscribers").fetchone()
        db.close()
        return v  # type: ignore[no-any-return]

    assert seen() is None
    answers.answer(LocationUpdate(aor, save=(b,)), NOW)
    assert seen() == NOW
    answers.answer(LocationUpdate(aor, save=(b,)), NOW + 60)  # within the hour: no write
    assert seen() == NOW
    answers.answer(LocationUpdate(aor, remove_all=True), NOW + 7200)  # unregister: not seen
    assert seen() == NOW
    answers.answer(LocationUpdate(aor, save=(b,)), NOW + 7200)
    assert seen() == NOW + 7200
    subs.close()


def test_a_database_from_before_the_age_columns_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE subscribers (username TEXT NOT NULL, realm TEXT NOT NULL, ha1_md5"
               " TEXT NOT NULL, ha1_sha256 TEXT NOT NULL, tenant TEXT NOT NULL DEFAULT 'default',"
               " PRIMARY KEY (username, realm))")  # fmt: skip
    db.execute("INSERT INTO subscribers VALUES (?, 'r', 'a', 'b', 'default')", (MSISDN,))
    db.commit()
    db.close()
    rows = SubscriberRows(f"sqlite:{path}", PSEUDO)
    assert list(rows.items(NOW + 10_000 * DAY)) == []  # age unknown: never purged on a guess
    SqliteSubscribers(path).close()  # the edge opens it: created = the migration time
    assert [i.label[:11] for i in rows.items(NOW + 10_000 * DAY)] == ["subscriber:"]


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A private PostgreSQL schema; the returned URL puts it first on the search path."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"cwtest_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG, autocommit=True, connect_timeout=3)
    except psycopg.Error:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 (db test)")
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.mark.services
def test_postgres_subscribers_are_aged_verified_and_erased(pg_schema: str) -> None:
    subs = PostgresSubscribers(pg_schema)
    subs.put(Subscriber.from_password(MSISDN, "ims.example", "pw"))
    subs.put(Subscriber.from_password(OTHER, "ims.example", "pw"))
    subs.touch(OTHER, NOW)
    subs.flush()  # touches are written by a background thread
    rows = SubscriberRows(pg_schema, PSEUDO)
    assert rows.pg and rows.table == "callward_subscribers"
    # the never-seen row ages from created (the wall clock), the other from last_seen = NOW
    assert {i.label for i in rows.items(NOW)} == {f"subscriber:{PSEUDO.pseudonym(MSISDN)[:16]}"}
    assert len(list(rows.items(NOW + 4000 * DAY))) == 2
    needles = subject_needles(MSISDN)
    assert rows.plaintext(needles) == [f"callward_subscribers:{PSEUDO.pseudonym(MSISDN)[:16]}"]
    assert erase_subject(f"tel:{MSISDN}", PSEUDO, [rows], [], NOW).per_store == {"subscriber": 1}
    assert rows.plaintext(needles) == []
    assert subs.get(OTHER, "ims.example") is not None
    subs.close()


def _plant(data: Path) -> None:
    """The subject's MSISDN in a log line, a quality capture and a HEP archive."""
    for rel, body in (("logs/edge.log", f"REGISTER from {MSISDN} ok\nother\n"),
                      ("captures/call.pcap", f"\xd4\xc3\xb2\xa1 INVITE sip:{MSISDN}@x"),
                      ("hep/2026-12-02.hep", f"HEP3 From: <sip:{MSISDN}@x>")):  # fmt: skip
        p = data / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)


def _plant_web(data: Path) -> None:
    """`callward web` state of alice (sub-1, MSISDN) and bob (sub-2, OTHER): preferences, a
    presence entry, watch lists (bob watches alice), a quota counter and a dashboard session
    whose actor is the subject's number."""
    db = PhoneStateDb(data / "phone-state.sqlite")
    presence = PresenceStore(db)
    for sub, aor, other in (("sub-1", "alice@ims.example", "bob@ims.example"),
                            ("sub-2", "bob@ims.example", "alice@ims.example")):  # fmt: skip
        PrefsStore(db).put(sub, 0, {"ring": "bell"})
        presence.publish("default", aor, "available", "", NOW + 3600)
        presence.watch(sub, [other])
    DailyQuota(100, db, name="discovery").take("sub-1", 3, NOW)
    db.close()
    sessions = SessionStore(lambda: NOW, backend=SqliteSessions(data / "web-sessions.sqlite"))
    sessions.create(Principal(actor=f"self-care {MSISDN}"))
    sessions.create(Principal(actor="noc"))
    sessions.close()


@pytest.mark.services
def test_verify_finds_and_shred_removes_the_subject_in_every_store(
    tmp_path: Path, pg_schema: str
) -> None:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    data = tmp_path / "var"
    prefix = f"cwtest-{uuid.uuid4().hex[:8]}"
    subs = PostgresSubscribers(pg_schema)
    for user in (MSISDN, OTHER):
        subs.put(Subscriber.from_password(user, "ims.example", "pw"))
    subs.close()
    loc = RedisLocation("redis://127.0.0.1:6379/0", prefix)
    for user in (MSISDN, OTHER):
        aor = f"{user}@ims.example"
        loc.save(Binding(aor, f"sip:{user}@192.0.2.1", "k", 4e9, "c", 1, "udp:192.0.2.1:5060"))
    directory = SqliteDirectory(data / "identity.sqlite")
    directory.put(Identity("sub-1", "alice@ims.example", MSISDN))
    directory.put(Identity("sub-2", "bob@ims.example", OTHER))
    directory.close()
    _plant(data)
    _plant_web(data)
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(f"edge:\n  subscribers: '{pg_schema}'\n  location: redis://127.0.0.1:6379/0\n"
                   f"  location_prefix: {prefix}\n")  # fmt: skip
    base = ["--config", str(cfg), "--data-dir", str(data)]
    runner = CliRunner()
    try:
        r = runner.invoke(app, ["privacy", "verify", "--subject", MSISDN, "--json", *base])
        assert r.exit_code == 1, r.output
        where = {(f["path"].rsplit("/", 1)[-1], f["needle_kind"]) for f in json.loads(r.stdout)}
        names = {w for w, _ in where}
        assert {"edge.log", "call.pcap", "2026-12-02.hep", "identity.sqlite",
                "web-sessions.sqlite"} <= names  # fmt: skip
        assert ("postgresql", "subscriber") in where and ("redis", "location") in where
        assert ("phone-state.sqlite", "phone-state") in where  # alice's rows, via the directory
        r = runner.invoke(app, ["privacy", "shred", "--subject", MSISDN, "--reason", "Art. 17",
                                "--ticket", "E-9", "--actor", "dpo", "--json", *base])  # fmt: skip
        assert r.exit_code == 0, r.output
        erased = json.loads(r.stdout)["erased"]
        assert erased == {"cdr": 0, "logs": 1, "quality-captures": 1, "hep-archive": 1,
                          "subscriber": 1, "identity-directory": 1, "location": 1,
                          # prefs, quota, presence, own watch list, alice in bob's list
                          "phone-state": 5, "web-sessions": 1}  # fmt: skip
        r = runner.invoke(app, ["privacy", "verify", "--subject", MSISDN, *base])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["privacy", "verify", "--subject", OTHER, "--json", *base])
        assert r.exit_code == 1  # the other subscriber is untouched everywhere
        kinds = {f["needle_kind"] for f in json.loads(r.stdout)}
        assert {"subscriber", "location", "phone-state"} <= kinds
        db = PhoneStateDb(data / "phone-state.sqlite")  # bob's state is intact, minus alice
        assert PrefsStore(db).get("sub-2")[1] == {"ring": "bell"}
        assert PresenceStore(db).delta("default", "sub-2", 0, NOW)[1]["changes"] == []
        db.close()
        assert (data / "logs/edge.log").read_text() == "[erased]\nother\n"
    finally:
        loc.clear()
        loc.close()


@pytest.mark.services
def test_verify_searches_the_postgres_cdr_schema(tmp_path: Path) -> None:
    psycopg = pytest.importorskip("psycopg")
    try:
        db = psycopg.connect(PG, autocommit=True, connect_timeout=3)
    except psycopg.Error:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 (db test)")
    subject = f"+4477009{uuid.uuid4().int % 10**5:05d}"
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(f"storage:\n  postgres_url: '{PG}'\n"
                   f"edge:\n  subscribers: 'sqlite:{tmp_path / 'subs.sqlite'}'\n")  # fmt: skip
    base = ["--config", str(cfg), "--data-dir", str(tmp_path / "var")]
    runner = CliRunner()
    r = runner.invoke(app, ["privacy", "verify", "--subject", subject, *base])
    assert r.exit_code == 0, r.output  # creates the schema; nothing of the subject yet
    call_id = f"cw-verify-{uuid.uuid4().hex}"
    db.execute(  # a journal row written in clear (what a bug would leave behind)
        "INSERT INTO callward.event_journal VALUES (%s, 'a', 'n', 1, 'call_started', 0, %s)",
        (call_id, json.dumps({"caller": f"sip:{subject}@ims.example"})),
    )
    try:
        r = runner.invoke(app, ["privacy", "verify", "--subject", subject, "--json", *base])
        assert r.exit_code == 1, r.output
        assert [f["where"] for f in json.loads(r.stdout)] == [
            "callward.event_journal (1 row match)"
        ]
    finally:
        db.execute("DELETE FROM callward.event_journal WHERE call_id = %s", (call_id,))
        db.close()
