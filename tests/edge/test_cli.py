"""``callward edge`` command line: bad input exits 2 with one line; provisioning stores hashes."""

from __future__ import annotations

import hashlib
import sqlite3

from typer.testing import CliRunner

from callward.cli import app

runner = CliRunner()


def test_bad_flags_exit_2_with_one_line(tmp_path) -> None:
    for args in (
        ["edge", "--no-auth", "--route", "bob"],
        ["edge", "--no-auth", "--upstream", "http://x"],
        ["edge", "--no-auth", "--listen", "sctp:127.0.0.1:5060"],
        ["edge", "--no-auth", "--listen", "udp:127.0.0.1:99999"],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("callward: "), res.output


def test_add_subscriber_stores_only_ha1(tmp_path) -> None:
    db = tmp_path / "subs.sqlite"
    res = runner.invoke(
        app,
        ["edge", "add-subscriber", "carol", "--password", "Tr0ub4dor", "--realm", "ex.net",
         "--subscribers", f"sqlite:{db}", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    row = sqlite3.connect(db).execute("SELECT * FROM subscribers").fetchone()
    assert row[:2] == ("carol", "ex.net")
    assert row[2] == hashlib.md5(b"carol:ex.net:Tr0ub4dor").hexdigest()
    assert row[3] == hashlib.sha256(b"carol:ex.net:Tr0ub4dor").hexdigest()
    assert "Tr0ub4dor" not in repr(row)
