"""SIP over TCP and TLS (RFC 3261 §18.3, §26.2.1): byte streams framed by Content-Length, with
keep-alives (RFC 5626), connection reuse (§18.2.2, RFC 5923), slowloris limits
(:mod:`callward.sip.connection_guard`) and RFC 5922 server identity on outgoing TLS.
Part of the transport adapter; import from :mod:`callward.sip.transport`."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from callward.errors import SipParseError, TransportError
from callward.sip.parser import frame_stream
from callward.sip.transport_base import (
    _CRLF,
    _PING,
    LISTEN_BACKLOG,
    Address,
    OnMessage,
    Transport,
    TransportLimits,
    _addr,
    _ids,
)

__all__ = ["StreamTransport", "TcpTransport", "TlsTransport"]


# --------------------------------------------------------------------------------------------
# TCP and TLS: byte streams framed by Content-Length (§18.3)
# --------------------------------------------------------------------------------------------


class _StreamConnection(asyncio.Protocol):
    """One TCP/TLS connection: buffering, framing, keep-alives, idle, size and time limits.

    An inbound connection is admitted by the owner's :class:`ConnectionGuard` the moment it is
    accepted, before any TLS handshake (a handshake that never finishes is counted, and closed
    after ``connect_timeout``); it joins the connection table once it can carry SIP (after the
    handshake). Outbound connections join in :meth:`StreamTransport.connect`, after the peer's
    identity is checked (RFC 5922), so nothing is sent to an unverified server."""

    def __init__(self, owner: StreamTransport, outbound: bool) -> None:
        self.owner = owner
        self.outbound = outbound
        self.id = f"{owner.name}-{next(_ids)}"
        self.peer: Address = ("", 0)
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.last_activity = 0.0
        self.last_pong: float | None = None
        self.aliases: list[Address] = []  # other addresses this connection is reused for
        self._idle: asyncio.TimerHandle | None = None
        self._first: asyncio.TimerHandle | None = None  # first-message deadline (inbound)
        self._slow: asyncio.TimerHandle | None = None  # deadline of the message in progress
        self._loop = asyncio.get_running_loop()
        self._aborted = ""
        self._upgrading = False  # TLS handshake in progress: hold what arrives until it ends

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = _addr(transport.get_extra_info("peername"))
        if self.outbound:
            self._touch()
            return
        owner = self.owner
        admission = owner.guard.admit(self, self.peer[0])
        if admission.refused is not None:
            owner.stats.rejected_connections += 1
            owner._rejected(admission.refused)
            transport.abort()
            return
        for old in admission.evict:
            assert isinstance(old, _StreamConnection)
            old.abort("pending-evicted")
        limits = owner.limits
        self._first = self._loop.call_later(limits.first_message_timeout, self._no_message)
        self._touch()
        if owner._server_ssl is not None:
            # RFC 3261 §26.2.1 TLS, upgraded here rather than by the server, so that the
            # connection is counted from the accept (asyncio hides it until the handshake ends).
            transport.pause_reading()
            self._upgrading = True
            task = self._loop.create_task(self._handshake(transport, owner._server_ssl))
            owner._tasks.add(task)
            task.add_done_callback(owner._tasks.discard)
            return
        self._join()

    def _join(self) -> None:
        """Enter the owner's connection table (refused at ``max_connections``)."""
        if not self.owner._register(self):
            self.owner.stats.rejected_connections += 1
            self.owner._rejected("connection-limit")
            self.owner.guard.release(self)
            if self.transport is not None:
                self.transport.abort()

    async def _handshake(self, raw: asyncio.Transport, ctx: ssl.SSLContext) -> None:
        if raw.is_closing():
            return
        try:
            tls = await self._loop.start_tls(
                raw,
                self,
                ctx,
                server_side=True,
                ssl_handshake_timeout=self.owner.limits.connect_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, RuntimeError) as exc:
            if not self._aborted:  # failed or timed out, not closed by us for another reason
                self.owner.stats.handshake_failures += 1
                self.owner._rejected("tls-handshake")
            self._aborted = self._aborted or type(exc).__name__
            raw.abort()
            self.owner.guard.release(self)
            return
        if tls is None or self._aborted:
            raw.abort()
            return
        self.transport = tls
        self._upgrading = False
        self._join()
        if self.buffer and not self._closing():  # decrypted before this task resumed
            self.data_received(b"")

    def _no_message(self) -> None:
        self._first = None
        if self.owner.guard.is_pending(self):
            self.abort("first-message")

    def _too_slow(self) -> None:
        self._slow = None
        self.abort("slow-message")

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._idle, self._first, self._slow):
            if timer is not None:
                timer.cancel()
        self.owner.guard.release(self)
        self.owner._unregister(self)

    def _touch(self) -> None:
        self.last_activity = self._loop.time()
        if self._idle is None:
            self._idle = self._loop.call_later(self.owner.limits.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._idle = None
        left = self.last_activity + self.owner.limits.idle_timeout - self._loop.time()
        if left > 0:
            self._idle = self._loop.call_later(left, self._check_idle)
        else:
            self.abort("idle")

    def abort(self, reason: str = "") -> None:
        """Close at once; ``reason`` ("idle", "buffer", "framing", "first-message",
        "slow-message", "pending-evicted") counts it as abusive."""
        if reason and not self._aborted:
            self.owner.stats.closed_abusive += 1
            self.owner._rejected(reason)
        self._aborted = self._aborted or reason or "closed"
        self.owner.guard.release(self)
        if self.transport is not None:
            self.transport.abort()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise TransportError(f"{self.owner.name}: connection {self.id} is closed")
        self.transport.write(data)
        self._touch()

    def data_received(self, data: bytes) -> None:
        self._touch()
        self.buffer += data
        if self._upgrading:
            return
        self._drain()
        if self._closing():
            return
        # The limit applies to what stays unframed: one read may carry many pipelined messages.
        if len(self.buffer) > self.owner.limits.max_buffer_bytes:
            self.abort("buffer")
        elif self.buffer and self.buffer != _CRLF:
            if self._slow is None:  # a message has started: it must end in time
                self._slow = self._loop.call_later(
                    self.owner.limits.message_timeout, self._too_slow
                )
        elif self._slow is not None:
            self._slow.cancel()
            self._slow = None

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def _drain(self) -> None:
        buf = self.buffer
        while buf:
            # RFC 5626 §4.4.1 keep-alives: a double CRLF is a ping (answered with one CRLF by the
            # side that accepted the connection); a lone CRLF is a pong, or noise before a message.
            if buf.startswith(_PING) and not self.outbound:
                del buf[:4]
                self.owner.stats.pongs_sent += 1
                if self.transport is None or self.transport.is_closing():
                    return
                self.write(_CRLF)
                continue
            if buf.startswith(_CRLF) and (self.outbound or (len(buf) > 2 and buf[2] != 13)):
                del buf[:2]
                if self.outbound:
                    self.last_pong = self._loop.time()
                    self.owner._pong(self.id)
                continue
            try:
                frame, consumed = frame_stream(buf, limits=self.owner.limits.parse)
            except SipParseError:
                # Framing lost: nothing after this point can be trusted (§18.3).
                self.abort("framing")
                return
            if frame is None:
                return
            del buf[:consumed]
            if self._slow is not None:  # that message ended in time; the next one starts now
                self._slow.cancel()
                self._slow = None
            if self._first is not None:
                self._first.cancel()
                self._first = None
                self.owner.guard.established(self)
            reply = self.owner._receive(frame, self.peer, self.id)
            if self.transport is None or self.transport.is_closing():
                return  # on_message closed us
            if reply is not None:
                self.owner._tap("out", reply, self.peer, self.id)
                self.write(reply)


class StreamTransport(Transport):
    """Shared machinery of TCP and TLS: a listener plus a table of connections, indexed by id and
    by remote address so responses and in-dialog requests reuse them (§18.2.2, RFC 5923)."""

    name = "tcp"

    def __init__(
        self,
        on_message: OnMessage,
        limits: TransportLimits,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(on_message, limits)
        self._server: asyncio.Server | None = None
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._by_id: dict[str, _StreamConnection] = {}
        self._by_addr: dict[Address, _StreamConnection] = {}
        self._connecting: dict[Address, asyncio.Future[_StreamConnection]] = {}
        self._pong_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # RFC 5922 §4: the SIP domain a TLS server at an address must prove (its certificate
        # is checked against the domain, not the address it resolved to); see expect_identity.
        self.server_names: dict[Address, str] = {}

    def expect_identity(self, addr: Address, domain: str) -> None:
        """Outbound TLS to ``addr`` must present a certificate for SIP ``domain`` (RFC 5922);
        the owner calls this when it resolves a domain to addresses (RFC 3263)."""
        self.server_names[addr] = domain

    async def _start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            # TLS is started per connection (_StreamConnection._handshake), not by the server.
            self._server = await loop.create_server(
                lambda: _StreamConnection(self, outbound=False), host, port, backlog=LISTEN_BACKLOG
            )
        except OSError as exc:
            raise TransportError(
                f"{self.name}: cannot bind {host}:{port}: {exc.strerror}"
            ) from None
        self.local_addr = _addr(self._server.sockets[0].getsockname())

    def _register(self, conn: _StreamConnection) -> bool:
        if len(self._by_id) >= self.limits.max_connections:
            return False
        self._by_id[conn.id] = conn
        self._by_addr[conn.peer] = conn
        return True

    def _unregister(self, conn: _StreamConnection) -> None:
        if self._by_id.pop(conn.id, None) is not None:
            self._lost(conn.peer, conn.id)
        for addr in (conn.peer, *conn.aliases):
            if self._by_addr.get(addr) is conn:
                del self._by_addr[addr]
        for fut in self._pong_waiters.pop(conn.id, []):
            if not fut.done():
                fut.set_exception(TransportError(f"{self.name}: connection {conn.id} closed"))

    def _pong(self, cid: str) -> None:
        for fut in self._pong_waiters.pop(cid, []):
            if not fut.done():
                fut.set_result(None)

    @property
    def connections(self) -> dict[str, Address]:
        """Open connections: id → remote address."""
        return {cid: c.peer for cid, c in self._by_id.items()}

    def has_connection(self, connection_id: str) -> bool:
        return connection_id in self._by_id

    def connection_for(self, addr: Address) -> str | None:
        conn = self._by_addr.get(addr)
        return None if conn is None else conn.id

    async def connect(self, addr: Address, *, server_name: str | None = None) -> str:
        """Open (or reuse) a connection to ``addr``. TLS verifies the chain, then the identity
        per RFC 5922 against ``server_name``, else the domain set by :meth:`expect_identity`,
        else the host of ``addr``; a certificate for another name is refused."""
        if self._closed:
            raise TransportError(f"{self.name}: transport is closed")
        conn = self._by_addr.get(addr)
        if conn is not None:
            return conn.id
        pending = self._connecting.get(addr)
        if pending is not None:
            return (await asyncio.shield(pending)).id
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_StreamConnection] = loop.create_future()
        self._connecting[addr] = fut
        name = server_name or self.server_names.get(addr) or addr[0]
        try:
            kwargs: dict[str, Any] = {}
            if self._client_ssl is not None:
                kwargs = {"ssl": self._client_ssl, "server_hostname": name}
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _StreamConnection(self, outbound=True), addr[0], addr[1], **kwargs
                ),
                self.limits.connect_timeout,
            )
            if self._client_ssl is not None:
                from callward.sip.tls import check_sip_domain  # cryptography: TLS users only

                assert proto.transport is not None
                try:
                    check_sip_domain(proto.transport.get_extra_info("ssl_object"), name)
                except TransportError:
                    proto.abort()
                    raise
            if not self._register(proto):
                proto.abort()
                raise TransportError(f"{self.name}: connection limit reached")
        except (OSError, TimeoutError, ssl.SSLError, TransportError) as exc:
            err = (
                exc
                if isinstance(exc, TransportError)
                else TransportError(f"{self.name}: cannot connect: {type(exc).__name__}: {exc}")
            )
            fut.set_exception(err)
            fut.exception()  # retrieved: concurrent waiters get it through shield
            raise err from None
        finally:
            self._connecting.pop(addr, None)
        if addr != proto.peer:  # connected by name: "localhost" → 127.0.0.1
            proto.aliases.append(addr)
            self._by_addr[addr] = proto
        fut.set_result(proto)
        return proto.id

    async def send(self, data: bytes, addr: Address) -> str | None:
        cid = await self.connect(addr)
        await self.send_to_connection(data, cid)
        return cid

    async def send_to_connection(self, data: bytes, connection_id: str) -> None:
        conn = self._by_id.get(connection_id)
        if conn is None:
            raise TransportError(f"{self.name}: no connection {connection_id} (flow failed)")
        self._tap("out", data, conn.peer, conn.id)
        conn.write(data)

    def send_nowait(self, data: bytes, addr: Address, connection_id: str | None = None) -> bool:
        conn = self._by_id.get(connection_id) if connection_id is not None else None
        conn = conn or self._by_addr.get(addr)
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return False
        self._tap("out", data, conn.peer, conn.id)
        conn.write(data)
        return True

    async def ping(self, connection_id: str, timeout: float = 10.0) -> None:
        """RFC 5626 §4.4.1 keep-alive from the connecting side: send CRLFCRLF and wait for the
        CRLF pong; TransportError when none comes within ``timeout`` (the flow has failed)."""
        conn = self._by_id.get(connection_id)
        if conn is None:
            raise TransportError(f"{self.name}: no connection {connection_id}")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pong_waiters.setdefault(connection_id, []).append(fut)
        conn.write(_PING)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TransportError(f"{self.name}: no pong on {connection_id}") from None

    async def close_connection(self, connection_id: str) -> None:
        conn = self._by_id.get(connection_id)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._by_id.values()):
            conn.abort()
        self._by_id.clear()
        self._by_addr.clear()
        if self._server is not None:
            await self._server.wait_closed()


class TcpTransport(StreamTransport):
    """SIP over TCP (§18.3): Content-Length framing, partial reads, pipelining, keep-alives."""

    name = "tcp"

    @classmethod
    async def listen(
        cls,
        host: str,
        port: int,
        on_message: OnMessage,
        *,
        limits: TransportLimits | None = None,
    ) -> TcpTransport:
        self = cls(on_message, limits or TransportLimits())
        await self._start(host, port)
        return self


class TlsTransport(StreamTransport):
    """SIP over TLS (§26.2.1). Outbound connections verify the server certificate chain
    (``client_ssl`` defaults to the system trust store) and its identity per RFC 5922 (the SIP
    domain in a ``sip:`` URI or dNSName subjectAltName, no wildcards, the CN only without SANs)."""

    name = "tls"

    @classmethod
    async def listen(
        cls,
        host: str,
        port: int,
        on_message: OnMessage,
        *,
        server_ssl: ssl.SSLContext,
        client_ssl: ssl.SSLContext | None = None,
        limits: TransportLimits | None = None,
    ) -> TlsTransport:
        if client_ssl is None:
            from callward.sip.tls import TlsPolicy, client_context

            client_ssl = client_context(TlsPolicy())  # system trust store, RFC 5922 names
        self = cls(on_message, limits or TransportLimits(), server_ssl, client_ssl)
        await self._start(host, port)
        return self
