"""The asyncio side of media anchoring: one ng connection per relay
(:class:`~callward.ng.transport.NgConnection`), the answer to the core's
:class:`~callward.edge.media_anchor.RelayCommand` questions, and the ``ping`` health check
that takes a dead relay out of rotation for new calls (and puts it back when it answers).

With ``bus`` (relays in other processes: ``callward serve``'s relay workers), each ``delete``
reply's per-leg statistics become MediaStats on that bus (``ng/stats.py``), so the CDR carries
the relay's measurements although the relay publishes nothing itself."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

from callward.edge.media_anchor import RelayCommand, RelayPool, RelayTarget
from callward.errors import CallwardError, NgError
from callward.events import EventBus
from callward.ng.protocol import NgCommand, NgRequest
from callward.ng.stats import media_stats_from_reply
from callward.ng.transport import NgConnection

__all__ = ["RelayLinks"]


class RelayLinks:
    def __init__(
        self,
        pool: RelayPool,
        *,
        ping_s: float = 5.0,
        timeout_s: float = 0.5,
        attempts: int = 3,
        bus: EventBus | None = None,
    ) -> None:
        self.pool = pool
        self.bus = bus
        self._seq = itertools.count(1).__next__
        self.ping_s = ping_s
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._conns: dict[str, NgConnection] = {}
        self._task: asyncio.Task[None] | None = None

    async def _conn(self, relay: RelayTarget) -> NgConnection:
        conn = self._conns.get(relay.key)
        if conn is None or conn.transport is None:
            conn = await NgConnection.open(
                (relay.host, relay.port), timeout_s=self.timeout_s, attempts=self.attempts
            )
            self._conns[relay.key] = conn
        return conn

    async def answer(self, query: object) -> object:
        """Handler for ``EdgeServer.answer_with(RelayCommand, ...)``: the reply dictionary, or
        the error (the core then raises it in the task that asked)."""
        assert isinstance(query, RelayCommand)
        try:
            conn = await self._conn(query.relay)
            reply = await conn.request(query.request)
        except CallwardError as exc:
            self.pool.mark(query.relay, False)
            return exc
        if self.bus is not None and query.request.command is NgCommand.DELETE:
            for ev in media_stats_from_reply(
                reply.body, query.request.call_id, ts=time.time(), seq=self._seq
            ):
                await self.bus.publish(ev)
        return reply.body

    async def check(self) -> None:
        """One ``ping`` round over every relay (concurrently)."""

        async def one(relay: RelayTarget) -> None:
            try:
                conn = await self._conn(relay)
                reply = await conn.request(NgRequest(NgCommand.PING))
                self.pool.mark(relay, reply.body.get("result") == "pong")
            except (CallwardError, NgError):
                self.pool.mark(relay, False)

        await asyncio.gather(*(one(r) for r in self.pool.relays))

    async def _health_loop(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.ping_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._health_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
