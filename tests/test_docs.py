"""The docs describe what runs today: docs/operations.md's configuration tables against the
pydantic models (every field documented, every documented field real, defaults equal), and
every ``callward ...`` command line in README.md and docs/*.md against the real
command tree (the subcommands exist and take the ``--options`` the docs name).

These tests read the docs as data, so a renamed field, a changed default or a removed flag
fails here instead of leaving a false sentence behind.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from typer._click.core import Command, Context

from callward.cli import app
from callward.config import CallwardConfig
from callward.web.settings import WebSettings

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = ROOT / "docs" / "operations.md"
README = ROOT / "README.md"

# Section heading word (``## Edge (...)`` → ``edge``) → the model its field tables document.
MODELS: dict[str, type[BaseModel]] = {
    name: field.annotation  # type: ignore[misc]
    for name, field in CallwardConfig.model_fields.items()
}
MODELS["web"] = WebSettings

# Defaults the docs describe in words because the code computes them; the code side must be
# None (or the stated literal) so the description is the only behaviour.
DESCRIBED: dict[tuple[str, str], str] = {
    ("edge", "auth_secret"): "random per process",
    ("identity", "jwks_uri"): "<issuer>/jwks",
    ("identity", "discovery_salt"): "random",
    ("retention", "logs_dir"): "<data_dir>/logs",
    ("retention", "captures_dir"): "<data_dir>/captures",
    ("retention", "hep_dir"): "<data_dir>/hep",
    ("retention", "rule_sets"): "builtin GDPR, CCPA, LOCAL-TEL",
    ("security", "fraud_default"): "international/premium false, max_concurrent 8, cps 1 "
    "(burst 5), costly_per_hour 20",
    ("web", "tokens.*.actor"): "—",
}


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def doc_rows(text: str) -> list[tuple[str, str, str, int]]:
    """(section, field, documented default, line number) for every config table row."""
    rows: list[tuple[str, str, str, int]] = []
    section = ""
    table_section: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        heading = re.match(r"^##\s+(\w+)", line)
        if heading:
            section = heading.group(1).lower()
            table_section = None
            continue
        if not line.startswith("|"):
            table_section = None
            continue
        cells = _cells(line)
        if table_section is None:
            head = re.match(r"^field(?: \(`(\w+)`\))?$", cells[0])
            if head and len(cells) >= 3 and cells[1] == "default":
                table_section = head.group(1) or section
            else:
                table_section = ""  # some other table (flags, metrics): not config
            continue
        if not table_section or set(cells[0]) <= set("-: "):
            continue
        names = [n.strip().strip("`") for n in cells[0].split(" / ")]
        defaults = [d.strip() for d in cells[1].split(" / ")]
        if len(defaults) != len(names):
            defaults = [cells[1]] * len(names)
        sec = table_section
        for name, default in zip(names, defaults, strict=True):
            if "." in name and name.split(".")[0] in MODELS:
                sec, name = name.split(".", 1)
            rows.append((sec, name, default, number))
    return rows


ROWS = doc_rows(OPERATIONS.read_text(encoding="utf-8"))


def _code_default(model: type[BaseModel], name: str) -> Any:
    info = model.model_fields[name]
    if info.default is not PydanticUndefined:
        return info.default
    assert info.default_factory is not None
    return info.default_factory()  # type: ignore[call-arg]


def _doc_value(text: str) -> Any:
    """The documented default as a value: null/none, bools, numbers, [a, b], {}, else text."""
    text = text.strip().strip("`")
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false", "off", "on"):
        return text.lower() in ("true", "on")
    if text == "{}":
        return {}
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [] if not inner else [p.strip().strip("\"'") for p in inner.split(",")]
    try:
        return float(text.replace("_", ""))
    except ValueError:
        return text


def _normal(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return str(value)


def test_the_parser_reads_the_config_tables() -> None:
    sections = {sec for sec, *_ in ROWS}
    assert sections >= {"sip", "storage", "quality", "media", "records", "privacy", "edge"}
    assert sections >= {"retention", "security", "identity", "web"}
    assert len(ROWS) > 100


@pytest.mark.parametrize(
    ("section", "name", "default", "line"), ROWS, ids=[f"{s}.{n}" for s, n, _, _ in ROWS]
)
def test_documented_field_exists_with_its_default(
    section: str, name: str, default: str, line: int
) -> None:
    where = f"docs/operations.md:{line}: {section}.{name}"
    if (section, name) in DESCRIBED:
        assert default.strip("`") == DESCRIBED[(section, name)], where
        if "." not in name:
            code = _code_default(MODELS[section], name)
            assert code is None or isinstance(code, list | BaseModel), where
        return
    model = MODELS[section]
    if section == "web" and name.startswith("tokens.*."):
        model, name = WebSettings.model_fields["tokens"].annotation.__args__[1], name[9:]  # type: ignore[union-attr]
    assert name in model.model_fields, f"{where}: no such field in {model.__name__}"
    code = _normal(_code_default(model, name))
    assert code == _normal(_doc_value(default)), f"{where}: docs say {default!r}, code {code!r}"


@pytest.mark.parametrize("section", sorted(MODELS))
def test_every_config_field_is_documented(section: str) -> None:
    documented = {name.split(".")[0] for sec, name, _, _ in ROWS if sec == section}
    missing = set(MODELS[section].model_fields) - documented
    assert not missing, f"docs/operations.md has no row for {section}.{sorted(missing)}"


# ---- command lines ---------------------------------------------------------------------------

ROOT_COMMAND = typer.main.get_command(app)


DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


def command_lines() -> list[tuple[str, str]]:
    """(where, command line) for every ``callward ...`` code span in README.md and docs/*.md
    (a span may wrap across lines; ``\\|`` in tables is an alternative)."""
    out: list[tuple[str, str]] = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8").replace("\\|", "|")
        for match in re.finditer(r"`(callward [^`]+)`", text):
            number = text.count("\n", 0, match.start()) + 1
            out.append((f"{path.name}:{number}", " ".join(match.group(1).split())))
    return out


def _resolve(words: list[str]) -> list[tuple[list[str], Command]]:
    """Walk subcommand words (``a|b`` and ``a/b`` are alternatives) down the command tree."""
    ctx = Context(ROOT_COMMAND)
    paths: list[tuple[list[str], Command]] = [([], ROOT_COMMAND)]
    for word in words:
        if not re.fullmatch(r"[a-z][a-z0-9-]*(?:[|/][a-z][a-z0-9-]*)*", word):
            break
        if not all(_is_group(cmd) for _, cmd in paths):
            break
        nxt = []
        for path, group in paths:
            for alt in re.split(r"[|/]", word):
                sub = group.get_command(ctx, alt)  # type: ignore[attr-defined]
                assert sub is not None, f"`callward {' '.join([*path, alt])}` does not exist"
                nxt.append(([*path, alt], sub))
        paths = nxt
    return paths


def _is_group(cmd: Command) -> bool:
    return hasattr(cmd, "get_command") and hasattr(cmd, "list_commands")


def _options(cmd: Command) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}


LINES = command_lines()


def test_the_docs_name_commands() -> None:
    assert len(LINES) > 30


@pytest.mark.parametrize(("where", "line"), LINES, ids=[w for w, _ in LINES])
def test_documented_command_line_exists(where: str, line: str) -> None:
    words = line.split()[1:]
    for path, cmd in _resolve(words):
        wanted = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", line))
        unknown = wanted - _options(cmd) - {"--help"}
        assert not unknown, f"{where}: `callward {' '.join(path)}` has no {sorted(unknown)}"


def test_make_bench_runs_every_benchmark_the_figures_name() -> None:
    """docs/benchmarks.md names a script per figure; ``make bench`` (benchmarks/run_all.py)
    must run each of them, so every published figure can be reproduced by one command."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    assert spec is not None and spec.loader is not None
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^#+ .*`benchmarks/(\w+)\.py", text, flags=re.M))
    assert len(named) > 10
    for name in sorted(named):
        assert (ROOT / "benchmarks" / f"{name}.py").exists(), f"benchmarks/{name}.py is gone"
    missing = named - set(run_all.SCRIPTS)
    assert not missing, f"benchmarks/run_all.py does not run {sorted(missing)}"


def _code_metrics() -> set[str]:
    """Prometheus series names the code registers (a Counter is exposed as ``<name>_total``)."""
    names: set[str] = set()
    for path in (ROOT / "src" / "callward").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for kind, name in re.findall(r"\b(Counter|Gauge|Histogram)\(\s*\"(callward_\w+)\"", text):
            names.add(f"{name}_total" if kind == "Counter" else name)
    return names


def test_metrics_in_the_docs_are_the_ones_exposed() -> None:
    code = _code_metrics()
    assert len(code) > 10
    text = OPERATIONS.read_text(encoding="utf-8")
    documented = set(re.findall(r"`(callward_(?:edge|web)_\w+)", text))
    assert code - documented == set(), "metrics missing from docs/operations.md"
    everywhere = {
        m
        for path in DOCS
        for m in re.findall(r"`(callward_(?:edge|web)_\w+)", path.read_text(encoding="utf-8"))
    }
    suffixes = ("", "_bucket", "_sum", "_count")
    phantom = {m for m in everywhere if not any(m.removesuffix(x) in code for x in suffixes)}
    assert not phantom, "the docs name metrics nothing exposes"


# `section.word` spans that are not config keys: a log event and a file name.
NOT_KEYS = {"edge.auth_off", "identity.sqlite"}


def test_config_keys_named_in_prose_exist() -> None:
    """`edge.max_pending` and the like anywhere in the docs name a real field (or a module or
    package attribute, e.g. `quality.plot`)."""
    import importlib.util

    sections = "|".join(m for m in MODELS if m != "web")
    wrong = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(rf"`({sections})\.(\w+)", text):
            section, name = match.groups()
            if name in ("py", "md", "yaml") or f"{section}.{name}" in NOT_KEYS:
                continue  # a file name (`security.py`), not a key
            if name in MODELS[section].model_fields:
                continue
            if importlib.util.find_spec(f"callward.{section}") is not None:
                package = importlib.import_module(f"callward.{section}")
                if hasattr(package, name) or importlib.util.find_spec(
                    package.__name__ + "." + name
                ):
                    continue
            wrong.append(f"{path.name}:{text.count(chr(10), 0, match.start()) + 1}: {match[0]}`")
    assert not wrong, f"not a config field: {wrong}"
