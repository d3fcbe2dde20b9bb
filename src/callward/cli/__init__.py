"""The one ``callward`` command. Each subcommand group lives in its own module that exposes
``register(app)``; add a module to ``_MODULES`` to plug a new group in.

Exit codes: 0 ok, 1 a finding (a check failed), 2 bad input or usage (one line on stderr).
"""

from __future__ import annotations

import importlib
import sys

import typer

from callward.cli.exits import fail
from callward.errors import CallwardError

__all__ = ["app", "fail", "main"]

app = typer.Typer(
    name="callward",
    help="callward: a mobile-VoIP platform that treats data as a first-class concern.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_MODULES = (
    "callward.cli.demo",
    "callward.cli.sip",
    "callward.cli.edge",
    "callward.cli.media",
    "callward.cli.quality",
    "callward.cli.records",
    "callward.cli.usage",
    "callward.cli.phone",
    "callward.cli.web",
)


@app.callback()
def _root() -> None:
    """callward: a mobile-VoIP platform that treats data as a first-class concern."""


@app.command()
def version() -> None:
    """Print callward's version."""
    from callward import __version__

    typer.echo(__version__)


for _name in _MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Console-script entry: map our errors to exit 2 with one line, never a traceback."""
    try:
        app()
    except CallwardError as exc:
        typer.echo(f"callward: {exc}", err=True)
        sys.exit(2)
