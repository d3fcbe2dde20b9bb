"""Noticing that the phone's network changed (Wi-Fi <-> cellular, a new address, IPv4 <-> IPv6).

The question a phone needs answered is not "which interfaces exist" but "from which address
would a packet to my edge leave now": :func:`local_address_toward` asks the kernel (a connected
UDP socket's local address; nothing is sent). :class:`RouteWatch` polls it and calls back when
the answer changes, or comes back after the route was gone; the phone then hands over
(:meth:`~callward.ua.phone.Phone.handover`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

__all__ = ["RouteWatch", "local_address_toward"]

Address = tuple[str, int]


def local_address_toward(dest: Address) -> str | None:
    """The source address the kernel picks for ``dest`` now; None when there is no route."""
    family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(dest)
            return str(sock.getsockname()[0])
    except OSError:
        return None


class RouteWatch:
    """Polls the route to ``dest`` every ``interval`` seconds; ``on_change(new_address)`` runs
    (awaited, one at a time) when the source address differs from the last one seen."""

    def __init__(
        self,
        dest: Address,
        current: str,
        on_change: Callable[[str], Awaitable[object]],
        *,
        interval: float = 1.0,
    ) -> None:
        self.dest = dest
        self.current = current
        self.on_change = on_change
        self.interval = interval
        self.changes = 0
        self.outages = 0  # polls that found no route at all
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            addr = await asyncio.to_thread(local_address_toward, self.dest)
            if addr is None:
                self.outages += 1
                continue
            if addr != self.current:
                self.current = addr
                self.changes += 1
                await self.on_change(addr)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
