"""`callward web` as a command: help, and bad input exits 2 with one line on stderr."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from callward.cli import app

runner = CliRunner()


def test_help_lists_the_options() -> None:
    r = runner.invoke(app, ["web", "--help"])
    assert r.exit_code == 0
    for opt in ("--host", "--port", "--data-dir", "--settings"):
        assert opt in r.output


def test_bad_settings_file_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "web.yaml"
    f.write_text("page_size: -1\n", encoding="utf-8")
    r = runner.invoke(app, ["web", "--settings", str(f), "--data-dir", str(tmp_path / "var")])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("callward: ") and "page_size" in lines[0]


def test_bad_log_level_exits_2(tmp_path: Path) -> None:
    r = runner.invoke(app, ["web", "--log-level", "loud", "--data-dir", str(tmp_path / "var")])
    assert r.exit_code == 2 and "--log-level" in r.stderr


def test_port_in_use_exits_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = runner.invoke(app, ["web", "--port", str(port), "--data-dir", str(tmp_path / "var")])
    assert r.exit_code == 2, r.output
    assert "cannot listen" in r.stderr
