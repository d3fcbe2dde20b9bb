"""``callward relay``: the media relay.

With ``--ng HOST:PORT`` (or ``media.ng_listen`` from ``--config``) it runs as a media-proxy
daemon controlled with rtpengine's ng protocol -- a Kamailio with its ``rtpengine`` module, or
a callward edge, drives it -- and publishes its events through the runtime (CDRs on embedded
defaults, JetStream when ``storage.nats_url`` is set)::

    callward relay --ng 127.0.0.1:22222 --config callward.yaml

Without ``--ng`` it relays one call whose legs are given on the command line (tests, lab
set-ups, and a way to put SRTP in front of a legacy RTP-only PBX):

    callward relay --a 127.0.0.1:30000 --b 127.0.0.1:30002 \\
        --a-crypto-rx "AES_CM_128_HMAC_SHA1_80 inline:..." --b-trusted --b-remote 10.0.0.5:4000

It prints where the legs listen (and the SDES keys it generated for any leg whose
``--X-crypto-tx`` was not given, to put in that leg's SDP answer), relays until the RTP
timeout, ``--duration`` or SIGINT/SIGTERM, then prints the per-leg MediaStats. Remote peer
addresses are never printed (they are personal data, docs/privacy.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import typer

from callward.cli.exits import fail as _fail
from callward.cli.exits import hostport
from callward.errors import CallwardError
from callward.events import InProcessBus, event_to_dict

__all__ = ["register"]


def _fmt(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _keying(text: str | None, what: str) -> Any:
    from callward.rtp.srtp import SrtpKeying

    if text is None:
        return None
    suite, _, params = text.strip().partition(" ")
    try:
        return SrtpKeying.from_sdes(suite, params)
    except CallwardError as exc:
        raise _fail(f"{what}: {exc}") from None


def _leg(
    name: str,
    listen: str,
    remote: str | None,
    crypto_rx: str | None,
    crypto_tx: str | None,
    trusted: bool,
    no_mux: bool = False,
) -> tuple[Any, str | None]:
    from callward.relay.leg import LegConfig
    from callward.rtp.srtp import SrtpKeying

    host, port = hostport(listen, f"--{name}")
    rx = _keying(crypto_rx, f"--{name}-crypto-rx")
    tx = _keying(crypto_tx, f"--{name}-crypto-tx")
    generated = None
    if rx is not None and tx is None:
        tx = SrtpKeying.generate(rx.profile)
        generated = f"{tx.profile.value} {tx.inline}"
    if tx is not None and rx is None:
        raise _fail(f"--{name}-crypto-tx given without --{name}-crypto-rx")
    try:
        cfg = LegConfig(
            name,
            bind_host=host,
            bind_port=port,
            remote=None if remote is None else hostport(remote, f"--{name}-remote"),
            srtp_rx=rx,
            srtp_tx=tx,
            trusted=trusted,
            rtcp_mux=not no_mux,
        )
    except CallwardError as exc:
        raise _fail(str(exc)) from None
    return cfg, generated


def register(app: typer.Typer) -> None:
    """Attach ``callward relay`` to the root app."""

    @app.command("relay")
    def relay_cmd(
        a: str = typer.Option("127.0.0.1:0", "--a", help="Leg a listen HOST:PORT (0 = any)."),
        b: str = typer.Option("127.0.0.1:0", "--b", help="Leg b listen HOST:PORT (0 = any)."),
        a_remote: str | None = typer.Option(None, "--a-remote", help="Leg a peer (from SDP)."),
        b_remote: str | None = typer.Option(None, "--b-remote", help="Leg b peer (from SDP)."),
        a_crypto_rx: str | None = typer.Option(
            None, "--a-crypto-rx", help='Peer a\'s SDES key: "SUITE inline:KEY".'
        ),
        a_crypto_tx: str | None = typer.Option(None, "--a-crypto-tx", help="Our key toward a."),
        b_crypto_rx: str | None = typer.Option(None, "--b-crypto-rx", help="Peer b's SDES key."),
        b_crypto_tx: str | None = typer.Option(None, "--b-crypto-tx", help="Our key toward b."),
        a_trusted: bool = typer.Option(False, "--a-trusted", help="Allow plain RTP on leg a."),
        b_trusted: bool = typer.Option(False, "--b-trusted", help="Allow plain RTP on leg b."),
        a_no_mux: bool = typer.Option(False, "--a-no-rtcp-mux", help="Leg a: RTCP on port+1."),
        b_no_mux: bool = typer.Option(False, "--b-no-rtcp-mux", help="Leg b: RTCP on port+1."),
        timeout: float = typer.Option(30.0, "--timeout", help="RTP timeout in seconds."),
        duration: float | None = typer.Option(None, "--duration", help="Stop after N seconds."),
        dscp: int = typer.Option(46, "--dscp", help="DSCP for media (46 = EF)."),
        call_id: str = typer.Option("cli", "--call-id", help="Call-ID for events."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
        ng: str | None = typer.Option(
            None, "--ng", help="Run the ng daemon on HOST:PORT (rtpengine protocol)."
        ),
        config: Path | None = typer.Option(None, "--config", "-c", help="callward.yaml"),
        worker: bool = typer.Option(
            False,
            "--worker",
            hidden=True,
            help="A relay process of callward serve: no CDR writer, stats in ng replies only,"
            " stops when stdin closes.",
        ),
    ) -> None:
        """The media relay: an ng (rtpengine protocol) daemon, or one call's two legs."""
        if ng is not None or config is not None:
            _run_daemon(ng, config, as_json, worker)
            return
        if timeout <= 0 or (duration is not None and duration <= 0):
            raise _fail("--timeout and --duration must be positive")
        if not 0 <= dscp <= 63:
            raise _fail(f"--dscp {dscp}: expected 0-63")
        leg_a, gen_a = _leg("a", a, a_remote, a_crypto_rx, a_crypto_tx, a_trusted, a_no_mux)
        leg_b, gen_b = _leg("b", b, b_remote, b_crypto_rx, b_crypto_tx, b_trusted, b_no_mux)
        try:
            code = asyncio.run(
                _run(call_id, leg_a, leg_b, gen_a, gen_b, timeout, duration, dscp, as_json)
            )
        except OSError as exc:
            raise _fail(f"cannot open media socket: {exc.strerror}") from None
        raise typer.Exit(code)


async def _run(
    call_id: str,
    leg_a: Any,
    leg_b: Any,
    gen_a: str | None,
    gen_b: str | None,
    timeout: float,
    duration: float | None,
    dscp: int,
    as_json: bool,
) -> int:
    from callward.events import MediaStats
    from callward.relay.session import MediaRelay

    bus = InProcessBus()
    relay = MediaRelay(
        bus=bus, rtp_timeout_s=timeout, stats_interval_s=max(timeout, 5.0), dscp=dscp
    )
    session = await relay.create_session(call_id, leg_a, leg_b)
    started: dict[str, Any] = {
        "event": "relay_started",
        "call_id": call_id,
        "a": _fmt(session.local_address("a")),
        "b": _fmt(session.local_address("b")),
        "a_crypto_tx": gen_a,
        "b_crypto_tx": gen_b,
    }
    if as_json:
        typer.echo(json.dumps(started), nl=True)
    else:
        typer.echo(f"relaying call {call_id}: leg a on {started['a']}, leg b on {started['b']}")
        for leg, gen in (("a", gen_a), ("b", gen_b)):
            if gen:
                typer.echo(f"  our SDES key toward {leg}: {gen}")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.create_task(session.ended.wait()), asyncio.create_task(stop.wait())]
    _, pending = await asyncio.wait(waiters, timeout=duration, return_when="FIRST_COMPLETED")
    for t in pending:
        t.cancel()
    reason = session.end_reason or ("signal" if stop.is_set() else "duration")
    final = session.stats_events()
    await relay.close_all()
    stats = [event_to_dict(e) for e in final if isinstance(e, MediaStats)]
    if as_json:
        typer.echo(json.dumps({"event": "relay_ended", "reason": reason, "legs": stats}))
    else:
        typer.echo(f"call {call_id} ended: {reason}")
        for s in stats:
            typer.echo(
                f"  leg {s['leg']}: {s['packets']} packets in, lost {s['lost']}, "
                f"jitter {s['jitter_ms']:.2f} ms, {s['bytes_received']} B in, "
                f"{s['bytes_sent']} B out"
            )
    return 0


def _run_daemon(ng: str | None, config: Path | None, as_json: bool, worker: bool = False) -> None:
    from callward.config import load_config
    from callward.runtime import parse_hostport

    try:
        cfg = load_config(config)
        if ng is not None:
            parse_hostport(ng, "--ng")
    except CallwardError as exc:
        raise _fail(str(exc)) from None
    try:
        asyncio.run(_daemon(cfg, ng, as_json, worker))
    except CallwardError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"relay: {exc.strerror or exc}") from None


async def _daemon(cfg: Any, ng: str | None, as_json: bool, worker: bool = False) -> None:
    from callward.runtime import open_runtime

    # a worker of callward serve writes no CDR: serve's edge publishes the relay's statistics
    # from its ng delete replies (relay/workers.py)
    runtime = await open_runtime(cfg, cdr_writer=not worker)
    try:
        daemon = await runtime.start_relay(ng_listen=ng, call_events=not worker)
        host, port = daemon.bound
        if as_json:
            typer.echo(json.dumps({"event": "relay_listening", "ng": _fmt((host, port))}))
        typer.echo(
            f"callward relay {cfg.media.relay_node_id}: ng on {_fmt((host, port))}", err=True
        )
        if worker:
            sys.stdout.flush()
            os.dup2(2, 1)  # nobody reads the pipe after that first line
            await _until_stdin_closes_or_signalled(runtime)
        else:
            await runtime.until_signalled()
    finally:
        await runtime.close()


async def _until_stdin_closes_or_signalled(runtime: Any) -> None:
    """A worker stops with its parent: SIGTERM/SIGINT, or EOF on the stdin pipe it holds."""
    loop = asyncio.get_running_loop()
    eof = asyncio.Event()

    def readable() -> None:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(0)
            eof.set()

    os.set_blocking(0, False)
    loop.add_reader(0, readable)
    waiters = [asyncio.ensure_future(eof.wait()), asyncio.ensure_future(runtime.until_signalled())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        with contextlib.suppress(Exception):
            loop.remove_reader(0)
