"""`callward privacy li ...` and `privacy consent ...` as an operator runs them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from callward.cli import app


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_li_dual_control_and_roles(tmp_path: Path) -> None:
    d = ["--data-dir", str(tmp_path / "var")]
    r = run("privacy", "li", "provision", "--liid", "L-1", "--target", "+447700900666",
            "--from", "2026-01-01T00:00:00", "--to", "2027-01-01T00:00:00", "--authority",
            "Court X 12/26", "--actor", "o1", "--role", "li-officer", *d)  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run("privacy", "li", "activate", "L-1", "--actor", "o1", "--role", "li-officer", *d)
    assert r.exit_code == 2 and "dual control" in r.stderr
    r = run("privacy", "li", "list", "--actor", "dpo", "--role", "dpo", *d)
    assert r.exit_code == 2 and "li-officer" in r.stderr
    r = run("privacy", "li", "activate", "L-1", "--actor", "o2", "--role", "li-officer", *d)
    assert r.exit_code == 0, r.output
    r = run("privacy", "li", "list", "--json", "--actor", "o1", "--role", "li-officer", *d)
    (w,) = json.loads(r.stdout)
    assert w["activated_by"] == "o2" and w["provisioned_by"] == "o1"
    assert stat.S_IMODE((tmp_path / "var" / "li").stat().st_mode) == 0o700
    r = run("privacy", "li", "provision", "--liid", "L-2", "--target", "x", "--scope", "voice",
            "--from", "0", "--to", "1", "--authority", "A", "--actor", "o1", "--role",
            "li-officer", *d)  # fmt: skip
    assert r.exit_code == 2 and "--scope" in r.stderr
    # nothing of it in the CDR access trail other roles verify and read
    r = run("cdr", "audit", "verify", "--json", *d)
    assert json.loads(r.stdout)["entries"] == 0


def test_consent_set_and_show(tmp_path: Path) -> None:
    d = ["--data-dir", str(tmp_path / "var")]
    r = run("privacy", "consent", "set", "--subject", "+447700900111", "--jurisdiction",
            "US-CA", "--given", "--evidence", "ivr:7", "--actor", "ivr", *d)  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run("privacy", "consent", "set", "--subject", "tel:+447700900111", "--jurisdiction",
            "US-CA", "--withdrawn", "--evidence", "app", "--actor", "app", *d)  # fmt: skip
    assert r.exit_code == 0
    r = run("privacy", "consent", "show", "--subject", "+447700900111", "--json", *d)
    assert [e["given"] for e in json.loads(r.stdout)] == [True, False]
    r = run("privacy", "consent", "set", "--subject", "+1", "--jurisdiction", "MARS",
            "--given", "--evidence", "e", "--actor", "a", *d)  # fmt: skip
    assert r.exit_code == 2 and "unknown jurisdiction" in r.stderr
