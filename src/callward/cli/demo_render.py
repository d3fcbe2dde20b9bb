"""Rendering of a finished ``callward demo`` run: the ladder and summary tables for a terminal
(80 columns: three lanes and every table fit) and the JSON report for ``--json``.

Kept apart from :mod:`callward.cli.demo` so the steps read as the call they make; nothing
here shows a subscriber number in clear (the report holds masked numbers and pseudonyms).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from callward.cli.demo import Demo

__all__ = ["render_ladder", "render_summary", "report_json"]

_GAP = 26  # characters between two lanes (three lanes fit 80 columns)
_STAMP = 11  # width of the time column


def render_ladder(demo: Demo, console: Console) -> None:
    """One row per message: time since start, then an arrow between the two lanes."""
    lanes = demo.lanes
    pos = {name: 6 + i * _GAP for i, name in enumerate(lanes)}
    width = 6 + (len(lanes) - 1) * _GAP + 7
    header = [" "] * width
    for name, x in pos.items():
        start = max(0, x - len(name) // 2)
        header[start : start + len(name)] = list(name)
    console.print(Text(" " * _STAMP + "".join(header).rstrip(), style="bold"))
    colors = {lanes[0]: "green"} if lanes else {}
    for e in demo.ladder:
        row = [" "] * width
        for x in pos.values():
            row[x] = "│"
        a, b = pos.get(e.src, 0), pos.get(e.dst, 0)
        lo, hi = min(a, b), max(a, b)
        span = hi - lo - 1
        if span > 2:
            label = f" {e.label} "
            if len(label) > span - 2:  # keep a dash and the arrow head visible
                label = f" {e.label[: max(0, span - 6)]}… "
            left = (span - len(label)) // 2
            arrow = "─" * left + label + "─" * (span - left - len(label))
            if e.transport == "rtp":
                arrow = "◀" + arrow[1:-1] + "▶"
            elif a < b:
                arrow = arrow[:-1] + "▶"
            else:
                arrow = "◀" + arrow[1:]
            row[lo + 1 : hi] = list(arrow)
        line = Text(f"{e.t * 1000:8.1f} ms".rjust(_STAMP), style="dim")
        style = "cyan" if e.transport == "rtp" else colors.get(e.src, "yellow")
        if e.src == "edge":
            style = "magenta"
        line.append("".join(row).rstrip(), style=style)
        console.print(line, no_wrap=True, crop=False)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=True)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    return table


def render_summary(demo: Demo, console: Console) -> None:
    if demo.legs:
        media = demo.media
        rate = f"{media.get('bitrate', 0) / 1000:g} kb/s"
        console.print(
            f"media: {media.get('codec', '')} {media.get('ptime_ms', '')} ms {rate}"
            f"{' FEC' if media.get('fec') else ''}{' DTX' if media.get('dtx') else ''} "
            f"{media.get('security', '')} {media.get('suite', '')}\n"
            f"impairment on each sender: loss {demo.loss_pct:g} %, "
            f"extra delay U(0, {demo.jitter_ms:g} ms), seed {demo.seed}"
        )
        legs = _table(
            "per leg, as its receiver measured it",
            "leg", "sent", "shim drop", "rcvd", "lost", "jitter", "delay", "MOS",
        )  # fmt: skip
        for leg in demo.legs:
            legs.add_row(
                f"{leg['from']}→{leg['to']}",
                str(leg["sent"]),
                str(leg["dropped_by_shim"]),
                str(leg["received"]),
                f"{leg['lost']} {leg['loss_pct']:.1f}%",
                f"{leg['jitter_ms']:.1f} ms",
                f"{leg['mouth_to_ear_ms']:.0f} ms",
                "n/a" if leg["mos"] is None else f"{leg['mos']:.2f}",
            )
        console.print(legs)
        console.print(
            "  lost, jitter: receiver's RFC 3550 A.3 / A.8 statistics\n"
            "  delay: packetization + one-way transit + adaptive jitter buffer delay\n"
            f"  MOS: {demo.legs[0].get('mos_model', '')} at measured + late loss",
            style="dim",
        )
    if demo.relay:
        _render_relay(demo, console)
    if demo.usage:
        usage = _table(
            "bytes per minute on the wire, per direction", "", "RTP", "planner", "ratio",
            "RTCP", "planner",
        )  # fmt: skip
        for p in demo.usage["per_phone"]:
            usage.add_row(
                f"{p['phone']} sent", f"{p['bytes_per_minute']:,}",
                f"{p['planned_bytes_per_minute']:,}", f"{p['ratio']:.4f}",
                f"{p['rtcp_bytes_per_minute']:,}", f"{p['planned_rtcp_bytes_per_minute']:,}",
            )  # fmt: skip
        console.print(usage)
        both = demo.usage["both_directions_with_rtcp_bytes_per_minute"]
        console.print(f"  both directions, RTP + RTCP: {both:,} bytes/min", style="bold")
        console.print(f"  measured: {demo.usage['method']}", style="dim")
    if demo.cdr:
        c = demo.cdr
        cdr = _table("CDR (read back through the audited query API)", "field", "value")  # fmt: skip
        cdr.add_row("id (Call-ID)", c["id"])
        cdr.add_row("caller / callee", f"{c['caller']} → {c['callee']}")
        cdr.add_row("pseudonyms", f"{c['caller_pseudonym']} → {c['callee_pseudonym']}")
        cdr.add_row("disposition", f"{c['disposition']} ({c['status']})")
        cdr.add_row("duration", f"{c['duration_s']:.2f} s")
        cdr.add_row("codecs", ", ".join(c["codecs"]))
        cdr.add_row(
            "packets / lost / jitter", f"{c['packets']} / {c['lost']} / {c['jitter_ms']} ms"
        )
        cdr.add_row("MOS (min)", str(c["mos_min"]))
        cdr.add_row("flags", ", ".join(c["flags"]) or "none")
        console.print(cdr)
    if demo.audit:
        a = demo.audit
        audit = _table("audit entry for that read", "field", "value")
        audit.add_row("seq / actor / action", f"{a['seq']} / {a['actor']} / {a['action']}")
        audit.add_row("reason", a["reason"])
        audit.add_row("ticket", a["ticket"])
        audit.add_row("records", str(a["records"]))
        audit.add_row("hash", a["hash"][:32] + "…")
        verified = "[green]verified[/green]" if a["verified"] else "[red]BROKEN[/red]"
        audit.add_row("hash chain", verified)
        console.print(audit)
    table = _table("callward demo summary", "what", "value")
    for key, value in demo.summary:
        table.add_row(key, value)
    table.add_row("result", "[green]ok[/green]" if demo.ok else f"[red]{demo.failure}[/red]")
    console.print(table)
    if demo.dashboard:
        console.print(
            f"dashboard: run [bold]{demo.dashboard['command']}[/bold] and open "
            f"{demo.dashboard['url']}"
        )


def _render_relay(demo: Demo, console: Console) -> None:
    r = demo.relay
    table = _table(
        f"media relay {r['node']} (ng query): each direction through it",
        "direction", "phone sent", "relay in", "relay out", "phone rcvd", "",
    )  # fmt: skip
    for d in r["directions"]:
        table.add_row(
            f"{d['from']}→{d['to']}", str(d["phone_sent"]), str(d["relay_in"]),
            str(d["relay_out"]), str(d["phone_received"]),
            "[green]match[/green]" if d["match"] else "[red]differ[/red]",
        )  # fmt: skip
    console.print(table)
    for name, leg in r["legs"].items():
        mos = ", ".join(f"{k} {v:.2f}" for k, v in sorted(leg["mos"].items())) or "n/a"
        console.print(
            f"  relay leg {name}: lost {leg['lost']}, jitter {leg['jitter_ms']:.1f} ms, MOS {mos}",
            style="dim",
        )


def report_json(demo: Demo) -> dict[str, Any]:
    return {
        "ok": demo.ok,
        "failure": demo.failure or None,
        "transport": demo.transport,
        "impairment": {"loss_pct": demo.loss_pct, "jitter_ms": demo.jitter_ms, "seed": demo.seed},
        "lanes": demo.lanes,
        "ladder": [
            {
                "t_ms": round(e.t * 1000, 3),
                "from": e.src,
                "to": e.dst,
                "label": e.label,
                "bytes": e.size,
                "transport": e.transport,
            }
            for e in demo.ladder
        ],
        "media": demo.media,
        "legs": [{k: v for k, v in leg.items() if not k.startswith("_")} for leg in demo.legs],
        "relay": demo.relay or None,
        "usage": demo.usage,
        "cdr": demo.cdr or None,
        "audit": demo.audit or None,
        "dashboard": demo.dashboard or None,
        "summary": dict(demo.summary),
    }
