"""The minimisation report flags personal fields nothing reads (static scan of the source)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from callward.cli import app
from callward.privacy.minimisation import minimisation_report


def test_real_source_every_personal_field_has_a_reader() -> None:
    rows = minimisation_report()
    personal = {(r.schema, r.field) for r in rows if r.personal}
    assert ("cdr", "caller") in personal and ("event:registration", "aor") in personal
    assert not [r for r in rows if r.flag == "unused personal field"]
    assert all(r.purpose for r in rows if r.schema == "cdr")


def test_a_field_nobody_reads_is_flagged(tmp_path: Path) -> None:
    (tmp_path / "reader.py").write_text("def f(c):\n    return c.caller, c.callee\n")
    rows = minimisation_report(tmp_path)
    flagged = {(r.schema, r.field) for r in rows if r.flag == "unused personal field"}
    assert ("event:registration", "aor") in flagged and (
        "event:security_alert",
        "source",
    ) in flagged
    assert ("cdr", "caller") not in flagged and ("event:call_started", "caller") not in flagged


def test_logged_personal_keys_are_reported(tmp_path: Path) -> None:
    (tmp_path / "svc.py").write_text("def g(log, x):\n    log.info('reg', msisdn=x, count=1)\n")
    rows = {(r.schema, r.field): r for r in minimisation_report(tmp_path)}
    assert rows[("log", "msisdn")].flag == "logged then masked"
    assert rows[("log", "count")].flag == ""


def test_cli() -> None:
    r = CliRunner().invoke(app, ["privacy", "minimisation", "--flagged"])
    assert r.exit_code == 0 and "0 unused personal field(s)" in r.stdout
