"""``callward identity`` against the directory file the edge and web read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from callward.edge.directory import SqliteDirectory

CLI = [sys.executable, "-m", "callward.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "identity", *args], capture_output=True, text=True, timeout=60)


def test_add_renumber_revoke_show_changes(tmp_path: Path) -> None:
    db = str(tmp_path / "identity.sqlite")
    assert _run("add", "sub-1", "alice@x.test", "--msisdn", "+14155550100", "--directory",
                db).returncode == 0  # fmt: skip
    assert _run("renumber", "sub-1", "+14155550199", "--directory", db).returncode == 0
    assert _run("revoke", "sub-1", "--directory", db).returncode == 0
    shown = json.loads(_run("show", "sub-1", "--directory", db).stdout)
    assert shown == {"subject": "sub-1", "aor": "alice@x.test", "msisdn": "+14155550199",
                     "tenant": "default", "revoked": True}  # fmt: skip
    kinds = [json.loads(line)["kind"] for line in
             _run("changes", "--directory", db).stdout.splitlines()]  # fmt: skip
    assert kinds == ["added", "renumbered", "revoked"]
    d = SqliteDirectory(db)  # what the edge reads
    assert d.by_subject("sub-1").revoked  # type: ignore[union-attr]
    d.close()


def test_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    db = str(tmp_path / "identity.sqlite")
    r = _run("add", "sub-1", "alice@x.test", "--msisdn", "0049 123", "--directory", db)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "E.164" in r.stderr
    r = _run("revoke", "nobody", "--directory", db)
    assert r.returncode == 2 and "no subject" in r.stderr
    assert _run("show", "nobody", "--directory", db).returncode == 1
