"""The lazy CLI: `callward version`/`--help` load no heavy dependency, every COMMANDS entry
matches what its module registers, and a missing optional extra gives a one-line install hint.

Import sets are checked in fresh interpreters (sys.modules after the command ran), never by
timing: timings belong in benchmarks/ (docs/benchmarks.md has the startup figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from callward import cli
from callward.cli import COMMANDS, EXTRAS, app

ROOT = Path(__file__).resolve().parents[2]
# Third-party packages a trivial command must not pay for.
HEAVY = {"numpy", "matplotlib", "fastapi", "starlette", "uvicorn", "jinja2", "duckdb",
         "pyarrow", "nats", "psycopg", "redis", "structlog", "rich", "pydantic", "yaml",
         "cryptography", "websockets"}  # fmt: skip

_PROBE = """
import json, sys
sys.argv = ["callward", *json.loads(sys.argv[1])]
from callward.cli import main
try:
    main()
except SystemExit:
    pass
sys.stdout.flush()
print("\\n@@" + json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _modules_after(args: list[str]) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    res = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)  # fmt: skip
    mods = json.loads(res.stderr.rsplit("@@", 1)[1])
    return set(mods), res


@pytest.mark.parametrize("args", [["version"], ["--help"], []])
def test_trivial_commands_import_no_heavy_dependency(args: list[str]) -> None:
    mods, res = _modules_after(args)
    tops = {m.split(".")[0] for m in mods}
    assert not (tops & HEAVY), sorted(tops & HEAVY)
    ours = {m for m in mods if m.startswith("callward")}
    assert ours <= {"callward", "callward.cli", "callward.cli.exits", "callward.errors"}, ours
    if args == ["version"]:
        assert res.stdout.strip() == "0.1.0"


def test_help_lists_every_command_without_importing_it() -> None:
    mods, res = _modules_after(["--help"])
    for name, (_, helptext) in COMMANDS.items():
        assert f"  {name} " in res.stdout
        assert helptext.split()[0] in res.stdout
    assert not any(m in mods for _, (m, _) in COMMANDS.items())


def test_analyze_loads_numpy_but_no_optional_extra(tmp_path: Path) -> None:
    from callward.quality.synth import RtpSpec, rtp_frames, write_pcap

    p = tmp_path / "s.pcap"
    write_pcap(p, rtp_frames(RtpSpec(count=50)))
    mods, res = _modules_after(["analyze", "--json", str(p)])
    assert json.loads(res.stdout)["streams"][0]["packets"] == 50, res.stderr
    tops = {m.split(".")[0] for m in mods}
    assert "numpy" in tops
    assert not (tops & set(EXTRAS)), sorted(tops & set(EXTRAS))
    assert "callward.cli.records" not in mods and "callward.web" not in mods


@pytest.mark.parametrize("module", sorted({m for m, _ in COMMANDS.values()}))
def test_commands_entries_match_what_the_module_registers(module: str) -> None:
    sub = typer.Typer()
    __import__(module, fromlist=["register"]).register(sub)
    sub.callback()(lambda: None)
    group = typer.main.get_group(sub)
    assert set(group.commands) == {n for n, (m, _) in COMMANDS.items() if m == module}
    for name, cmd in group.commands.items():
        assert cmd.get_short_help_str(300) == COMMANDS[name][1], name


def test_no_cli_module_imports_an_optional_extra_at_import_time() -> None:
    names = sorted(f"callward.cli.{p.stem}" for p in (ROOT / "src/callward/cli").glob("*.py")
                   if p.stem not in ("__init__", "__main__"))  # fmt: skip
    code = (
        "import importlib, json, sys\n"
        "out = {}\n"
        "for n in json.loads(sys.argv[1]):\n"
        "    before = {m.split('.')[0] for m in sys.modules}\n"
        "    importlib.import_module(n)\n"
        "    out[n] = sorted({m.split('.')[0] for m in sys.modules} - before)\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, json.dumps(names)], capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    added = json.loads(res.stdout)
    bad = {n: sorted(set(a) & set(EXTRAS)) for n, a in added.items() if set(a) & set(EXTRAS)}
    assert not bad, f"import these inside the command function instead: {bad}"


def test_missing_extra_inside_a_command_exits_2_with_install_hint() -> None:
    code = (
        "import sys\n"
        "for m in ('fastapi', 'uvicorn', 'starlette', 'jinja2'):\n"
        "    sys.modules[m] = None  # as if callward[web] were not installed\n"
        "sys.argv = ['callward', 'web', '--port', '0']\n"
        "from callward.cli import main\n"
        "main()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'callward[web]'" in lines[0], res.stderr


def test_missing_extra_at_module_import_exits_2_with_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cw_fake_cli.py").write_text(
        "import duckdb\n\ndef register(app):\n    @app.command('fake')\n"
        "    def fake() -> None:\n        '''Fake.'''\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "duckdb", None)
    monkeypatch.setitem(COMMANDS, "fake", ("cw_fake_cli", "Fake."))
    monkeypatch.setattr(cli, "_loaded", {})
    res = CliRunner().invoke(app, ["fake"])
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        "callward fake: duckdb is not installed; install it with: pip install 'callward[cold]'"
    )


def test_unknown_command_suggests_the_close_one() -> None:
    res = CliRunner().invoke(app, ["anlyze", "x.pcap"])
    assert res.exit_code == 2
    assert "No such command 'anlyze'. Did you mean 'analyze'?" in res.stderr


def test_every_extra_named_in_extras_exists_in_pyproject() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    assert set(EXTRAS.values()) <= set(extras)
    core = " ".join(meta["dependencies"]).lower()
    for pkg in ("fastapi", "duckdb", "pyarrow", "nats-py", "psycopg", "matplotlib"):
        assert pkg not in core, f"{pkg} belongs to an optional extra"
    assert "callward[all]" in extras["dev"]  # `make` installs .[dev]: tests get every extra


def test_services_import_without_any_optional_extra() -> None:
    # `pip install callward` (no extras) must still run the edge, relay, phone, demo, analyze.
    code = (
        "import sys\n"
        f"for m in {sorted(EXTRAS)!r}:\n"
        "    sys.modules[m] = None\n"
        "import callward.edge, callward.ua, callward.relay, callward.records, callward.usage\n"
        "import callward.privacy, callward.quality.report, callward.cli.demo\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
