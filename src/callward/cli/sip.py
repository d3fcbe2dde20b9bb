"""``callward sip parse FILE... [--json]``: inspect SIP messages the way the edge parses them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from callward.errors import SipParseError
from callward.sip import Request, Response, parse_message

sip_app = typer.Typer(help="SIP message tools.", no_args_is_help=True)


def message_to_dict(msg: Request | Response) -> dict[str, Any]:
    """The documented JSON shape: canonical header names → values in order (list headers split)."""
    headers: dict[str, list[str]] = {}
    for name, _ in msg.headers:
        if name not in headers:
            headers[name] = msg.headers.values(name)
    if isinstance(msg, Request):
        return {
            "kind": "request",
            "method": msg.method,
            "uri": str(msg.uri),
            "status": None,
            "reason": None,
            "headers": headers,
            "body_length": len(msg.body),
        }
    return {
        "kind": "response",
        "method": msg.cseq.method if "CSeq" in msg.headers else None,
        "uri": None,
        "status": msg.status,
        "reason": msg.reason,
        "headers": headers,
        "body_length": len(msg.body),
    }


@sip_app.command("parse")
def parse_cmd(
    files: list[Path] = typer.Argument(..., help="Files holding one SIP message each."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (a list when several files)."),
    lenient: bool = typer.Option(
        False, "--lenient", help="Accept bare LF, latin-1, missing headers."
    ),
) -> None:
    """Parse SIP messages; exit 2 with one line on the first malformed or unreadable file."""
    results = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            typer.echo(f"callward: {path}: cannot read: {exc.strerror}", err=True)
            raise typer.Exit(2) from None
        try:
            msg = parse_message(data, strict=not lenient)
        except SipParseError as exc:
            typer.echo(f"callward: {path}: malformed SIP message: {exc}", err=True)
            raise typer.Exit(2) from None
        results.append(message_to_dict(msg))
    if as_json:
        typer.echo(
            json.dumps(results[0] if len(results) == 1 else results, indent=2, ensure_ascii=False)
        )
        return
    for path, item in zip(files, results, strict=True):
        first = (
            f"{item['method']} {item['uri']}"
            if item["kind"] == "request"
            else f"{item['status']} {item['reason']}"
        )
        names = len(item["headers"])
        typer.echo(
            f"{path}: {item['kind']} {first} ({names} headers, {item['body_length']} body bytes)"
        )
        for name, values in item["headers"].items():
            for value in values:
                typer.echo(f"  {name}: {value}")


def register(app: typer.Typer) -> None:
    app.add_typer(sip_app, name="sip")
