"""``callward relay --ng``: the asyncio adapter around :class:`~callward.relay.ng_server.NgServer`.

It only moves bytes and time. Every socket (the ng control socket and each media port) is a
raw non-blocking UDP socket read with ``loop.add_reader`` that drains what the kernel queued
per wake-up (the edge measured this fastest: asyncio's datagram transport pays one loop
iteration per datagram); media goes straight from the socket to the call's
:class:`~callward.relay.media_core.MediaCore` and out of the other leg's socket. A leg in
steady state is forwarded by the optional C accelerator (``relay/fastpath.py``: recvmmsg,
SRTP through libsrtp, RFC 3550 statistics, sendmmsg), which hands back, in order, every
datagram it cannot decide to that reference path. One
``loop.call_at`` timer follows the server's earliest deadline; events are published by one
task from a queue. Media sockets carry the configured DSCP (RFC 2474).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from typing import Any

from callward.errors import MediaError, TransportError
from callward.events import Event, EventBus
from callward.relay import fastpath
from callward.relay.leg import DSCP_EF, open_media_pair
from callward.relay.media_core import MediaCore, MosEstimator, emodel_mos
from callward.relay.ng_server import NgServer, NgSettings

__all__ = ["NgDaemon", "SocketPortPool", "pump"]

Address = tuple[str, int]
_BUDGET = 256


def pump(
    core: MediaCore,
    leg: int,
    rtcp_socket: bool,
    sock: socket.socket,
    ports: tuple[int, int],
    sockets: dict[int, socket.socket],
    now: float,
) -> None:
    """Everything queued on one of ``core``'s sockets: read, relay, send. ``ports`` are the
    legs' RTP ports (RTCP on port + 1), ``sockets`` the bound sockets by port.

    A leg in steady state is forwarded by the C accelerator (``relay/fastpath.py``), which
    returns, in order, what it cannot decide; those datagrams and every datagram of a leg
    that is not armed take the reference path (:meth:`MediaCore.receive_datagram`), after
    which the leg is armed again if it is steady."""
    fast = None if rtcp_socket or not core.enable_fast() else core.fast
    if fast is not None and fast[leg].armed:
        out = sockets.get(ports[1 - leg])
        if out is None:
            return
        slow = fastpath.ACCEL.drain(sock.fileno(), out.fileno(), fast[leg], now, _BUDGET)
        if slow:
            relay_slow(core, leg, slow, ports, sockets, now)
        return
    else:
        for _ in range(_BUDGET):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            core.receive_datagram(
                leg, data, (str(addr[0]), int(addr[1])), now, rtcp_socket=rtcp_socket
            )
    _send(core, ports, sockets)
    if fast is not None:
        fastpath.arm(core, leg)


def relay_slow(
    core: MediaCore,
    leg: int,
    slow: list[tuple[bytes, Address]],
    ports: tuple[int, int],
    sockets: dict[int, socket.socket],
    now: float,
) -> None:
    """The datagrams the accelerator handed back, in order, through the reference path."""
    for data, addr in slow:
        core.receive_datagram(leg, data, addr, now)
    _send(core, ports, sockets)
    fastpath.arm(core, leg)


def _send(core: MediaCore, ports: tuple[int, int], sockets: dict[int, socket.socket]) -> None:
    for out_dg in core.datagrams_to_send():
        target = sockets.get(ports[out_dg.leg] + out_dg.rtcp_socket)
        if target is None:
            continue
        try:
            target.sendto(out_dg.data, out_dg.dest)
        except (BlockingIOError, InterruptedError):
            pass  # a full send buffer drops like the network would
        except OSError:
            core.counters[out_dg.leg].no_destination += 1


class SocketPortPool:
    """Binds RTP/RTCP pairs from ``[port_min, port_max]`` and reads them into the daemon."""

    def __init__(
        self, host: str, port_min: int, port_max: int, dscp: int, on_readable: Any
    ) -> None:
        if not 0 < port_min < port_max <= 65535:
            raise MediaError(f"bad media port range {port_min}-{port_max}")
        self.host = host
        self.port_min, self.port_max = port_min, port_max
        self.dscp = dscp
        self.sockets: dict[int, socket.socket] = {}
        #: port -> (FastLeg, fd in, fd out, core, leg, ports): an armed leg's shortcut
        self.fast_routes: dict[int, tuple[Any, int, int, MediaCore, int, tuple[int, int]]] = {}
        self._on_readable = on_readable
        self._last = random.randrange(port_min, port_max)  # ports are handed out in turn
        self._loop = asyncio.get_running_loop()

    def allocate(self) -> int:
        rtp, rtcp = open_media_pair(
            self.host, self.port_min, self.port_max, self.dscp, after=self._last
        )
        port = self._last = rtp.getsockname()[1]
        for sock, p in ((rtp, port), (rtcp, port + 1)):
            self.sockets[p] = sock
            self._loop.add_reader(sock.fileno(), self._on_readable, p)
        return int(port)

    def release(self, port: int) -> None:
        for p in (port, port + 1):
            self.fast_routes.pop(p, None)
            sock = self.sockets.pop(p, None)
            if sock is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(sock.fileno())
                sock.close()

    def close(self) -> None:
        for port in [p for p in self.sockets if p % 2 == 0]:
            self.release(port)


class NgDaemon:
    """``await NgDaemon.start(...)`` binds the control socket; ``stop()`` frees every port."""

    def __init__(
        self,
        settings: NgSettings,
        *,
        control: Address,
        port_range: tuple[int, int] = (20000, 29999),
        dscp: int = DSCP_EF,
        bus: EventBus | None = None,
        mos_estimator: MosEstimator | None = emodel_mos,
    ) -> None:
        self.settings = settings
        self.mos_estimator = mos_estimator
        self.control_address = control
        self.port_range = port_range
        self.dscp = dscp
        self.bus = bus
        self.server: NgServer | None = None
        self.pool: SocketPortPool | None = None
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._publisher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.publish_errors = 0

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        host, port = self.control_address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise TransportError(f"ng: cannot bind {host}:{port}: {exc.strerror}") from None
        self._sock = sock
        self.pool = SocketPortPool(
            self.settings.address, *self.port_range, self.dscp, self._media_readable
        )
        self.server = NgServer(self.settings, self.pool, wall_offset=time.time() - loop.time(),
                               mos_estimator=self.mos_estimator)  # fmt: skip
        loop.add_reader(sock.fileno(), self._control_readable)
        self._publisher = loop.create_task(self._publish_loop())

    @property
    def bound(self) -> Address:
        if self._sock is None:
            raise TransportError("ng daemon is not started")
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    # -- control ---------------------------------------------------------------------------
    def _control_readable(self) -> None:
        sock, server, loop = self._sock, self.server, self._loop
        if sock is None or server is None or loop is None:
            return
        for _ in range(_BUDGET):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            server.receive_datagram(data, (str(addr[0]), int(addr[1])), loop.time())
        for wire, peer in server.datagrams_to_send():
            with contextlib.suppress(OSError):
                sock.sendto(wire, peer)
        self._service()

    # -- media -------------------------------------------------------------------------------
    def _media_readable(self, port: int) -> None:
        server, pool, loop = self.server, self.pool, self._loop
        if server is None or pool is None or loop is None:
            return
        route = pool.fast_routes.get(port)
        if route is not None and route[0].armed:  # steady state: straight to the accelerator
            fl, fd_in, fd_out, core, leg, ports = route
            now = loop.time()
            slow = fastpath.ACCEL.drain(fd_in, fd_out, fl, now, _BUDGET)
            if slow:
                relay_slow(core, leg, slow, ports, pool.sockets, now)
            return
        sock = pool.sockets.get(port)
        if sock is None:
            return
        entry = server.core_for(port)
        now = loop.time()
        if entry is None:  # offered, not answered yet: nothing to relay to
            for _ in range(_BUDGET):
                try:
                    sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue
            return
        core, leg, rtcp_socket = entry
        call = server.calls.get(core.call_id)
        if call is not None:
            ports = (call.legs[0].port, call.legs[1].port)
            pump(core, leg, rtcp_socket, sock, ports, pool.sockets, now)
            out = pool.sockets.get(ports[1 - leg])
            if core.fast is not None and core.fast[leg].armed and out is not None:
                pool.fast_routes[port] = (core.fast[leg], sock.fileno(), out.fileno(), core,
                                          leg, ports)  # fmt: skip

    # -- timers and events -------------------------------------------------------------------
    def _service(self) -> None:
        server, loop = self.server, self._loop
        if server is None or loop is None:
            return
        while (ev := server.next_event()) is not None:
            self._events.put_nowait(ev)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = server.get_timer()
        if when is not None:
            self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.server is not None and self._loop is not None:
            self.server.handle_timer(self._loop.time())
        self._service()

    async def _publish_loop(self) -> None:
        while True:
            ev = await self._events.get()
            if self.bus is None:
                continue
            try:
                await self.bus.publish(ev)
            except Exception:  # a bus outage must not stop the relay
                self.publish_errors += 1

    async def stop(self) -> None:
        loop = self._loop
        if self.server is not None and loop is not None:
            self.server.end_all("shutdown", loop.time())
            while (ev := self.server.next_event()) is not None:
                self._events.put_nowait(ev)
        if self._timer is not None:
            self._timer.cancel()
        if self._sock is not None and loop is not None:
            loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self.pool is not None:
            self.pool.close()
        # let queued events out, then stop the publisher
        for _ in range(100):
            if self._events.empty():
                break
            await asyncio.sleep(0)
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
