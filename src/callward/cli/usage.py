"""``callward plan``: bytes per minute of call for a media/transport choice."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from callward.errors import ConfigError
from callward.usage import MediaChoice, plan_call, plan_keepalive


def plan(
    codec: str = typer.Option("pcmu", help="pcmu, pcma, g729, g722, opus, amr-wb"),
    ptime: int = typer.Option(20, help="packetization time, ms"),
    bitrate: int | None = typer.Option(None, help="codec bit rate, bit/s (Opus)"),
    srtp: str = typer.Option("AES_CM_128_HMAC_SHA1_80", help="SRTP suite or 'none'"),
    ipv6: bool = typer.Option(False, "--ipv6", help="IPv6 headers (40 bytes)"),
    rohc: bool = typer.Option(False, "--rohc", help="ROHC header compression on the radio link"),
    activity: float = typer.Option(1.0, help="voice activity factor with VAD/DTX, 0..1"),
    keepalive: str = typer.Option("crlf", help="idle keep-alive: crlf, stun or register"),
    keepalive_interval: int = typer.Option(120, help="keep-alive interval, s"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Estimate bytes per minute (one direction) and the idle keep-alive cost."""
    try:
        choice = MediaChoice(
            codec=codec.lower(),
            ptime_ms=ptime,
            bitrate=bitrate,
            srtp=srtp,
            ip_version=6 if ipv6 else 4,
            rohc=rohc,
            voice_activity=activity,
        )
        idle = plan_keepalive(keepalive, keepalive_interval)
    except ConfigError as exc:
        typer.echo(f"callward: {exc}", err=True)
        raise typer.Exit(2) from None
    result = plan_call(choice).as_dict()
    result["keepalive"] = idle.as_dict()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"{codec} {ptime} ms, {srtp}, IPv{choice.ip_version}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key in ("packets_per_second", "packet_bytes", "kbit_per_second", "bytes_per_minute"):
        table.add_row(key.replace("_", " "), f"{result[key]:,}")
    breakdown = result["breakdown_bytes_per_minute"]
    assert isinstance(breakdown, dict)
    for key, value in breakdown.items():
        table.add_row(f"  {key.replace('_', ' ')} /min", f"{value:,}")
    table.add_row("idle keep-alive /hour", f"{idle.as_dict()['bytes_per_hour']:,}")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
