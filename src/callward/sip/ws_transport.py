"""SIP over WebSocket (RFC 7118), ``ws`` and ``wss``. Part of the transport adapter; import from
:mod:`callward.sip.transport`."""

from __future__ import annotations

import asyncio
import ssl

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from callward.errors import TransportError
from callward.sip.transport_base import (
    LISTEN_BACKLOG,
    Address,
    OnMessage,
    Transport,
    TransportLimits,
    _addr,
    _ids,
)

__all__ = ["WsTransport"]


# --------------------------------------------------------------------------------------------
# WebSocket (RFC 7118): one SIP message per WebSocket message, subprotocol "sip"
# --------------------------------------------------------------------------------------------

_WsConn = ServerConnection | ClientConnection


class WsTransport(Transport):
    """SIP over WebSocket (RFC 7118), ``ws`` or ``wss`` when ``server_ssl`` is given.

    No framing is needed (§5: each SIP message is one WebSocket message) and RFC 5626 CRLF
    keep-alives are not used over WebSocket; the idle timeout applies to WebSocket messages.
    Compression is off: permessage-deflate is a decompression-bomb vector and costs CPU."""

    name = "ws"

    def __init__(
        self,
        on_message: OnMessage,
        limits: TransportLimits,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(on_message, limits)
        self.name = "wss" if server_ssl is not None else "ws"
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._server: Server | None = None
        self._by_id: dict[str, tuple[_WsConn, Address]] = {}
        self._by_addr: dict[Address, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def listen(
        cls,
        host: str,
        port: int,
        on_message: OnMessage,
        *,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        limits: TransportLimits | None = None,
    ) -> WsTransport:
        self = cls(on_message, limits or TransportLimits(), server_ssl, client_ssl)
        guard, stats, rejected = self.guard, self.stats, self._rejected

        class _Guarded(ServerConnection):
            """Counted by the guard from the accept (after TLS for wss, whose handshake is
            bounded by ``connect_timeout``), released when it closes."""

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                peer = transport.get_extra_info("peername")
                admission = guard.admit(self, str(peer[0]) if peer else "")
                if admission.refused is not None:
                    stats.rejected_connections += 1
                    rejected(admission.refused)
                    transport.abort()  # type: ignore[attr-defined]
                for old in admission.evict:
                    assert isinstance(old, ServerConnection)
                    stats.closed_abusive += 1
                    rejected("pending-evicted")
                    old.transport.abort()

            def connection_lost(self, exc: Exception | None) -> None:
                guard.release(self)
                super().connection_lost(exc)

        try:
            self._server = await ws_serve(
                self._serve_one,
                host,
                port,
                create_connection=_Guarded,
                backlog=LISTEN_BACKLOG,
                subprotocols=["sip"],  # type: ignore[list-item]
                process_request=self._check_subprotocol,
                compression=None,
                max_size=self.limits.parse.max_message_bytes,
                ping_interval=None,
                open_timeout=self.limits.connect_timeout,
                ssl=server_ssl,
            )
        except OSError as exc:
            raise TransportError(
                f"{self.name}: cannot bind {host}:{port}: {exc.strerror}"
            ) from None
        self.local_addr = _addr(next(iter(self._server.sockets)).getsockname())
        return self

    def _check_subprotocol(self, conn: ServerConnection, request: WsRequest) -> WsResponse | None:
        """RFC 7118 §4.1: the client must offer the "sip" subprotocol; refuse otherwise, and
        refuse beyond ``max_connections`` before the handshake completes."""
        offered = ",".join(request.headers.get_all("Sec-WebSocket-Protocol"))
        if "sip" not in [p.strip().lower() for p in offered.split(",")]:
            return conn.respond(400, "WebSocket subprotocol 'sip' required (RFC 7118)\n")
        if len(self._by_id) >= self.limits.max_connections:
            self.stats.rejected_connections += 1
            self._rejected("connection-limit")
            return conn.respond(503, "too many connections\n")
        return None

    async def _serve_one(self, ws: ServerConnection) -> None:
        await self._pump(ws, _addr(ws.remote_address))

    async def _pump(self, ws: _WsConn, peer: Address) -> None:
        cid = f"{self.name}-{next(_ids)}"
        self._by_id[cid] = (ws, peer)
        self._by_addr[peer] = cid
        pending = self.guard.is_pending(ws)
        try:
            while True:
                timeout = self.limits.idle_timeout
                if pending:  # slowloris: the first message is due soon after the accept
                    timeout = min(timeout, self.limits.first_message_timeout)
                try:
                    data = await asyncio.wait_for(ws.recv(), timeout)
                except TimeoutError:
                    self.stats.closed_abusive += 1
                    self._rejected("first-message" if pending else "idle")
                    return
                if pending:
                    self.guard.established(ws)
                    pending = False
                if isinstance(data, str):
                    data = data.encode("utf-8", "surrogateescape")
                reply = self._receive(data, peer, cid)
                if reply is not None:
                    self._tap("out", reply, peer, cid)
                    await ws.send(reply.decode("utf-8", "replace"))
        except ConnectionClosed:
            return
        finally:
            self._by_id.pop(cid, None)
            if self._by_addr.get(peer) == cid:
                del self._by_addr[peer]
            self._lost(peer, cid)
            await ws.close()

    def has_connection(self, connection_id: str) -> bool:
        return connection_id in self._by_id

    def connection_for(self, addr: Address) -> str | None:
        return self._by_addr.get(addr)

    async def connect(self, addr: Address, *, server_name: str | None = None) -> str:
        """Open (or reuse) a WebSocket to ``addr`` (``wss`` verifies the certificate)."""
        cid = self._by_addr.get(addr)
        if cid is not None:
            return cid
        if len(self._by_id) >= self.limits.max_connections:
            raise TransportError(f"{self.name}: connection limit reached")
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        scheme = "wss" if self.name == "wss" else "ws"
        try:
            ws = await ws_connect(
                f"{scheme}://{host}:{addr[1]}",
                subprotocols=["sip"],  # type: ignore[list-item]
                compression=None,
                max_size=self.limits.parse.max_message_bytes,
                ping_interval=None,
                open_timeout=self.limits.connect_timeout,
                ssl=self._client_ssl if scheme == "wss" else None,
                server_hostname=server_name if scheme == "wss" else None,
            )
        except (OSError, TimeoutError, WebSocketException, ssl.SSLError) as exc:
            raise TransportError(f"{self.name}: cannot connect: {type(exc).__name__}") from None
        if ws.subprotocol != "sip":
            await ws.close()
            raise TransportError(f"{self.name}: server did not accept subprotocol 'sip'")
        task = asyncio.get_running_loop().create_task(self._pump(ws, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.sleep(0)  # let _pump register the connection
        cid = self._by_addr.get(addr)
        if cid is None:
            raise TransportError(f"{self.name}: connection closed during setup")
        return cid

    async def send(self, data: bytes, addr: Address) -> str | None:
        cid = await self.connect(addr)
        await self.send_to_connection(data, cid)
        return cid

    async def send_to_connection(self, data: bytes, connection_id: str) -> None:
        entry = self._by_id.get(connection_id)
        if entry is None:
            raise TransportError(f"{self.name}: no connection {connection_id} (flow failed)")
        ws, peer = entry
        self._tap("out", data, peer, connection_id)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            await ws.send(data)  # a binary body: send a binary message (RFC 7118 §5)
        else:
            try:
                await ws.send(text)
            except ConnectionClosed:
                raise TransportError(f"{self.name}: connection {connection_id} closed") from None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for ws, _ in list(self._by_id.values()):
            await ws.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
