"""Logs, captures, HEP archives, Redis location and the subscriber database under the same
retention engine, holds, erasure and plaintext verification as CDRs."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callward.cli import app
from callward.edge.location import Binding, RedisLocation
from callward.edge.subscribers import SqliteSubscribers, Subscriber
from callward.errors import PolicyError
from callward.privacy import Pseudonymizer
from callward.privacy.retention_policy import load_policy
from callward.privacy.retention_stores import (
    FileTreeStore,
    RedisLocationStore,
    erase_subject,
)
from callward.privacy.shred import subject_needles
from callward.records.audit import AuditLog
from callward.records.retention import DAY, HoldRegistry, execute_plan, plan_retention

NOW = 1_800_000_000.0
MSISDN = "+447700900123"
POLICY = load_policy(["builtin:GDPR", "builtin:CCPA", "builtin:LOCAL-TEL"])


def _file(path: Path, text: str, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    t = NOW - age_days * DAY
    os.utime(path, (t, t))
    return path


def test_logs_are_redacted_then_purged_and_captures_go_at_their_first_deadline(
    tmp_path: Path,
) -> None:
    logs = FileTreeStore("logs", "log", tmp_path / "logs", redactable=True)
    caps = FileTreeStore("quality-captures", "quality_capture", tmp_path / "caps")
    line = f"INVITE sip:{MSISDN}@ims.example from 192.0.2.7\n"
    _file(tmp_path / "logs/new.log", line, 1)
    _file(tmp_path / "logs/week.log", line, 10)  # GDPR log: redact > 7 d
    _file(tmp_path / "logs/old.log", line, 100)  # purge > 90 d
    _file(tmp_path / "caps/a.pcap", "pcap bytes " + MSISDN, 20)  # GDPR capture: 14 d
    _file(tmp_path / "caps/b.pcap", "pcap bytes", 2)
    audit = AuditLog(tmp_path / "audit.db")
    plan = plan_retention([logs, caps], POLICY, [], NOW)
    got = {(i.store, i.label): i.action for i in plan.items}
    assert got == {("logs", "week.log"): "redact", ("logs", "old.log"): "purge",
                   ("quality-captures", "a.pcap"): "purge"}  # fmt: skip
    assert execute_plan(plan, [logs, caps], audit, "ops") == {
        "redact": 1, "aggregate": 0, "purge": 2}  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert names == ["new.log", "week.log.redacted"]
    red = (tmp_path / "logs/week.log.redacted").read_text()
    assert MSISDN[1:] not in red and "192.0.2.7" not in red and "INVITE" in red
    assert [p.name for p in (tmp_path / "caps").iterdir()] == ["b.pcap"]
    # the redacted copy keeps its age and is purged at 90 d
    plan = plan_retention([logs], POLICY, [], NOW + 85 * DAY)
    got = {i.label: i.action for i in plan.items}
    assert got == {"new.log": "redact", "week.log.redacted": "purge"}
    assert [e.action for e in audit.entries()] == ["minimize", "purge", "purge"]


def test_holds_cover_files_and_block_erasure(tmp_path: Path) -> None:
    pseudo = Pseudonymizer(b"k" * 32)
    audit = AuditLog(tmp_path / "audit.db")
    holds = HoldRegistry(tmp_path / "holds.db", audit)
    logs = FileTreeStore("logs", "log", tmp_path / "logs", redactable=True)
    _file(tmp_path / "logs/old.log", f"call from {MSISDN}\nother line\n", 100)
    holds.place(actor="legal", reason="case", ticket="L", days=10, now=NOW,
                start_from=NOW - 200 * DAY, start_to=NOW)  # fmt: skip
    assert [i.action for i in plan_retention([logs], POLICY, holds.active(NOW), NOW).items] == [
        "held"
    ]
    with pytest.raises(PolicyError, match="erasure suspended by legal hold"):
        erase_subject(MSISDN, pseudo, [logs], holds.active(NOW), NOW)
    rep = erase_subject(MSISDN, pseudo, [logs], [], NOW)
    assert rep.per_store == {"logs": 1}
    assert (tmp_path / "logs/old.log").read_text() == "[erased]\nother line\n"


@pytest.mark.services
def test_redis_location_bindings_age_from_expiry_and_erase(tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = f"cwtest-{uuid.uuid4().hex[:8]}"
    loc = RedisLocation("redis://127.0.0.1:6379/0", prefix)
    try:
        for aor, exp in ((f"{MSISDN}@ims.example", NOW - 3 * DAY), ("bob@ims.example", NOW + 60)):
            loc.save(Binding(aor, f"sip:{aor.split('@')[0]}@192.0.2.1:5060", "k1", exp, "c", 1,
                             "udp:192.0.2.1:5060"))  # fmt: skip
        client.persist(f"{prefix}:loc:{MSISDN}@ims.example")  # survive its own TTL in the test
        pseudo = Pseudonymizer(b"k" * 32)
        store = RedisLocationStore(client, pseudo, prefix)
        plan = plan_retention([store], POLICY, [], NOW)  # GDPR location: purge 1 d after expiry
        assert [i.action for i in plan.items] == ["purge"]
        assert plan.items[0].label == f"binding:{pseudo.pseudonym(MSISDN)[:16]}"
        assert store.plaintext(subject_needles(MSISDN))
        execute_plan(plan, [store], AuditLog(tmp_path / "a.db"), "ops")
        assert store.plaintext(subject_needles(MSISDN)) == []
        assert erase_subject("sip:bob@ims.example", pseudo, [store], [], NOW).per_store == {
            "location": 1
        }
    finally:
        loc.clear()
        loc.close()


def test_subscriber_database_is_verified_and_erased_by_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "var"
    subs_path = tmp_path / "subscribers.sqlite"
    subs = SqliteSubscribers(subs_path)
    subs.put(Subscriber.from_password(MSISDN, "ims.example", "pw"))
    subs.put(Subscriber.from_password("+447700900999", "ims.example", "pw"))
    subs.close()
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(f"edge:\n  subscribers: sqlite:{subs_path}\n")
    base = ["--config", str(cfg), "--data-dir", str(data)]
    runner = CliRunner()
    r = runner.invoke(app, ["privacy", "verify", "--subject", MSISDN, "--json", *base])
    assert r.exit_code == 1, r.output
    assert any(f["path"].endswith("subscribers.sqlite") for f in json.loads(r.stdout))
    r = runner.invoke(app, ["privacy", "shred", "--subject", f"tel:{MSISDN}", "--reason", "Art. 17",
                            "--ticket", "E-2", "--actor", "dpo", "--json", *base])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["erased"]["subscriber"] == 1
    r = runner.invoke(app, ["privacy", "verify", "--subject", MSISDN, *base])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["privacy", "verify", "--subject", "+447700900999", *base])
    assert r.exit_code == 1  # the other subscriber is untouched


def test_without_the_cold_extra_retention_governs_the_hot_store_unless_cold_files_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: ``pip install callward`` (no ``[cold]``) runs the demo; the demo's runtime opens
    retention, which must then fall back to the hot CDR store, but never skip cold files."""
    import sys

    from callward.privacy.retention_stores import _cdr_tiers
    from callward.records import open_records

    monkeypatch.setitem(sys.modules, "duckdb", None)  # import duckdb -> ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "callward.records.cold", raising=False)
    records = open_records(tmp_path)
    try:
        assert _cdr_tiers(records) is records.store
        _file(tmp_path / "cold/day=2026-01-01/part-1.parquet", "PAR1", 400)
        with pytest.raises(ModuleNotFoundError):
            _cdr_tiers(records)
    finally:
        records.close()
