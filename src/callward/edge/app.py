"""Assemble an edge node from configuration: settings, stores, core, server, metrics endpoint,
SIGHUP reload. Used by ``callward edge`` and by tests that run real nodes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

import structlog

from callward.config import CallwardConfig, EdgeConfig
from callward.edge.answers import StoreAnswers
from callward.edge.location import LocationStore, MemoryLocation, open_location
from callward.edge.metrics import EdgeMetrics
from callward.edge.pending import LocationLookup, LocationUpdate, ResolveUpstream, SubscriberLookup
from callward.edge.proxy import EdgeCore
from callward.edge.security_setup import configure_security
from callward.edge.server import EdgeServer
from callward.edge.settings import EdgeSettings, parse_listen
from callward.edge.subscribers import SqliteSubscribers, SubscriberStore, open_subscribers
from callward.errors import ConfigError, DnsError
from callward.events import EventBus, InProcessBus
from callward.sip.dns import AsyncResolver, ServerLocator
from callward.sip.parser import ParseLimits
from callward.sip.peer import Peer
from callward.sip.tls import TlsPolicy, client_context, server_context
from callward.sip.transport import StreamTransport, TransportLimits
from callward.sip.uri import SipURI, parse_uri

__all__ = ["EdgeNode", "configure_logging", "settings_from_config"]

log = structlog.get_logger("callward.edge")


def configure_logging(*, json_logs: bool = True) -> None:
    """structlog JSON lines with the privacy layer's redaction processor in front of the
    renderer, so no URI, number or address reaches the log even if a call site passes one."""
    from callward.privacy.redact import RedactProcessor, install_stdlib_redaction

    renderer: Any = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            RedactProcessor(),
            renderer,
        ]
    )
    install_stdlib_redaction()  # stdlib `logging` records (web, libraries) are masked too


GC_FREEZE_SECONDS = 1.0
GC_FULL_SECONDS = 600.0


def tune_gc() -> None:
    """Keep the cyclic collector off the per-message path of a long-running node.

    An edge keeps every transaction for 32 s after its final response (Timer J, RFC 6026
    Timer L/M) and every call for its lifetime: at 1000 calls/s that is ~3 million live
    objects, and each full collection walked all of them (0.8 s stalls under SIPp load, then
    retransmission storms). The call path makes no reference cycles (forking contexts and
    branches name each other by transaction key, see :mod:`callward.edge.forking`), so what
    survives is freed by reference counting; the node freezes survivors every
    :data:`GC_FREEZE_SECONDS` (:meth:`EdgeNode._gc_loop`) so that collections only look at
    young objects, and unfreezes every :data:`GC_FULL_SECONDS` so a full pass still reclaims
    any cycle that a rarer path may leave."""
    gc.freeze()
    young, _, _ = gc.get_threshold()
    gc.set_threshold(young, 20, 100)


def settings_from_config(cfg: CallwardConfig) -> EdgeSettings:
    e: EdgeConfig = cfg.edge
    for alg in e.algorithms:
        if alg not in ("SHA-256", "MD5"):
            raise ConfigError(f"edge.algorithms: unsupported digest algorithm {alg!r}")
    converted: dict[str, Any] = {
        "node": e.node_id,
        "listen": tuple(parse_listen(x) for x in e.listen),
        "domains": (*e.domains, e.realm),
        "routes": tuple(e.routes.items()),
        "tenant_regions": tuple(e.tenant_regions.items()),
        "limits": ParseLimits(
            cfg.sip.max_message_bytes,
            cfg.sip.max_headers,
            cfg.sip.max_header_bytes,
            cfg.sip.max_body_bytes,
        ),
    }
    # every other setting has the configuration field's name (lists become tuples: frozen)
    for f in fields(EdgeSettings):
        if f.name not in converted and f.name in EdgeConfig.model_fields:
            value = getattr(e, f.name)
            converted[f.name] = tuple(value) if isinstance(value, list) else value
    return EdgeSettings(**converted)


def stream_limits(e: EdgeConfig) -> TransportLimits:
    """Slowloris caps and deadlines of the stream listeners (docs/security.md)."""
    return TransportLimits(
        max_connections_per_ip=e.max_connections_per_ip,
        max_pending_per_ip=e.max_pending_per_ip,
        max_pending=e.max_pending,
        connect_timeout=e.handshake_timeout,
        first_message_timeout=e.first_message_timeout,
        message_timeout=e.message_timeout,
    )


def client_tls(cfg: CallwardConfig) -> ssl.SSLContext | None:
    """Outbound TLS (trunks, other nodes): chain against ``security.tls_ca_file`` (else the
    system store), RFC 5922 names, and our certificate for mTLS when configured. None when the
    edge has no TLS at all (no certificate and no CA configured)."""
    e, sec = cfg.edge, cfg.security
    if not (e.tls_cert or sec.tls_ca_file):
        return None
    return client_context(
        TlsPolicy(
            ca_file=sec.tls_ca_file,
            crl_files=tuple(sec.tls_crl_files),
            min_version=sec.tls_min_version,
            ciphers=sec.tls_ciphers,
            client_cert=e.tls_cert if sec.tls_client_cert else None,
            client_key=e.tls_key if sec.tls_client_cert else None,
        )
    )


def _secret(e: EdgeConfig) -> bytes | None:
    """Nodes sharing a location store must share this key (nonces and flow tokens)."""
    if e.auth_secret is None:
        return None
    return hashlib.sha256(e.auth_secret.encode()).digest()


class EdgeNode:
    """One running edge: owns its stores, core, sockets and optional /metrics server."""

    def __init__(
        self,
        cfg: CallwardConfig,
        *,
        settings: EdgeSettings | None = None,
        bus: EventBus | None = None,
        location: LocationStore | None = None,
        subscribers: SubscriberStore | None = None,
        reload: Callable[[], EdgeSettings] | None = None,
        dns_resolver: AsyncResolver | None = None,
    ) -> None:
        self.cfg = cfg
        self.settings = settings if settings is not None else settings_from_config(cfg)
        e = cfg.edge
        self.location = (
            location if location is not None else open_location(e.location, e.location_prefix)
        )
        if subscribers is None and self.settings.auth:
            subscribers = open_subscribers(e.subscribers)
        self.subscribers = subscribers
        self.bus = bus if bus is not None else InProcessBus()
        self.metrics = EdgeMetrics()
        self.core = EdgeCore(self.settings, secret=_secret(e), metrics=self.metrics)
        if cfg.privacy.boundary != "off":  # IMSI/IMEI/MSISDN toward edge.untrusted peers
            from callward.privacy.boundary_filter import TrustBoundaryFilter

            self.core.hooks.boundary = TrustBoundaryFilter(cfg.privacy.boundary, self.core.secret)
        tls = None
        if e.tls_cert and e.tls_key:
            sec = cfg.security
            tls = server_context(
                TlsPolicy(
                    e.tls_cert,
                    e.tls_key,
                    ca_file=sec.tls_ca_file,
                    crl_files=tuple(sec.tls_crl_files),
                    min_version=sec.tls_min_version,
                    ciphers=sec.tls_ciphers,
                    require_client_cert=sec.tls_require_client_cert,
                )
            )
        self._locator = ServerLocator(clock=time.time)
        self.server = EdgeServer(
            self.core,
            self.bus,
            max_connections=e.max_connections,
            idle_timeout=e.idle_timeout,
            tls_context=tls,
            client_tls_context=client_tls(cfg),
            limits=stream_limits(e),
        )
        self._answer_questions()
        # tenants, fraud, STIR/SHAKEN; certificate expiry monitor (started with the node)
        self.cert_monitor = configure_security(self.core, self.server, cfg)
        self.bearer = None
        if cfg.identity.issuer:  # RFC 8898 Bearer; httpx/joserfc are imported only then
            from callward.edge.bearer_io import install_bearer

            self.bearer = install_bearer(cfg, self.core, self.server)
        self._reload = reload
        self._metrics_server: object | None = None
        self._dns_resolver = dns_resolver
        self._gc_task: asyncio.Task[None] | None = None

    def _answer_questions(self) -> None:
        """The core's questions: in-memory/SQLite stores answer inline, network stores in a
        worker thread (never blocking the loop), DNS through the async resolver."""
        answers = StoreAnswers(self.location, self.subscribers)
        server = self.server

        def sync(query: object) -> object:
            assert isinstance(query, LocationLookup | LocationUpdate | SubscriberLookup)
            return answers.answer(query, time.time())

        async def threaded(query: object) -> object:
            return await asyncio.to_thread(sync, query)

        loc_inline = isinstance(self.location, MemoryLocation)
        subs_inline = self.subscribers is None or isinstance(self.subscribers, SqliteSubscribers)
        for kind in (LocationLookup, LocationUpdate):
            server.answer_with(kind, sync if loc_inline else threaded, inline=loc_inline)
        server.answer_with(SubscriberLookup, sync if subs_inline else threaded, inline=subs_inline)
        server.answer_with(ResolveUpstream, self._resolve_upstream)

    async def _resolve_upstream(self, query: object) -> object:
        """RFC 3263 (NAPTR → SRV → A/AAAA, TTL-cached) for an upstream given by name."""
        assert isinstance(query, ResolveUpstream)
        if self._dns_resolver is None:
            from callward.sip.dns_resolver import DnsPythonResolver

            self._dns_resolver = DnsPythonResolver()
        uri = parse_uri(query.uri)
        if not isinstance(uri, SipURI):
            return DnsError("upstream is not a SIP URI")
        try:
            targets = await self._locator.resolve_async(uri, self._dns_resolver)
        except DnsError as exc:
            log.warning("edge.dns_failed", error=str(exc)[:120])
            return exc
        peers = [Peer(t.transport.lower(), t.host, t.port) for t in targets]
        for p in peers:  # RFC 5922 §4: the server must prove the domain, not the address
            for t in self.server.transports.get(p.transport, []):
                if isinstance(t, StreamTransport):
                    t.expect_identity(p.address, uri.host)
        return peers

    async def _warm_up(self) -> None:
        """Resolve the upstreams given by name before the first call (bounded wait)."""
        self.core.warm_up(time.time())
        self.server.flush()
        await self.server.settle(5.0)

    async def start(self) -> None:
        if not self.settings.auth:
            log.warning(
                "edge.auth_off",
                detail="authentication is off: every source may call and relay (lab use only)",
            )
        await self.server.start()
        if self.cert_monitor is not None:
            self.cert_monitor.start()
        tune_gc()
        loop = asyncio.get_running_loop()
        self._gc_task = loop.create_task(self._gc_loop())
        await self._warm_up()
        if self._reload is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self.cfg.edge.metrics_listen:
            from callward.edge.metrics_server import serve_metrics
            from callward.metrics_access import MetricsAccess

            host, _, port = self.cfg.edge.metrics_listen.rpartition(":")
            self.metrics.registrations.set_function(self.location.count)
            sec = self.cfg.security  # a token, or only management addresses (docs/security.md)
            self._metrics_server = serve_metrics(
                self.metrics.registry,
                host.strip("[]") or "127.0.0.1",
                int(port),
                MetricsAccess(sec.metrics_token, sec.metrics_allow),
            )

    def reload(self) -> None:
        """SIGHUP: re-read the configuration; calls and transactions in progress continue.
        Listening sockets are kept (a changed ``listen`` needs a restart)."""
        if self._reload is None:
            return
        try:
            new = self._reload()
        except ConfigError as exc:
            log.warning("edge.reload_failed", error=str(exc))
            return
        new = replace(new, listen=self.settings.listen)
        self.settings = new
        self.core.reconfigure(new)
        with contextlib.suppress(RuntimeError):  # re-resolve upstreams named by DNS
            self.core.warm_up(time.time())
            self.server.flush()
        log.info("edge.reloaded", routes=len(new.routes), upstreams=len(new.upstreams))

    async def _gc_loop(self) -> None:
        """See :func:`tune_gc`: freeze survivors often, let a full pass run now and then."""
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(GC_FREEZE_SECONDS)
            if time.monotonic() - last_full >= GC_FULL_SECONDS:
                gc.unfreeze()
                last_full = time.monotonic()
            else:
                gc.freeze()

    async def stop(self) -> None:
        if self._gc_task is not None:
            self._gc_task.cancel()
        if self.cert_monitor is not None:
            self.cert_monitor.stop()
        await self.server.stop()
        srv = self._metrics_server
        if srv is not None:
            shutdown = getattr(srv[0] if isinstance(srv, tuple) else srv, "shutdown", None)
            if shutdown is not None:
                shutdown()
        self.location.close()
        if self.bearer is not None:
            await self.bearer.aclose()
        if self.subscribers is not None:
            self.subscribers.close()
