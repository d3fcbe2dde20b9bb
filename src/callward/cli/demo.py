"""``callward demo``: a secured call between two phones through a callward edge, on loopback.

What runs (all in this process, embedded defaults, 127.0.0.1 only):

1. the ``callward serve`` composition from :mod:`callward.runtime`
   (:meth:`~callward.runtime.Runtime.start_node`): the media relay (ng daemon), the edge
   (registrar + proxy, digest auth against a SQLite subscriber table) anchoring every call's
   media in that relay over the ng protocol, and the data layer on the in-process bus: the
   CDR writer (SQLite under ``--data-dir``), quality alerts, privacy services;
2. two phones that REGISTER with digest (RFC 3261 §22), call each other through the edge
   (407 challenge, Record-Route) and hold a conversation (a talk-spurt model, each side
   talking a little under half of the time) as SDES-SRTP (RFC 4568, RFC 3711) voice: Opus or
   G.711 with the demo's ptime/bitrate/FEC/DTX flags, RTCP SR/RR, through a seeded
   loss/jitter shim on each sender. The media goes through the relay, which terminates SRTP
   per leg (each leg has the relay's own keys);
3. a summary: the call flow ladder, per-leg loss/jitter from the receivers' RFC 3550 statistics
   with an E-model MOS, the relay's per-leg counts (ng ``query``) beside the phones', bytes
   per minute per direction captured on the wire with dumpcap (RTP, RTCP and SIP separately)
   against the data-usage planner, the CDR (with the relay's media statistics) read back
   through the audited query API, and the audit chain verified.

The demo is a list of steps (async functions over one :class:`Demo`), so later capabilities
are added by writing a step and appending it to :data:`DEFAULT_STEPS`. Every SIP message is
observed on the wire through transport taps, so the ladder and the byte counts are what was
really sent. Subscriber numbers are fictitious (Ofcom's +44 7700 900xxx drama range) and are
shown masked or pseudonymized only; the ladder shows request methods and status lines only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import typer
from rich.console import Console

from callward.cli.demo_media import exchange_media
from callward.cli.demo_relay import query_relay
from callward.cli.demo_render import render_ladder, render_summary, report_json
from callward.config import CallwardConfig, EdgeConfig, MediaConfig, RecordsConfig, StorageConfig
from callward.errors import CallwardError
from callward.media.voice import VoiceSettings
from callward.records.audit import AuditedReader
from callward.records.rows import CdrQuery
from callward.records.service import CdrSink, Records
from callward.runtime import Runtime, open_runtime
from callward.sip.transport import WireEvent
from callward.ua.impairment import Impairment
from callward.ua.media import RtpEndpoint
from callward.ua.phone import Call, Phone
from callward.ua.sdp_offer import MediaPrefs, prefs_for

__all__ = [
    "DEFAULT_STEPS",
    "Demo",
    "LadderEntry",
    "register",
    "render_ladder",
    "render_summary",
    "report_json",
    "run_demo",
]

#: the relay's media ports: outside the default 20000-29999 and below Linux's ephemeral range
DEMO_MEDIA_PORTS = (30000, 31999)
DEMO_TIMEOUT = 25.0  # seconds, plus the media time: the demo's own steps stay well under it
REALM = "callward.local"
# Fictitious subscribers: numbers from Ofcom's range reserved for drama (07700 900000-900999).
SUBSCRIBERS = {"alice": "+447700900123", "bob": "+447700900456"}


def mask_number(number: str) -> str:
    """Keep the country/network prefix, hide the subscriber part: +44770090****."""
    keep = max(0, len(number) - 4)
    return number[:keep] + "*" * (len(number) - keep)


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
    seconds: float = 3.0
    loss_pct: float = 2.0
    jitter_ms: float = 30.0
    seed: int = 1
    data_dir: Path | None = None
    codec: str = "pcmu"
    ptime_ms: int = 20
    bitrate: int = 16000
    fec: bool = True
    dtx: bool = False
    noise_suppression: bool = False
    capture: bool = True  # measure bytes with dumpcap on lo (falls back to sender counters)
    optimise: bool = False  # choose codec/bitrate/ptime/FEC with usage/optimise.py
    keep_capture: Path | None = None  # copy the media capture (pcapng) here
    min_mos: float = 4.0
    lanes: list[str] = field(default_factory=list)
    phones: dict[str, Phone] = field(default_factory=dict)
    rtp: dict[str, RtpEndpoint] = field(default_factory=dict)
    calls: dict[str, Call] = field(default_factory=dict)
    ladder: list[LadderEntry] = field(default_factory=list)
    summary: list[tuple[str, str]] = field(default_factory=list)
    legs: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    cdr: dict[str, Any] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    media: dict[str, Any] = field(default_factory=dict)
    dashboard: dict[str, str] = field(default_factory=dict)
    ok: bool = True
    failure: str = ""
    t0: float = 0.0
    relay: dict[str, Any] = field(default_factory=dict)
    edge: Any = None
    edge_addr: tuple[str, int] = ("127.0.0.1", 0)
    runtime: Runtime | None = None
    records: Records | None = None
    sink: CdrSink | None = None
    names: dict[tuple[str, int], str] = field(default_factory=dict)
    default_peer: str | None = None
    _received: dict[bytes, list[str]] = field(default_factory=dict)
    _sent: list[tuple[float, str, WireEvent]] = field(default_factory=list)

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    def prefs(self) -> MediaPrefs:
        if self.optimise:
            from callward.usage.optimise import Network, optimise

            # the shim's uniform extra delay U(0, J): jitter J/3, mean one-way J/2
            net = Network(loss_pct=self.loss_pct, rtt_ms=self.jitter_ms,
                          jitter_ms=self.jitter_ms / 3)  # fmt: skip
            s = optimise(net, self.min_mos).best.setting
            return prefs_for(s.codec, s.bitrate, s.ptime_ms, s.fec, dtx=True)
        return MediaPrefs(codecs=(self.codec,), ptime=self.ptime_ms, bitrate=self.bitrate,
                          fec=self.fec, dtx=self.dtx)  # fmt: skip

    def add_lane(self, name: str) -> None:
        if name not in self.lanes:
            self.lanes.append(name)

    def watch(self, name: str, phone: Phone) -> None:
        """Record what ``phone`` sends and receives; the ladder pairs them up later. Messages
        from an unwatched node we know by address (the edge) become arrows on receipt."""

        def tap(ev: WireEvent) -> None:
            if ev.direction == "out":
                self._sent.append((self.now(), name, ev))
                return
            self._received.setdefault(ev.data, []).append(name)
            src = self.peer_name((ev.remote[0], int(ev.remote[1])))
            if src is not None:
                self.ladder.append(
                    LadderEntry(self.now(), src, name, _label(ev.data), len(ev.data), ev.transport)
                )

        phone.transport.add_tap(tap)

    def peer_name(self, addr: tuple[str, int]) -> str | None:
        """The lane of an unwatched sender: by address, else ``default_peer``. Over TCP the
        edge may open a new connection from an ephemeral port, so every address that is not
        one of our phones is the edge (the only other SIP node in the demo)."""
        if addr in self.names:
            return self.names[addr]
        phones = {(p.local_addr[0], int(p.local_addr[1])) for p in self.phones.values()}
        return self.default_peer if addr not in phones else None

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
            remote = (ev.remote[0], int(ev.remote[1]))
            peer = self.peer_name(remote)
            dst = receivers.pop(0) if receivers else peer or f"{remote[0]}:{remote[1]}"
            self.add_lane(dst)
            self.ladder.append(
                LadderEntry(t, src, dst, _label(ev.data), len(ev.data), ev.transport)
            )
        self._sent.clear()
        self.ladder.sort(key=lambda e: e.t)
        return self.ladder


def _label(data: bytes) -> str:
    """Method or status line only: no URI, so no subscriber number reaches the ladder."""
    first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    text = first[8:] if first.startswith("SIP/2.0 ") else first.split(" ", 1)[0]
    _head, _, body = data.partition(b"\r\n\r\n")
    return f"{text} (SDP)" if body else text


Step = Callable[[Demo], Awaitable[None]]


def _free_port(transport: str) -> int:
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- steps
async def start_edge(demo: Demo) -> None:
    """``callward serve``'s node on embedded defaults (runtime.py): the ng relay, the edge
    anchoring media in it (digest auth over a SQLite subscriber table), the CDR writer."""
    from callward.edge.subscribers import SqliteSubscribers, Subscriber

    assert demo.data_dir is not None
    subs_path = demo.data_dir / "demo-subscribers.sqlite"
    subscribers = SqliteSubscribers(subs_path)
    for name, number in SUBSCRIBERS.items():
        subscribers.put(Subscriber.from_password(number, REALM, f"demo-secret-{name}"))
    for _ in range(5):  # another process may take the port between probe and bind
        port = _free_port(demo.transport)
        cfg = CallwardConfig(
            edge=EdgeConfig(
                listen=[f"{demo.transport}:127.0.0.1:{port}"],
                realm=REALM,
                domains=[REALM],
                default_region="GB",  # the demo's subscribers have UK numbers
                subscribers=f"sqlite:{subs_path}",
                auth_secret="demo-" + "k" * 32,
            ),
            media=MediaConfig(
                ng_listen="127.0.0.1:0",
                rtp_port_min=DEMO_MEDIA_PORTS[0],
                rtp_port_max=DEMO_MEDIA_PORTS[1],
            ),
            storage=StorageConfig(data_dir=demo.data_dir),
            records=RecordsConfig(grace_s=0.0),
        )
        runtime = await open_runtime(cfg)
        try:
            _relays, edge = await runtime.start_node(subscribers=subscribers)
        except OSError:
            await runtime.close()
            continue
        demo.runtime, demo.records, demo.sink = runtime, runtime.records, runtime.sink
        demo.edge, demo.edge_addr = edge, ("127.0.0.1", port)
        demo.names[demo.edge_addr] = demo.default_peer = "edge"
        return
    demo.fail("could not bind the edge on 127.0.0.1")


async def start_phones(demo: Demo) -> None:
    """Two phones that require SDES-SRTP, each with an RTP port for its SDP; both REGISTER
    with digest (401 challenge, then credentials, RFC 3261 §22.2)."""
    for name in ("alice", "bob"):
        demo.add_lane(name)
        if name == "alice":
            demo.add_lane("edge")
        phone = await Phone.start(
            SUBSCRIBERS[name],
            transport=demo.transport,
            auto_answer=name == "bob",
            node=f"ua-{name}",
            password=f"demo-secret-{name}",
        )
        phone.media_security = "srtp"
        phone.media_prefs = demo.prefs()
        rtp = await RtpEndpoint.open("127.0.0.1")
        phone.media_port = rtp.local_addr[1]
        demo.phones[name], demo.rtp[name] = phone, rtp
        demo.watch(name, phone)
    for name, phone in demo.phones.items():
        resp = await phone.register(demo.edge_addr, domain=REALM, expires=300)
        if resp.status != 200:
            demo.fail(f"{name} could not register: {resp.status}")
            return


async def place_call(demo: Demo) -> None:
    """alice INVITEs bob's AOR via the edge; the edge challenges (407), alice retries with
    credentials, the edge forwards to bob's registered contact; bob rings and answers."""
    alice, bob = demo.phones["alice"], demo.phones["bob"]
    call = await alice.call(f"sip:{SUBSCRIBERS['bob']}@{REALM}", dest=demo.edge_addr)
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


async def hang_up(demo: Demo) -> None:
    """alice sends BYE via the edge; bob answers 200 (RFC 3261 §15)."""
    call = demo.calls.get("alice")
    if call is None or "bob" not in demo.calls:
        return
    status = await call.hangup()
    if status != 200:
        demo.fail(f"BYE answered with {status}")
    await demo.calls["bob"].wait_ended(5)


async def read_cdr(demo: Demo) -> None:
    """Wait for the CDR the sink wrote from the edge's events, read it back through the
    audited query API (reason + ticket), and verify the audit hash chain."""
    call = demo.calls.get("alice")
    if call is None or demo.records is None or demo.sink is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    relay_node = demo.relay.get("node", "")
    written = demo.sink.written
    # the edge's CallEnded writes the CDR; the relay's final MediaStats (sent when the edge
    # deletes the session) rewrite it with the media statistics
    while loop.time() < deadline and (
        call.call_id not in written or relay_node not in written[call.call_id].lineage.nodes
    ):
        await asyncio.sleep(0.02)
    if call.call_id not in written:
        demo.fail("no CDR was written for the call")
        return
    if relay_node not in written[call.call_id].lineage.nodes:
        demo.fail("the CDR has no media statistics from the relay")
        return
    records = demo.records
    reader = AuditedReader(records.store, records.audit, actor="callward-demo")
    ticket = f"DEMO-{int(time.time())}"
    found = await asyncio.to_thread(
        reader.query,
        CdrQuery(call_ids=(call.call_id,)),
        "demo: show the CDR of the call just made",
        ticket,
    )
    if len(found) != 1:
        demo.fail(f"CDR query returned {len(found)} records")
        return
    cdr = found[0]
    pseudonym = records.codec.pseudonym
    demo.cdr = {
        "id": cdr.call_id,
        "caller": mask_number(SUBSCRIBERS["alice"]),
        "callee": mask_number(SUBSCRIBERS["bob"]),
        "caller_pseudonym": pseudonym(cdr.caller).hex()[:16] if cdr.caller else "",
        "callee_pseudonym": pseudonym(cdr.callee).hex()[:16] if cdr.callee else "",
        "disposition": cdr.disposition,
        "status": cdr.status,
        "duration_s": round(cdr.duration_s, 2),
        "codecs": list(cdr.codecs),
        "packets": cdr.packets,
        "lost": cdr.lost,
        "jitter_ms": round(cdr.jitter_ms, 2),
        "mos_min": cdr.mos_min,
        "flags": list(cdr.flags),
        "nodes": list(cdr.lineage.nodes),
        "legs": [
            {"leg": lg.leg, "packets": lg.packets, "lost": lg.lost, "mos": lg.mos}
            for lg in cdr.legs
        ],
        "store": str(records.data_dir / "cdr.db"),
    }
    entry = records.audit.entries()[-1]
    problems = records.audit.verify()
    demo.audit = {
        "seq": entry.seq,
        "actor": entry.actor,
        "action": entry.action,
        "reason": entry.reason,
        "ticket": entry.ticket,
        "records": len(entry.records),
        "hash": entry.hash,
        "verified": not problems,
        "problems": problems,
    }
    if problems:
        demo.fail("audit chain does not verify")
    demo.dashboard = {
        "command": f"callward web --data-dir {records.data_dir}",
        "url": "http://127.0.0.1:8080/",
        "api": f"http://127.0.0.1:8080/api/v1/calls/{cdr.call_id}",
    }


DEFAULT_STEPS: tuple[Step, ...] = (
    start_edge,
    start_phones,
    place_call,
    exchange_media,
    query_relay,
    hang_up,
    read_cdr,
)


def _quiet_logs() -> None:
    """Library logs go to stderr through the privacy redaction processor, warnings only, so
    stdout stays the report (and valid JSON with --json)."""
    from callward.edge.app import configure_logging

    configure_logging(json_logs=True)
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=False,
    )


async def run_demo(demo: Demo, steps: tuple[Step, ...] = DEFAULT_STEPS) -> Demo:
    """Run ``steps`` in order (bounded by DEMO_TIMEOUT), then close everything."""
    demo.t0 = asyncio.get_running_loop().time()
    started = time.perf_counter()
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if demo.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="callward-demo-")
        demo.data_dir = Path(tmp.name)
    try:
        async with asyncio.timeout(DEMO_TIMEOUT + 2 * demo.seconds):
            for step in steps:
                await step(demo)
                if not demo.ok:
                    break
    except TimeoutError:
        demo.fail(f"demo did not finish within {DEMO_TIMEOUT + 2 * demo.seconds:.0f} s")
    except CallwardError as exc:
        demo.fail(f"{type(exc).__name__}: {exc}")
    finally:
        for phone in demo.phones.values():
            await phone.close()
        for rtp in demo.rtp.values():
            rtp.close()
        if demo.runtime is not None:
            await demo.runtime.close()
        if tmp is not None:
            tmp.cleanup()
            demo.dashboard = {}  # nothing left to browse
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


def register(app: typer.Typer) -> None:
    """Attach ``callward demo`` to the root app."""

    @app.command("demo")
    def demo_command(
        transport: str = typer.Option("udp", help="SIP transport: udp or tcp"),
        loss: float = typer.Option(2.0, "--loss", help="packet loss on each sender, percent"),
        jitter: float = typer.Option(30.0, "--jitter", help="max extra delay per packet, ms"),
        seconds: float = typer.Option(3.0, "--seconds", help="seconds of media (1-60)"),
        seed: int = typer.Option(1, "--seed", help="impairment RNG seed (reproducible runs)"),
        data_dir: Path = typer.Option(
            Path("var"), "--data-dir", help="where the CDR store, keys and audit trail live"
        ),
        json_out: bool = typer.Option(False, "--json", help="print the report as JSON"),
        codec: str = typer.Option("pcmu", "--codec", help="voice codec: opus, pcmu or pcma"),
        ptime: int = typer.Option(20, "--ptime", help="packet time, ms: 20, 40 or 60"),
        bitrate: int = typer.Option(16000, "--bitrate", help="Opus bit rate, b/s (6000-64000)"),
        fec: bool = typer.Option(True, "--fec/--no-fec", help="Opus in-band FEC"),
        dtx: bool = typer.Option(False, "--dtx", help="Opus DTX, or G.711 VAD + comfort noise"),
        ns: bool = typer.Option(False, "--ns", help="noise suppression before VAD/DTX"),
        capture: bool = typer.Option(
            True, "--capture/--no-capture", help="measure bytes with dumpcap on lo"
        ),
        optimise: bool = typer.Option(
            False, "--optimise", help="pick codec/bitrate/ptime/FEC for --loss/--jitter"
        ),
        min_mos: float = typer.Option(4.0, "--min-mos", help="with --optimise: MOS to reach"),
        keep_capture: Path | None = typer.Option(
            None, "--keep-capture", help="write the media capture (pcapng) to this file"
        ),
    ) -> None:
        """Two phones register with an edge, call through it with SRTP under loss/jitter,
        and the CDR, audit entry and data usage are shown."""
        if transport not in ("udp", "tcp"):
            typer.echo(f"callward: --transport {transport!r}: expected udp or tcp", err=True)
            raise typer.Exit(2)
        if not 1.0 <= seconds <= 60.0:
            typer.echo(f"callward: --seconds {seconds:g}: expected 1 to 60", err=True)
            raise typer.Exit(2)
        try:
            Impairment(loss, jitter)
            VoiceSettings(codec, 111 if codec == "opus" else 0, ptime, bitrate)
        except CallwardError as exc:
            typer.echo(f"callward: {exc}", err=True)
            raise typer.Exit(2) from None
        _quiet_logs()
        demo = Demo(transport=transport, seconds=seconds, loss_pct=loss, jitter_ms=jitter,
                    seed=seed, data_dir=data_dir, codec=codec, ptime_ms=ptime,
                    bitrate=bitrate, fec=fec, dtx=dtx or optimise, noise_suppression=ns,
                    capture=capture, optimise=optimise, min_mos=min_mos,
                    keep_capture=keep_capture)  # fmt: skip
        demo = asyncio.run(run_demo(demo))
        if json_out:
            typer.echo(json.dumps(report_json(demo), indent=2))
        else:
            console = Console()
            console.rule(
                f"callward demo: alice calls bob through the edge over {transport.upper()}"
                " on 127.0.0.1"
            )
            render_ladder(demo, console)
            render_summary(demo, console)
        if not demo.ok:
            raise typer.Exit(1)
