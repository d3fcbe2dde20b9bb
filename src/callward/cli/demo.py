"""``callward demo``: a real call between two user agents over loopback, drawn as a ladder.

The demo is a list of steps (async functions over one :class:`Demo`), so later capabilities
(edge, registration, SRTP, quality, CDRs) are added by writing a step and appending it to
:data:`DEFAULT_STEPS`. Every SIP message is observed on the wire through transport taps, so the
ladder and the byte counts are what was really sent, not what we meant to send.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from callward.sip.transport import WireEvent
from callward.ua.media import RtpEndpoint
from callward.ua.phone import Call, Phone
from callward.ua.sdp_offer import audio_endpoint

__all__ = ["DEFAULT_STEPS", "Demo", "LadderEntry", "register", "run_demo"]

DEMO_TIMEOUT = 15.0  # seconds; the whole demo must finish well under 20 s


@dataclass(frozen=True, slots=True)
class LadderEntry:
    """One arrow of the ladder: ``t`` in seconds since the demo started."""

    t: float
    src: str
    dst: str
    label: str
    size: int
    transport: str


@dataclass
class Demo:
    """State shared by the steps: participants, what went over the wire, summary rows."""

    transport: str = "udp"
    rtp_packets: int = 25
    lanes: list[str] = field(default_factory=list)
    phones: dict[str, Phone] = field(default_factory=dict)
    rtp: dict[str, RtpEndpoint] = field(default_factory=dict)
    calls: dict[str, Call] = field(default_factory=dict)
    ladder: list[LadderEntry] = field(default_factory=list)
    summary: list[tuple[str, str]] = field(default_factory=list)
    ok: bool = True
    failure: str = ""
    t0: float = 0.0
    _received: dict[bytes, list[str]] = field(default_factory=dict)
    _sent: list[tuple[float, str, WireEvent]] = field(default_factory=list)

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    def add_lane(self, name: str) -> None:
        if name not in self.lanes:
            self.lanes.append(name)

    def watch(self, name: str, phone: Phone) -> None:
        """Record what ``phone`` sends and receives; the ladder pairs them up later."""

        def tap(ev: WireEvent) -> None:
            if ev.direction == "out":
                self._sent.append((self.now(), name, ev))
            else:
                self._received.setdefault(ev.data, []).append(name)

        phone.transport.add_tap(tap)

    def note(self, src: str, dst: str, label: str, size: int = 0, kind: str = "rtp") -> None:
        """Add a non-SIP row (media, events) to the ladder."""
        self.ladder.append(LadderEntry(self.now(), src, dst, label, size, kind))

    def fail(self, why: str) -> None:
        self.ok = False
        self.failure = self.failure or why

    def build_ladder(self) -> list[LadderEntry]:
        """Merge the SIP messages seen on the wire with the notes, in time order."""
        for t, src, ev in self._sent:
            receivers = self._received.get(ev.data)
            dst = receivers.pop(0) if receivers else f"{ev.remote[0]}:{ev.remote[1]}"
            self.add_lane(dst)
            self.ladder.append(
                LadderEntry(t, src, dst, _label(ev.data), len(ev.data), ev.transport)
            )
        self._sent.clear()
        self.ladder.sort(key=lambda e: e.t)
        return self.ladder


def _label(data: bytes) -> str:
    first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    text = first[8:] if first.startswith("SIP/2.0 ") else first.split(" ", 1)[0]
    _head, _, body = data.partition(b"\r\n\r\n")
    return f"{text} (SDP)" if body else text


Step = Callable[[Demo], Awaitable[None]]


# ----------------------------------------------------------------------------- steps
async def start_phones(demo: Demo) -> None:
    """Two phones on ephemeral 127.0.0.1 ports, each with an RTP port for its SDP."""
    for name, auto in (("alice", False), ("bob", True)):
        phone = await Phone.start(name, transport=demo.transport, auto_answer=auto, node=name)
        rtp = await RtpEndpoint.open("127.0.0.1")
        phone.media_port = rtp.local_addr[1]
        demo.phones[name], demo.rtp[name] = phone, rtp
        demo.add_lane(name)
        demo.watch(name, phone)


async def place_call(demo: Demo) -> None:
    """alice INVITEs bob; bob rings and answers; alice ACKs (RFC 3261 §13)."""
    alice, bob = demo.phones["alice"], demo.phones["bob"]
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
    demo.calls["alice"] = call
    if call.status != 200:
        demo.fail(f"call failed with {call.status}")
        return
    (incoming,) = bob.calls.values()
    await incoming.wait_confirmed(5)
    demo.calls["bob"] = incoming
    if call.setup_time is not None:
        demo.summary.append(("call setup (INVITE → 200)", f"{call.setup_time * 1000:.1f} ms"))
    if call.ringing_at is not None:
        pdd = (call.ringing_at - call.started_at) * 1000
        demo.summary.append(("post-dial delay (INVITE → 180)", f"{pdd:.1f} ms"))


async def exchange_media(demo: Demo) -> None:
    """Both sides send paced G.711 RTP to the address the other's SDP gave (RFC 3264)."""
    if "bob" not in demo.calls:
        return
    a_call, b_call = demo.calls["alice"], demo.calls["bob"]
    a_to, b_to = audio_endpoint(a_call.leg.remote_sdp), audio_endpoint(b_call.leg.remote_sdp)
    if a_to is None or b_to is None:
        demo.fail("no usable audio in SDP")
        return
    n = demo.rtp_packets
    pt = a_to.payload_types[0] if a_to.payload_types else 0
    demo.note("alice", "bob", f"RTP PCMU ×{n} ⇄ 20 ms", 0)
    await asyncio.gather(
        demo.rtp["alice"].send_audio((a_to.host, a_to.port), n, pt),
        demo.rtp["bob"].send_audio((b_to.host, b_to.port), n, pt),
    )
    await asyncio.sleep(0.05)  # the last packets in flight on loopback
    a, b = demo.rtp["alice"].counters, demo.rtp["bob"].counters
    demo.summary.append(("RTP alice → bob", f"{b.packets_received}/{a.packets_sent} packets"))
    demo.summary.append(("RTP bob → alice", f"{a.packets_received}/{b.packets_sent} packets"))
    demo.summary.append(("RTP bytes (both ways)", f"{a.bytes_sent + b.bytes_sent}"))
    if b.packets_received < a.packets_sent or a.packets_received < b.packets_sent:
        demo.fail("RTP packets lost on loopback")


async def hang_up(demo: Demo) -> None:
    """alice sends BYE; bob answers 200 (RFC 3261 §15)."""
    call = demo.calls.get("alice")
    if call is None or "bob" not in demo.calls:
        return
    status = await call.hangup()
    if status != 200:
        demo.fail(f"BYE answered with {status}")
    await demo.calls["bob"].wait_ended(5)


DEFAULT_STEPS: tuple[Step, ...] = (start_phones, place_call, exchange_media, hang_up)


async def run_demo(demo: Demo, steps: tuple[Step, ...] = DEFAULT_STEPS) -> Demo:
    """Run ``steps`` in order (bounded by DEMO_TIMEOUT), then close everything."""
    demo.t0 = asyncio.get_running_loop().time()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(DEMO_TIMEOUT):
            for step in steps:
                await step(demo)
                if not demo.ok:
                    break
    except TimeoutError:
        demo.fail(f"demo did not finish within {DEMO_TIMEOUT:.0f} s")
    finally:
        for phone in demo.phones.values():
            await phone.close()
        for rtp in demo.rtp.values():
            rtp.close()
    demo.build_ladder()
    _add_wire_summary(demo)
    demo.summary.append(("demo wall time", f"{time.perf_counter() - started:.2f} s"))
    return demo


def _add_wire_summary(demo: Demo) -> None:
    sip = [e for e in demo.ladder if e.transport != "rtp"]
    demo.summary.insert(0, ("SIP messages", str(len(sip))))
    pairs: dict[tuple[str, str], tuple[int, int]] = {}
    for e in sip:
        n, size = pairs.get((e.src, e.dst), (0, 0))
        pairs[(e.src, e.dst)] = (n + 1, size + e.size)
    for i, ((src, dst), (n, size)) in enumerate(sorted(pairs.items())):
        demo.summary.insert(1 + i, (f"SIP {src} → {dst}", f"{n} messages, {size} bytes"))


# ----------------------------------------------------------------------------- rendering
_GAP = 32  # characters between two lanes
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
        style = "cyan" if e.transport == "rtp" else ("green" if e.src == lanes[0] else "yellow")
        line.append("".join(row).rstrip(), style=style)
        console.print(line, no_wrap=True, crop=False)


def render_summary(demo: Demo, console: Console) -> None:
    table = Table(title="callward demo summary", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in demo.summary:
        table.add_row(key, value)
    table.add_row("result", "[green]ok[/green]" if demo.ok else f"[red]{demo.failure}[/red]")
    console.print(table)


def report_json(demo: Demo) -> dict[str, Any]:
    return {
        "ok": demo.ok,
        "failure": demo.failure or None,
        "transport": demo.transport,
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
        "summary": dict(demo.summary),
    }


def register(app: typer.Typer) -> None:
    """Attach ``callward demo`` to the root app."""

    @app.command("demo")
    def demo_command(
        transport: str = typer.Option("udp", help="SIP transport: udp, tcp or ws"),
        rtp_packets: int = typer.Option(25, min=0, max=500, help="RTP packets each way (20 ms)"),
        json_out: bool = typer.Option(False, "--json", help="print the report as JSON"),
    ) -> None:
        """A UA-to-UA call over loopback (INVITE/180/200/ACK, RTP, BYE) as a ladder diagram."""
        if transport not in ("udp", "tcp", "ws"):
            typer.echo(f"callward: --transport {transport!r}: expected udp, tcp or ws", err=True)
            raise typer.Exit(2)
        demo = asyncio.run(run_demo(Demo(transport=transport, rtp_packets=rtp_packets)))
        if json_out:
            typer.echo(json.dumps(report_json(demo), indent=2))
        else:
            console = Console()
            console.rule(f"callward demo: alice calls bob over {transport.upper()} on 127.0.0.1")
            render_ladder(demo, console)
            render_summary(demo, console)
        if not demo.ok:
            raise typer.Exit(1)
