"""`callward cdr ...` / `callward privacy ...` end to end, fed through the InProcessBus wiring."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callward.cli import app
from callward.events import CallAnswered, CallEnded, CallStarted, InProcessBus, MediaStats
from callward.records.retention import DAY
from callward.records.service import CdrSink, open_records
from callward.records.synthetic import synthetic_cdrs

ALICE = "sip:+447700900111@ims.example"
BOB = "tel:+447700900222"
WHO = ["--actor", "carol@support", "--reason", "customer complaint", "--ticket", "T-9"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "var"
    rec = open_records(d)
    bus = InProcessBus()
    sink = CdrSink(rec.store, clock=lambda: 1_800_000_000.0)
    bus.subscribe(sink.handle)

    async def call() -> None:
        t = 1_799_990_000.0
        for ev in (
            CallStarted(ts=t, node="edge-1", seq=1, call_id="demo-1", caller=ALICE, callee=BOB,
                        sdp_summary="opus/48000 srtp-sdes"),
            CallAnswered(ts=t + 2, node="edge-1", seq=2, call_id="demo-1"),
            MediaStats(ts=t + 61, node="relay-1", seq=1, call_id="demo-1", ssrc=9,
                       codec="opus/48000", packets=3000, lost=12, jitter_ms=7.5, mos=4.1),
            CallEnded(ts=t + 62, node="edge-1", seq=3, call_id="demo-1", status=200, reason="bye"),
        ):  # fmt: skip
            await bus.publish(ev)

    asyncio.run(call())
    assert set(sink.written) == {"demo-1"}
    old = list(synthetic_cdrs(20, start=time.time() - 400 * DAY, spacing_s=3600.0))
    rec.store.write(old)
    rec.close()
    return d


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def test_inprocess_wiring_wrote_the_cdr(data_dir: Path) -> None:
    r = run("cdr", "query", "--subject", "+447700900111", "--json", "--reveal", *WHO,
            "--data-dir", str(data_dir))  # fmt: skip
    assert r.exit_code == 0, r.output
    (cdr,) = json.loads(r.stdout)
    assert cdr["caller"] == ALICE and cdr["callee"] == BOB
    assert cdr["disposition"] == "answered" and cdr["end_ts"] - cdr["answer_ts"] == 60.0
    assert cdr["mos_min"] == 4.1 and cdr["codecs"] == ["opus/48000"]
    assert cdr["lineage"]["nodes"] == ["edge-1", "relay-1"]


def test_query_masks_by_default_and_needs_reason(data_dir: Path) -> None:
    r = run("cdr", "query", "--subject", BOB, *WHO, "--data-dir", str(data_dir))
    assert r.exit_code == 0 and "447700900" not in r.stdout and "***222" in r.stdout
    r = run("cdr", "query", "--actor", "x", "--ticket", "t", "--data-dir", str(data_dir))
    assert r.exit_code == 2  # --reason missing
    r = run("cdr", "query", "--since", "yesterday-ish", *WHO, "--data-dir", str(data_dir))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--since" in r.stderr


def test_export_json_and_csv_with_audit(data_dir: Path) -> None:
    r = run("cdr", "export", "--subject", "tel:+44-7700-900111", "--format", "json",
            "--actor", "dpo", "--ticket", "DSR-1", "--data-dir", str(data_dir))  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["format"] == "callward-portability/1" and doc["subject"] == "+447700900111"
    (rec,) = doc["records"]
    assert (
        rec["role"] == "caller" and rec["other_party"] == "*" * 10 + "222"
    )  # 13 chars of +447700900222
    assert rec["start_utc"] == "2027-01-15T05:13:20.000+00:00"  # 20833 d + 18800 s
    assert rec["duration_s"] == 60.0 and rec["lineage"]["transformations"][-1].startswith("exp")
    assert doc["fields"]["caller"]["personal_data_class"] == "direct identifier"
    r = run("cdr", "export", "--subject", BOB, "--format", "csv", "--actor", "dpo",
            "--ticket", "DSR-2", "--data-dir", str(data_dir))  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 1 and rows[0]["role"] == "callee" and rows[0]["other_party"].endswith("111")
    r = run("cdr", "export", "--subject", BOB, "--format", "xml", "--actor", "d", "--ticket", "t",
            "--data-dir", str(data_dir))  # fmt: skip
    assert r.exit_code == 2
    r = run("cdr", "audit", "verify", "--json", "--data-dir", str(data_dir))
    assert r.exit_code == 0 and json.loads(r.stdout)["entries"] == 2


def test_purge_dry_run_then_real(data_dir: Path) -> None:
    now = str(time.time() + 60)
    r = run("cdr", "purge", "--dry-run", "--json", "--now", now, "--data-dir", str(data_dir))
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["aggregate"] == 20 and plan["redact"] == 0 and plan["purge"] == 0
    assert all("older than 365 d" in i["reason"] for i in plan["items"])
    r = run("cdr", "purge", "--dry-run", "--now", now, "--data-dir", str(data_dir))
    assert "DRY RUN: redact 0, aggregate 20" in r.stdout
    r = run("cdr", "hold", "place", "--tenant", "default", "--days", "5", "--reason", "court",
            "--ticket", "L-1", "--actor", "legal", "--data-dir", str(data_dir))  # fmt: skip
    assert r.exit_code == 0
    r = run("cdr", "purge", "--json", "--data-dir", str(data_dir))
    assert json.loads(r.stdout)["held"] == 20  # hold placed now, expires in 5 days
    hold_id = json.loads(run("cdr", "hold", "list", "--json", "--data-dir", str(data_dir)).stdout)
    r = run("cdr", "hold", "release", hold_id[0]["hold_id"], "--reason", "settled", "--ticket",
            "L-1", "--actor", "legal", "--data-dir", str(data_dir))  # fmt: skip
    assert r.exit_code == 0
    r = run("cdr", "purge", "--json", "--data-dir", str(data_dir))
    assert json.loads(r.stdout)["done"] == {"redact": 0, "aggregate": 20, "purge": 0}
    assert run("cdr", "audit", "verify", "--data-dir", str(data_dir)).exit_code == 0


def test_audit_verify_exit_1_on_tamper(data_dir: Path) -> None:
    run("cdr", "query", *WHO, "--data-dir", str(data_dir))
    run("cdr", "query", *WHO, "--data-dir", str(data_dir))
    db = sqlite3.connect(data_dir / "audit.db")
    db.execute("UPDATE audit SET actor='nobody' WHERE seq=1")
    db.commit()
    r = run("cdr", "audit", "verify", "--data-dir", str(data_dir))
    assert r.exit_code == 1 and "TAMPERED" in r.stdout


def test_privacy_shred_verify_and_redact(data_dir: Path, tmp_path: Path) -> None:
    r = run("privacy", "verify", "--subject", ALICE, "--data-dir", str(data_dir))
    assert r.exit_code == 0, r.output
    r = run("privacy", "shred", "--subject", "+447700900111", "--reason", "Art. 17",
            "--ticket", "E-1", "--actor", "dpo", "--data-dir", str(data_dir))  # fmt: skip
    assert r.exit_code == 0
    r = run("cdr", "query", "--subject", ALICE, "--json", "--reveal", *WHO,
            "--data-dir", str(data_dir))  # fmt: skip
    (cdr,) = json.loads(r.stdout)
    assert cdr["caller"] == "[erased]" and cdr["callee"] == BOB
    kek = tmp_path / "backup.kek"
    kek.write_bytes(bytes(range(32)))
    r = run("privacy", "backup-keys", "--out", str(tmp_path / "k.bak"), "--backup-key", str(kek),
            "--data-dir", str(data_dir))  # fmt: skip
    assert r.exit_code == 0 and "key(s) backed up" in r.stdout
    r = run("privacy", "redact", input="INVITE sip:+447700900111@10.0.0.1 from 192.0.2.9\n")
    assert r.exit_code == 0 and "447700900111" not in r.stdout and "192.0.2.9" not in r.stdout


def test_move_cold_then_query_finds_both_tiers(data_dir: Path) -> None:
    r = run("cdr", "move-cold", "--older-than-days", "30", "--json", "--data-dir", str(data_dir))
    assert r.exit_code == 0 and json.loads(r.stdout)["moved"] == 20
    assert list((data_dir / "cold").glob("day=*/part-*.parquet"))
    r = run("cdr", "query", "--json", *WHO, "--data-dir", str(data_dir))
    got = json.loads(r.stdout)
    assert len(got) == 21
    assert sum("read:cold" in c["lineage"]["transformations"] for c in got) == 20


def test_import_accepts_every_schema_version(data_dir: Path, tmp_path: Path) -> None:
    v1 = {"call_id": "old-1", "tenant": "t", "caller": "tel:+447700900444", "callee": BOB,
          "start_ts": 1_700_000_000.0, "answer_ts": 1_700_000_004.0, "end_ts": 1_700_000_064.0,
          "status": 200, "disposition": "answered", "node": "edge-0"}  # fmt: skip
    v2 = {"schema_version": 2, "call_id": "new-1", "tenant": "t", "caller": BOB, "callee": "x@y",
          "start_ts": 1_700_000_100.0, "answer_ts": None, "end_ts": 1_700_000_101.0,
          "status": 486, "disposition": "busy", "legs": [], "lineage": {"nodes": ["e"]}}  # fmt: skip
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps(v1) + "\n" + json.dumps(v2) + "\n")
    r = run("cdr", "import", str(f), "--json", "--data-dir", str(data_dir))
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"imported": 2, "by_version": {"1": 1, "2": 1}}
    r = run("cdr", "query", "--subject", "+447700900444", "--json", "--reveal", *WHO,
            "--data-dir", str(data_dir))  # fmt: skip
    (old,) = json.loads(r.stdout)
    assert old["schema_version"] == 2 and old["legs"][0]["nodes"] == ["edge-0"]
    assert "migrated:v1->v2" in old["lineage"]["transformations"]
    f.write_text('{"schema_version": 7, "call_id": "z"}\n')
    r = run("cdr", "import", str(f), "--data-dir", str(data_dir))
    assert r.exit_code == 2 and "in.jsonl:1" in r.stderr
