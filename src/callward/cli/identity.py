"""``callward identity``: the subscriber directory (OAuth subject <-> SIP AOR <-> MSISDN) that
``callward edge`` and ``callward web`` read on every Bearer-authenticated request.

``add``, ``renumber``, ``revoke``/``restore``, ``show`` and ``changes`` (the change log with
versions). A revoke or a renumbering applies to the subscriber's next SIP or phone-API request.
``show``/``changes`` print the subject and AOR, which are personal data: they are for operators.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from callward.cli.exits import fail
from callward.errors import CallwardError

__all__ = ["register"]


def _open(directory: Path | None, config: Path | None):  # type: ignore[no-untyped-def]
    from callward.config import load_config
    from callward.edge.directory import SqliteDirectory

    cfg = load_config(config)
    path = directory or Path(cfg.identity.directory)
    if not path.is_absolute() and directory is None:
        path = Path(cfg.storage.data_dir) / path
    return SqliteDirectory(path)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Subscriber directory: OAuth subject <-> SIP AOR <-> MSISDN.")
    app.add_typer(group, name="identity")
    dir_opt = typer.Option(None, "--directory", help="identity SQLite file (default: config)")
    cfg_opt = typer.Option(None, "--config", help="callward.yaml")

    def run(fn, directory: Path | None, config: Path | None) -> None:  # type: ignore[no-untyped-def]
        try:
            d = _open(directory, config)
            try:
                fn(d)
            finally:
                d.close()
        except CallwardError as exc:
            raise fail(str(exc)) from None

    @group.command("add")
    def add(
        subject: str = typer.Argument(..., help="the OAuth 'sub' at the issuer"),
        aor: str = typer.Argument(..., help="user@domain"),
        msisdn: str | None = typer.Option(None, "--msisdn", help="E.164, e.g. +14155550100"),
        tenant: str = typer.Option("default", "--tenant"),
        directory: Path | None = dir_opt,
        config: Path | None = cfg_opt,
    ) -> None:
        """Add or replace the mapping of one subject."""
        from callward.edge.directory import Identity

        run(lambda d: typer.echo(f"version {d.put(Identity(subject, aor, msisdn, tenant))}"),
            directory, config)  # fmt: skip

    @group.command("renumber")
    def renumber(
        subject: str = typer.Argument(...),
        msisdn: str = typer.Argument(..., help="new E.164 number, or '-' for none"),
        directory: Path | None = dir_opt,
        config: Path | None = cfg_opt,
    ) -> None:
        """Give a subject a new MSISDN (effective on its next request)."""
        number = None if msisdn == "-" else msisdn
        run(lambda d: typer.echo(f"version {d.renumber(subject, number)}"), directory, config)

    @group.command("revoke")
    def revoke(
        subject: str = typer.Argument(...),
        directory: Path | None = dir_opt,
        config: Path | None = cfg_opt,
    ) -> None:
        """Refuse every request of a subject from now on (SIP 403, phone API 401)."""
        run(lambda d: typer.echo(f"version {d.revoke(subject)}"), directory, config)

    @group.command("restore")
    def restore(
        subject: str = typer.Argument(...),
        directory: Path | None = dir_opt,
        config: Path | None = cfg_opt,
    ) -> None:
        """Undo a revoke."""
        run(lambda d: typer.echo(f"version {d.revoke(subject, revoked=False)}"), directory, config)

    @group.command("show")
    def show(
        subject: str = typer.Argument(...),
        directory: Path | None = dir_opt,
        config: Path | None = cfg_opt,
    ) -> None:
        """Print one subject's mapping as JSON (exit 1 when unknown)."""

        def _show(d) -> None:  # type: ignore[no-untyped-def]
            ident = d.by_subject(subject)
            if ident is None:
                typer.echo(f"callward identity: no subject {subject[:60]!r}", err=True)
                raise typer.Exit(1)
            typer.echo(json.dumps({"subject": ident.subject, "aor": ident.aor,
                                   "msisdn": ident.msisdn, "tenant": ident.tenant,
                                   "revoked": ident.revoked}))  # fmt: skip

        run(_show, directory, config)

    @group.command("changes")
    def changes(
        since: int = typer.Option(0, "--since", min=0, help="print changes after this version"),
        directory: Path | None = dir_opt,
        config: Path | None = cfg_opt,
    ) -> None:
        """The change log (one JSON object a line)."""

        def _changes(d) -> None:  # type: ignore[no-untyped-def]
            for c in d.changes_since(since):
                typer.echo(json.dumps({"version": c.version, "subject": c.subject,
                                       "kind": c.kind, "at": c.at}))  # fmt: skip

        run(_changes, directory, config)
