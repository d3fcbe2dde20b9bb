"""The one ``callward`` command, loaded lazily: a command's module is imported only when that
command runs, so ``callward --help`` and ``callward version`` import typer and nothing else.

Exit codes: 0 ok, 1 a finding (a check failed), 2 bad input or usage (one line on stderr).

Adding a command (the pattern every ``callward/cli/*.py`` module follows)
-------------------------------------------------------------------------
1. Write ``callward/cli/<area>.py`` with ``register(app: typer.Typer) -> None`` that attaches
   the command(s): ``@app.command("name")`` for a command, ``app.add_typer(sub, name="name")``
   for a group. At module top import only the standard library, ``typer``,
   ``callward.cli.exits`` and ``callward.errors``; import everything else (numpy, rich, the
   service packages, fastapi, duckdb, ...) *inside* the command function, so one module can
   hold several commands without each paying for the others' dependencies.
2. Add one line per top-level name to ``COMMANDS`` below: ``"name": ("callward.cli.<area>",
   "one-line help")``. ``callward --help`` prints that help without importing the module;
   ``callward name ...`` imports just that module and calls its ``register``.
3. A third-party package that only some deployments need belongs to an optional extra in
   pyproject.toml (``callward[web]``, ``[cold]``, ``[scale]``, ``[plot]``) and to ``EXTRAS``
   below: when it is missing, the command exits 2 with one line naming the
   ``pip install 'callward[...]'`` that fixes it, instead of a traceback.

``tests/cli/test_lazy.py`` checks each entry (the module registers exactly those names with
that help), that no cli module imports an optional extra at import time, and that
``version``/``--help`` load no heavy dependency.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperCommand, TyperGroup

from callward.cli.exits import fail
from callward.errors import CallwardError

if TYPE_CHECKING:
    from typer._click import Command, Context, HelpFormatter

__all__ = ["COMMANDS", "EXTRAS", "app", "fail", "main", "missing_extra"]

# Top-level command name → (module whose register() adds it, one-line help for --help).
COMMANDS: dict[str, tuple[str, str]] = {
    "analyze": (
        "callward.cli.quality",
        "Streams, loss, jitter, MOS per playout model and call root causes of a capture.",
    ),
    "cdr": (
        "callward.cli.records",
        "Call detail records: query, export, purge, holds, audit.",
    ),
    "demo": (
        "callward.cli.demo",
        "Two phones register with an edge, call through it with SRTP under loss/jitter, "
        "and the CDR, audit entry and data usage are shown.",
    ),
    "edge": (
        "callward.cli.edge",
        "SIP edge: proxy + registrar (RFC 3261 §10, §16).",
    ),
    "identity": (
        "callward.cli.identity",
        "Subscriber directory: OAuth subject <-> SIP AOR <-> MSISDN.",
    ),
    "mos": (
        "callward.cli.quality",
        "ITU-T G.107 E-model: R and MOS for a codec, loss, delay and burstiness.",
    ),
    "phone": (
        "callward.cli.phone",
        "A SIP phone: register, call, answer.",
    ),
    "plan": (
        "callward.cli.usage",
        "Estimate bytes per minute (one direction) and the idle keep-alive cost.",
    ),
    "privacy": (
        "callward.cli.privacy",
        "Redaction, pseudonyms, erasure across every store, key backups, retention.",
    ),
    "relay": (
        "callward.cli.media",
        "The media relay: an ng (rtpengine protocol) daemon, or one call's two legs.",
    ),
    "serve": (
        "callward.cli.serve",
        "Run edge + relay + CDR writer + web in one process.",
    ),
    "sip": (
        "callward.cli.sip",
        "SIP message tools.",
    ),
    "web": (
        "callward.cli.web",
        "Serve the dashboard (/) and the REST API (/api/v1, OpenAPI at /api/docs).",
    ),
}

# Importable top-level package → the pyproject extra that installs it.
EXTRAS: dict[str, str] = {
    "fastapi": "web",
    "starlette": "web",
    "uvicorn": "web",
    "jinja2": "web",
    "duckdb": "cold",
    "pyarrow": "cold",
    "nats": "scale",
    "psycopg": "scale",
    "redis": "scale",
    "matplotlib": "plot",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The install hint for an import that failed because an optional extra is absent."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return f"{top} is not installed; install it with: pip install 'callward[{extra}]'"


_loaded: dict[str, dict[str, Command]] = {}


def _load(module: str) -> dict[str, Command]:
    """Import one cli module and turn what its register() adds into click commands."""
    if module not in _loaded:
        sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        importlib.import_module(module).register(sub)
        sub.callback()(lambda: None)  # always a group, even for a module with one command
        group = typer.main.get_group(sub)
        for cmd in group.commands.values():
            for param in cmd.params:
                _plain_coercion(param)
        _loaded[module] = dict(group.commands)
    return _loaded[module]


def _plain_coercion(param: Any) -> None:
    """Coerce plain ``str``/``Path``/``float`` parameters without pydantic.

    typer builds a pydantic TypeAdapter for every non-bool parameter the first time it parses
    one, which imports pydantic (~0.1 s) into any command that has a path, text or number
    option. A command-line string needs no validation to become a ``str`` or ``Path``, and
    ``float()`` is the number check, so such parameters (no path checks, range, parser, click
    type or callback) get a direct coercion; anything else still goes through typer's own.
    """
    td = getattr(param, "type_descriptor", None)
    if td is None or td.annotation not in (str, Path, float) or td.file_annotation is not None:
        return
    pi = td.parameter_info
    checks = ("exists", "writable", "resolve_path", "allow_dash", "path_type", "parser",
              "click_type", "callback", "min", "max")  # fmt: skip
    if any(getattr(pi, c, None) for c in checks) or getattr(param, "_runtime_param", True):
        return
    if not (getattr(pi, "file_okay", True) and getattr(pi, "dir_okay", True)):
        return
    from typer._coercion import RuntimeParam, build_runtime_param

    desc = td

    class _Plain(RuntimeParam):
        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if self.annotation is float and isinstance(value, str | int | float):
                try:
                    return float(value)
                except ValueError:  # pydantic's wording, which typer would have printed
                    raise typer.BadParameter(
                        "Input should be a valid number, unable to parse string as a number",
                        ctx=ctx,
                        param=param,
                    ) from None
            if isinstance(value, str | self.annotation):
                return self.annotation(value)
            return build_runtime_param(desc)._coerce_value(value, param=param, ctx=ctx)

    param._runtime_param = _Plain(parameter_info=pi, annotation=td.annotation)


def _help_default_false(opt: Any) -> Any:
    # typer leaves --help's default at None, and coercing None imports pydantic (~100 ms); a
    # bool default takes typer's no-coercion path for bool flags.
    if opt is not None and opt.default is None:
        opt.default = False
    return opt


class _FastCommand(TyperCommand):
    """An eager command whose --help does not load pydantic."""

    def get_help_option(self, ctx: Context) -> Any:
        return _help_default_false(super().get_help_option(ctx))


class LazyGroup(TyperGroup):
    """The root group: eager commands (``version``) plus ``COMMANDS`` imported on first use."""

    def get_help_option(self, ctx: Context) -> Any:
        return _help_default_false(super().get_help_option(ctx))

    def list_commands(self, ctx: Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        cmd = self.commands.get(cmd_name)
        if cmd is not None or cmd_name not in COMMANDS:
            return cmd
        module = COMMANDS[cmd_name][0]
        try:
            cmd = _load(module).get(cmd_name)
            if cmd is not None:
                _help_default_false(cmd.get_help_option(ctx))  # its --help: no pydantic either
            return cmd
        except ModuleNotFoundError as exc:
            hint = missing_extra(exc)
            if hint is None:
                raise
            typer.echo(f"callward {cmd_name}: {hint}", err=True)
            raise typer.Exit(2) from None

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        name = args[0]
        cmd = self.get_command(ctx, name)
        if cmd is None and not ctx.resilient_parsing:
            if name.startswith("-"):
                self.parse_args(ctx, args)  # an unknown option: click's own message
            close = difflib.get_close_matches(name, self.list_commands(ctx))
            hint = f" Did you mean {', '.join(repr(m) for m in close)}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint}")
        return (name if cmd is not None else None), cmd, args[1:]

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        # The help column comes from COMMANDS, so --help imports no command module.
        rows = [(n, c.get_short_help_str(80)) for n, c in self.commands.items() if not c.hidden]
        rows += [(n, h) for n, (_, h) in COMMANDS.items() if n not in self.commands]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:  # a command imported an absent optional extra
            hint = missing_extra(exc)
            if hint is None:
                raise
            typer.echo(f"callward: {hint}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="callward",
    cls=LazyGroup,
    help="callward: a mobile-VoIP platform that treats data as a first-class concern.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help at the root: rich costs more than the 150 ms budget
)


@app.callback()
def _root() -> None:
    """callward: a mobile-VoIP platform that treats data as a first-class concern."""


@app.command(cls=_FastCommand)
def version() -> None:
    """Print callward's version."""
    from callward import __version__

    typer.echo(__version__)


def main() -> None:
    """Console-script entry: map our errors to exit 2 with one line, never a traceback."""
    try:
        app()
    except CallwardError as exc:
        typer.echo(f"callward: {exc}", err=True)
        sys.exit(2)
