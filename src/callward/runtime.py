"""The one composition root: from a :class:`~callward.config.CallwardConfig` it builds the
event bus, subscribes the data layer, and starts the services a command names.

Every command that runs a service (``callward serve``, ``edge``, ``relay``) goes through
:func:`open_runtime`, so events reach the data layer in every deployment:

* **embedded** (no ``storage.nats_url``): an :class:`~callward.events.InProcessBus`; the CDR
  writer (:class:`~callward.records.service.CdrSink` over SQLite, or PostgreSQL when
  ``storage.postgres_url`` is set) is subscribed in process;
* **scale-out** (``storage.nats_url``): a
  :class:`~callward.events_jetstream.JetStreamPublisher` on subjects
  ``<storage.nats_prefix>.<tenant>.<kind>`` (default ``callward.events``) on the stream
  ``storage.nats_stream``; CDRs are written by ``callward cdr consume`` (one or more consumer
  processes on one durable consumer), or in process by a node that calls
  :meth:`Runtime.start_consumer`.

Hooks for the other data-layer subscribers (quality monitor, alerts, HEP export, retention,
LI taps): add a factory to :data:`SUBSCRIBER_FACTORIES` -- ``factory(runtime)`` returns an
event handler (or None to stay off for this configuration); it is subscribed on the
in-process bus, and on a JetStream deployment the handler receives what this node publishes.
Services never import the data layer: they get ``runtime.bus``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from callward.config import CallwardConfig
from callward.errors import ConfigError
from callward.events import Event, EventBus, Handler, InProcessBus

if TYPE_CHECKING:
    from callward.edge.app import EdgeNode
    from callward.edge.relays import RelayLinks
    from callward.privacy.serve_hooks import PrivacyServices
    from callward.quality.alerts import QualityMonitor
    from callward.quality.hep import HepExporter
    from callward.records.security_alerts import SecurityAlertLog
    from callward.records.service import CdrSink, Records
    from callward.relay.ng_daemon import NgDaemon
    from callward.relay.workers import RelayWorkers

__all__ = [
    "SUBSCRIBER_FACTORIES",
    "FanoutBus",
    "Runtime",
    "attach_media_anchor",
    "open_runtime",
    "parse_hostport",
]

#: ``factory(runtime) -> handler | None``; other areas append theirs (see module docstring)
SUBSCRIBER_FACTORIES: list[Callable[[Runtime], Handler | None]] = []


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} {text!r}: expected HOST:PORT")
    return host, int(port)


@dataclass
class FanoutBus:
    """Publishes to a remote bus (JetStream) and hands each event to local subscribers too
    (this node's quality monitor, HEP exporter): one ``publish`` for services."""

    remote: EventBus
    local: InProcessBus = field(default_factory=InProcessBus)

    async def publish(self, event: Event) -> None:
        await self.remote.publish(event)
        await self.local.publish(event)

    def subscribe(self, handler: Handler) -> None:
        self.local.subscribe(handler)


@dataclass
class Runtime:
    config: CallwardConfig
    bus: EventBus
    records: Records | None = None
    sink: CdrSink | None = None
    nats: Any = None  # the NATS connection of a JetStream deployment
    relay: NgDaemon | None = None
    edge: EdgeNode | None = None
    relay_links: RelayLinks | None = None
    security_alerts: SecurityAlertLog | None = None  # the SecurityAlert consumer (dashboard)
    privacy: PrivacyServices | None = None  # retention, consent/LI tap policy, IRI, mediation
    quality: QualityMonitor | None = None  # MediaStats → per-tenant QualityAlert, live
    hep: HepExporter | None = None  # the edge's SIP to quality.hep_collector
    workers: RelayWorkers | None = None  # serve's relay processes (media.relay_workers)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    # -- services -------------------------------------------------------------------------
    async def start_relay(
        self, *, ng_listen: str | None = None, call_events: bool = True
    ) -> NgDaemon:
        """The media relay (ng daemon) from the ``media`` section; ``call_events`` makes it
        publish CallStarted/Answered/Ended itself (when no callward edge does)."""
        from functools import partial

        from callward.quality.live_mos import playout_mos
        from callward.relay.ng_daemon import NgDaemon
        from callward.relay.ng_server import NgSettings

        m = self.config.media
        settings = NgSettings(
            address=m.relay_address,
            node=m.relay_node_id,
            rtp_timeout_s=m.rtp_timeout_s,
            hold_timeout_s=m.hold_timeout_s,
            stats_interval_s=m.stats_interval_s,
            max_calls=m.max_calls,
            call_events=call_events,
        )
        daemon = NgDaemon(
            settings,
            control=parse_hostport(ng_listen or m.ng_listen, "media.ng_listen"),
            port_range=(m.rtp_port_min, m.rtp_port_max),
            dscp=m.dscp_media,
            bus=self.bus,
            # Each leg's MOS per playout model (the worst goes into MediaStats.mos).
            mos_estimator=partial(playout_mos, base_delay_ms=self.config.quality.base_delay_ms),
        )
        await daemon.start()
        if self.privacy is not None and daemon.server is not None:
            daemon.server.tap_policy = self.privacy.taps_for  # consent / warrant decide taps
        if self.config.quality.hep_collector and daemon.server is not None:
            await self._export_rtcp(daemon)
        self.relay = daemon
        return daemon

    async def start_node(self, **edge_kw: Any) -> tuple[list[str], EdgeNode]:
        """The ``callward serve`` composition: the ng relay (in this process, or
        ``media.relay_workers`` relay processes), the privacy services and the edge anchoring
        media in those relays (unless ``media.relays`` names others); returns the relays'
        ng addresses and the edge. ``callward demo`` runs the same composition, so what the
        demo shows is what a node does. ``edge_kw`` goes to
        :class:`~callward.edge.app.EdgeNode` (e.g. ``subscribers``)."""
        m = self.config.media
        if m.relay_workers:
            from callward.relay.workers import RelayWorkers

            self.workers = await RelayWorkers.spawn(self.config)
            own = self.workers.addresses
        else:
            daemon = await self.start_relay(call_events=False)
            own = ["{}:{}".format(*daemon.bound)]
        self.start_privacy()
        relays = m.relays or own
        node = await self.start_edge(relays=relays, **edge_kw)
        return relays, node

    def start_privacy(self) -> None:
        """Long-running nodes (``callward serve``): the retention scheduler and the LI
        mediation client run until :meth:`close`."""
        if self.privacy is not None:
            self.privacy.start(self._stop)

    async def start_edge(self, *, relays: list[str] | None = None, **kw: Any) -> EdgeNode:
        """The SIP edge publishing to :attr:`bus`; with ``media.relays`` (or ``relays``) it
        anchors media through those ng relays (see ``callward.edge.media_anchor``)."""
        from callward.edge.app import EdgeNode

        node = EdgeNode(self.config, bus=self.bus, **kw)
        targets = self.config.media.relays if relays is None else relays
        if targets:
            # relays in other processes report their statistics in ng replies only
            bus = self.bus if self.workers is not None else None
            self.relay_links = attach_media_anchor(node, self.config, targets, bus=bus)
        await node.start()
        if self.config.quality.hep_collector:
            await self._export_hep(node)
        if self.relay_links is not None:
            await self.relay_links.check()
            self.relay_links.start()
        self.edge = node
        return node

    async def _export_hep(self, node: EdgeNode) -> None:
        """Every SIP message on the edge's transports, in and out, to the HEP collector
        (``quality.hep_collector``): Homer/heplify or ``HepReceiver`` see the edge's ladder."""
        import time

        from callward.quality.hep import sip_wire_to_hep
        from callward.sip.transport import WireEvent

        exporter = await self._hep_exporter()

        def tap(ev: WireEvent) -> None:
            if ev.data.strip():  # not CRLF keep-alives
                exporter.export(sip_wire_to_hep(ev.direction, ev.data, ev.local, ev.remote,
                                                ev.transport, time.time_ns()))  # fmt: skip

        for transports in node.server.transports.values():
            for t in transports:
                t.add_tap(tap)

    async def _hep_exporter(self) -> HepExporter:
        """The one HEP exporter to ``quality.hep_collector`` (edge SIP and relay RTCP)."""
        if self.hep is None:
            from callward.quality.hep import HepExporter

            q = self.config.quality
            host, port = parse_hostport(q.hep_collector or "", "quality.hep_collector")
            self.hep = await HepExporter.connect(host, port, capture_id=q.hep_capture_id)
        return self.hep

    async def _export_rtcp(self, daemon: NgDaemon) -> None:
        """Every RTCP packet the relay receives, as HEP type 5 (JSON reports, Call-ID as the
        correlation id), so Homer shows each leg's reports beside the edge's SIP ladder."""
        import time

        from callward.quality.hep import rtcp_to_hep

        exporter = await self._hep_exporter()
        assert daemon.server is not None

        def hook(call_id: str, leg: int, plain: bytes, peer: tuple[str, int],
                 local: tuple[str, int], now: float) -> None:  # fmt: skip
            msg = rtcp_to_hep(plain, peer, local, time.time_ns(), call_id)
            if msg is not None:
                exporter.export(msg)

        daemon.server.rtcp_hook = hook

    async def start_consumer(self) -> None:
        """With JetStream: consume this deployment's events into the CDR store in process."""
        if self.nats is None or self.records is None:
            return
        from callward.records.bus import CdrConsumer, ensure_stream

        js = self.nats.jetstream()
        st = self.config.storage
        await ensure_stream(js, st.nats_stream, st.nats_prefix)
        cfg = self.records.config
        consumer = CdrConsumer(
            js, st.nats_stream, "cdr-writer", self.records.store, prefix=st.nats_prefix,
            grace_s=cfg.grace_s, timeout_s=cfg.timeout_s,
        )  # fmt: skip
        consumer.recover()
        self.tasks.append(asyncio.create_task(consumer.run(self._stop)))

    async def until_signalled(self) -> None:
        """Run until SIGINT or SIGTERM (long-running commands: serve, edge, relay)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    def poll(self) -> None:
        """Write CDRs whose grace period passed (called periodically by long-running nodes)."""
        if self.sink is not None:
            self.sink.poll()

    async def close(self) -> None:
        self._stop.set()
        if self.edge is not None:
            await self.edge.stop()
        if self.hep is not None:
            self.hep.close()
        if self.relay_links is not None:
            await self.relay_links.close()
        if self.relay is not None:
            await self.relay.stop()
        if self.workers is not None:
            await self.workers.stop()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.sink is not None:
            self.sink.flush()
        if self.security_alerts is not None and self.security_alerts.store is not None:
            self.security_alerts.store.close()
        if self.nats is not None:
            with contextlib.suppress(Exception):
                await self.nats.drain()
        if self.privacy is not None:
            for task in self.privacy.tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.privacy.close()
        if self.records is not None:
            self.records.close()


def attach_media_anchor(
    node: EdgeNode, cfg: CallwardConfig, relays: list[str], *, bus: EventBus | None = None
) -> RelayLinks:
    """Plug :class:`~callward.edge.media_anchor.RelayAnchor` into the edge's media hook and
    answer its relay commands over ng."""
    from callward.edge.media_anchor import (
        AnchorPolicy,
        RelayAnchor,
        RelayCommand,
        RelayPool,
        parse_relay,
    )
    from callward.edge.relays import RelayLinks

    m = cfg.media
    pool = RelayPool([parse_relay(r) for r in relays])
    policy = AnchorPolicy(
        default=m.anchor,
        tenants=tuple(m.anchor_tenants.items()),
        routes=tuple(m.anchor_routes.items()),
    )
    node.core.hooks.media = RelayAnchor(pool, policy)
    links = RelayLinks(pool, ping_s=m.relay_ping_s, bus=bus)
    node.server.answer_with(RelayCommand, links.answer)
    return links


async def open_runtime(cfg: CallwardConfig, *, cdr_writer: bool = True) -> Runtime:
    """The bus and the data layer for ``cfg`` (see the module docstring)."""
    records = None
    sink = None
    nc = None
    if cdr_writer:
        from callward.records.service import open_records

        records = open_records(
            cfg.storage.data_dir, cfg.records, cfg.storage.postgres_url, cfg.privacy
        )
    if cfg.storage.nats_url:
        from callward.events_jetstream import JetStreamPublisher
        from callward.records.bus import connect, ensure_stream

        nc = await connect(cfg.storage.nats_url)
        js = nc.jetstream()
        await ensure_stream(js, cfg.storage.nats_stream, cfg.storage.nats_prefix)
        bus: EventBus = FanoutBus(JetStreamPublisher(js, cfg.storage.nats_prefix))
    else:
        bus = InProcessBus()
        if records is not None:
            from callward.records.service import CdrSink

            sink = CdrSink(
                records.store, grace_s=cfg.records.grace_s, timeout_s=cfg.records.timeout_s
            )
            bus.subscribe(sink.handle)
    rt = Runtime(cfg, bus, records=records, sink=sink, nats=nc)
    if records is not None:
        from callward.privacy.serve_hooks import open_privacy_services

        try:
            rt.privacy = open_privacy_services(cfg, records, bus)
        except BaseException:
            records.close()
            raise
    from callward.records.security_alerts import SecurityAlertLog, SecurityAlertStore

    # every alert: logged (redacted), counted, and stored for the dashboard's security view
    alert_store = (
        SecurityAlertStore(records.data_dir / "security_alerts.sqlite")
        if records is not None
        else None
    )
    rt.security_alerts = SecurityAlertLog(store=alert_store)
    bus.subscribe(rt.security_alerts.handle)
    import time

    from callward.quality.alerts import QualityMonitor

    # Every leg's MediaStats (relay, phones) judged against its tenant's MOS thresholds; the
    # QualityAlert goes back on the bus (dashboard, JetStream subject quality_alert).
    rt.quality = QualityMonitor(bus, cfg.quality, cfg.edge.node_id, time.time)
    for factory in SUBSCRIBER_FACTORIES:
        handler = factory(rt)
        if handler is not None:
            bus.subscribe(handler)
    return rt
