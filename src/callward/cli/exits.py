"""What every command does with bad input: one line on stderr, exit 2 (design.md CLI rules)."""

from __future__ import annotations

import typer

__all__ = ["fail", "hostport"]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line on stderr and return the Exit to raise."""
    typer.echo(f"callward: {message}", err=True)
    return typer.Exit(code)


def hostport(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) from a flag; port 0 allowed (an ephemeral listener)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise fail(f"{what}: expected HOST:PORT, got {text!r}")
    return host, int(port)
