"""``callward plan``: bytes per minute of call for a media/transport choice, the idle cost of
staying reachable, and (``--verify CAPTURE``) the planner against a capture of a real call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from callward.errors import CallwardError

if TYPE_CHECKING:
    from callward.usage import MediaChoice


def _verify(capture: Path, choice: MediaChoice) -> dict[str, Any]:
    """Each RTP direction of the capture against the planner for that direction's own length.
    The capture gives packets and bytes; the planner gets the settings (and, with DTX, the
    voice activity the user states): it never sees the byte counts."""
    from callward.usage import plan_call
    from callward.usage.wire import measure_capture

    wire = measure_capture(capture)
    rows: list[dict[str, Any]] = []
    for flow in wire.of("rtp"):
        if flow.packets < 2:
            continue
        seconds = flow.seconds + choice.ptime_ms / 1000.0
        plan = plan_call(choice, duration_s=seconds)
        planned = plan.media_bytes_per_minute
        measured = flow.bytes_per_minute(seconds)
        host, port = flow.src.rsplit(":", 1)
        rtcp_srcs = {flow.src, f"{host}:{int(port) + 1}"}  # rtcp-mux, or RTP port + 1
        rtcp_bytes = sum(f.ip_bytes for f in wire.of("rtcp") if f.src in rtcp_srcs)
        rows.append({
            **flow.as_dict(),
            "bytes_per_minute": round(measured),
            "planned_bytes_per_minute": round(planned),
            "ratio": round(measured / planned, 4) if planned else None,
            "rtcp_bytes_per_minute": round(rtcp_bytes * 60 / seconds),
            "planned_rtcp_bytes_per_minute": round(plan.rtcp_bytes_per_minute),
        })  # fmt: skip
    return {
        "capture": str(capture),
        "directions": rows,
        "sip_bytes": wire.total("sip"),
        "stun_bytes": wire.total("stun"),
        "within_1pct": bool(rows) and all(abs(r["ratio"] - 1) <= 0.01 for r in rows),
    }


def plan(
    codec: str = typer.Option("pcmu", help="pcmu, pcma, g729, g722, opus, amr-wb"),
    ptime: int = typer.Option(20, help="packetization time, ms"),
    bitrate: int | None = typer.Option(None, help="codec bit rate, bit/s (Opus)"),
    srtp: str = typer.Option("AES_CM_128_HMAC_SHA1_80", help="SRTP suite or 'none'"),
    ipv6: bool = typer.Option(False, "--ipv6", help="IPv6 headers (40 bytes)"),
    rohc: bool = typer.Option(False, "--rohc", help="ROHC header compression on the radio link"),
    rohc_bytes: float = typer.Option(4.0, help="mean ROHC header size, bytes"),
    activity: float | None = typer.Option(
        None, help="voice activity with VAD/DTX, 0..1 (plan: 1.0, --optimise: 0.5)"
    ),
    spurts: float = typer.Option(15.0, help="talk spurts per minute (DTX gaps to bridge)"),
    fec: bool = typer.Option(True, "--fec/--no-fec", help="Opus in-band FEC"),
    vbr: bool = typer.Option(False, "--vbr", help="Opus variable bit rate (default CBR)"),
    transport: str = typer.Option("udp", help="udp, turn-channel or turn-send"),
    rtcp_reduced: bool = typer.Option(False, "--rtcp-reduced", help="RFC 5506 reduced RTCP"),
    no_rtcp: bool = typer.Option(False, "--no-rtcp", help="price media only"),
    seconds: float = typer.Option(60.0, "--seconds", help="call length the RTCP count uses"),
    keepalive: str = typer.Option("crlf", help="idle keep-alive: crlf, stun, register, options"),
    keepalive_interval: int = typer.Option(120, help="keep-alive interval, s"),
    keepalive_transport: str | None = typer.Option(None, help="udp, tcp or tls"),
    verify: Path | None = typer.Option(None, "--verify", help="pcap/pcapng of a call"),
    optimise: bool = typer.Option(
        False, "--optimise", "--optimize", help="choose codec/bitrate/ptime/FEC: MOS per byte"
    ),
    loss: float = typer.Option(0.0, "--loss", help="--optimise: packet loss, percent"),
    burst: float = typer.Option(1.0, "--burst", help="--optimise: G.107 BurstR (1 = random)"),
    rtt: float = typer.Option(100.0, "--rtt", help="--optimise: round-trip time, ms"),
    jitter: float = typer.Option(20.0, "--jitter", help="--optimise: jitter, ms"),
    min_mos: float = typer.Option(4.0, "--min-mos", help="--optimise: MOS to reach"),
    unmetered: bool = typer.Option(False, "--unmetered", help="--optimise: best MOS wins"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Estimate bytes per minute (one direction) and the idle keep-alive cost."""
    # --verify CAPTURE: each RTP direction of a capture against the plan; exit 1 when one is
    # off by more than 1 %.
    from callward.usage import MediaChoice, plan_call, plan_keepalive

    if optimise:
        _optimise(loss, burst, rtt, jitter, 0.5 if activity is None else activity, min_mos,
                  not unmetered, ipv6, rohc, rohc_bytes, srtp, as_json)  # fmt: skip
        return
    activity = 1.0 if activity is None else activity
    try:
        choice = MediaChoice(
            codec=codec.lower(), ptime_ms=ptime, bitrate=bitrate, srtp=srtp,
            ip_version=6 if ipv6 else 4, rohc=rohc, rohc_header_bytes=rohc_bytes,
            voice_activity=activity, talkspurts_per_minute=spurts, fec=fec, cbr=not vbr,
            transport=transport, rtcp_reduced=rtcp_reduced, rtcp=not no_rtcp,
        )  # fmt: skip
        idle = plan_keepalive(keepalive, keepalive_interval, transport=keepalive_transport)
        call = plan_call(choice, duration_s=seconds)
        checked = _verify(verify, choice) if verify is not None else None
    except CallwardError as exc:
        typer.echo(f"callward: {exc}", err=True)
        raise typer.Exit(2) from None
    result = call.as_dict()
    result["keepalive"] = idle.as_dict()
    if checked is not None:
        result["verify"] = checked
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _render(result, choice, codec, ptime, srtp)
    if checked is not None and not checked["within_1pct"]:
        raise typer.Exit(1)


def _optimise(
    loss: float, burst: float, rtt: float, jitter: float, activity: float, min_mos: float,
    metered: bool, ipv6: bool, rohc: bool, rohc_bytes: float, srtp: str, as_json: bool,
) -> None:  # fmt: skip
    """``--optimise``: exit 0 with the choice, 1 when no setting reaches ``--min-mos``."""
    from callward.usage.optimise import Network, optimise

    try:
        net = Network(loss_pct=loss, burst_r=burst, rtt_ms=rtt, jitter_ms=jitter,
                      voice_activity=activity, ip_version=6 if ipv6 else 4, metered=metered,
                      srtp=srtp, rohc=rohc, rohc_header_bytes=rohc_bytes)  # fmt: skip
        best = optimise(net, min_mos)
    except CallwardError as exc:
        typer.echo(f"callward: {exc}", err=True)
        raise typer.Exit(2) from None
    doc = best.as_dict()
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
    else:
        s, b = best.best.setting, best.best
        typer.echo(
            f"{s.codec} {s.bitrate / 1000:g} kb/s, ptime {s.ptime_ms} ms, "
            f"FEC {'on' if s.fec else 'off'}, DTX on: MOS {b.mos:.3f} ({b.model}), "
            f"{round(2 * b.bytes_per_minute):,} B/min both directions"
            + ("" if best.meets_target else f" - no setting reaches MOS {min_mos}")
        )
    if not best.meets_target:
        raise typer.Exit(1)


def _render(result: dict[str, Any], choice: MediaChoice, codec: str, ptime: int, srtp: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{codec} {ptime} ms, {srtp}, IPv{choice.ip_version}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key in ("packets_per_second", "packet_bytes", "kbit_per_second", "bytes_per_minute",
                "rtcp_interval_s"):  # fmt: skip
        table.add_row(key.replace("_", " "), f"{result[key]:,}")
    breakdown = result["breakdown_bytes_per_minute"]
    assert isinstance(breakdown, dict)
    for key, value in breakdown.items():
        table.add_row(f"  {key.replace('_', ' ')} /min", f"{value:,}")
    table.add_row("idle keep-alive /hour", f"{result['keepalive']['bytes_per_hour']:,}")
    console = Console()
    console.print(table)
    checked = result.get("verify")
    if checked:
        v = Table(title=f"capture {checked['capture']}")
        for col in ("src → dst", "packets", "B/min", "planner", "ratio", "RTCP B/min"):
            v.add_column(col, justify="right" if col != "src → dst" else "left")
        for r in checked["directions"]:
            v.add_row(f"{r['src']} → {r['dst']}", str(r["packets"]), f"{r['bytes_per_minute']:,}",
                      f"{r['planned_bytes_per_minute']:,}", f"{r['ratio']}",
                      f"{r['rtcp_bytes_per_minute']:,}")  # fmt: skip
        console.print(v)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
