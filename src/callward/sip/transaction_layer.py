"""The transaction layer: many transactions behind one sans-IO object (RFC 3261 §17.1.3, §17.2.3).

It matches incoming responses to client transactions and incoming requests to server
transactions, absorbs retransmissions, creates server transactions for new requests, and
multiplexes every transaction's timers into one deadline (a heap with lazy deletion, so an
edge with 100k live transactions pays O(log n) per timer, not O(n)).

The asyncio adapter loop is::

    layer.receive(parse_message(data), now, peer=addr, reliable=False)
    for t in layer.datagrams_to_send(): sock.sendto(t.data, t.peer)
    while (ev := layer.next_event()) is not None: ...dispatch with match...
    loop.call_at(layer.get_timer(), lambda: layer.handle_timer(loop.time()))

``peer`` is opaque here: whatever the transport needs to send back (an address tuple, a
connection id); it comes back on :class:`Transmit` and on the events.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

from callward.errors import LocalProtocolError
from callward.sip.message import Request, Response, serialize
from callward.sip.timers import TimerConfig
from callward.sip.transaction import (
    MAGIC_COOKIE,
    AckReceived,
    ClientTransaction,
    ServerTransaction,
    StrayResponse,
    TransactionEvent,
    TransactionKey,
    client_key,
)

__all__ = ["TransactionLayer", "Transmit", "server_key"]


@dataclass(frozen=True, slots=True)
class Transmit:
    """One message to put on the wire. ``key`` is None for stateless sends (ACK for 2xx)."""

    data: bytes
    message: Request | Response
    key: TransactionKey | None
    peer: Any = None


def server_key(request: Request) -> TransactionKey:
    """§17.2.3 matching key. With the magic cookie: branch + sent-by + method (ACK → INVITE).
    Without it (an RFC 2543 peer) the key is built from Request-URI, From tag, Call-ID, CSeq
    number and the whole top Via, which is what §17.2.3 compares; the To tag is left out so the
    ACK (which carries our tag) still finds the INVITE's transaction."""
    via = request.top_via
    sent_by = f"{via.host.lower()}:{via.port or ''}"
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if not branch.startswith(MAGIC_COOKIE):
        parts = (
            str(request.uri),
            request.from_.tag or "",
            request.call_id,
            str(request.cseq.seq),
            str(via),
        )
        branch = "rfc2543:" + "\x00".join(parts)
    return TransactionKey(branch, method, sent_by)


class TransactionLayer:
    """All transactions of one SIP element. See the module docstring for the loop."""

    def __init__(self, *, timers: TimerConfig | None = None, auto_trying: bool = True) -> None:
        self.timers = timers or TimerConfig()
        self.auto_trying = auto_trying
        self.clients: dict[TransactionKey, ClientTransaction] = {}
        self.servers: dict[TransactionKey, ServerTransaction] = {}
        self._heap: list[tuple[float, int, bool, TransactionKey]] = []
        self._seq = itertools.count()
        self._scheduled: dict[tuple[bool, TransactionKey], float] = {}
        self._out: list[Transmit] = []
        self._events: deque[TransactionEvent] = deque()

    def __len__(self) -> int:
        return len(self.clients) + len(self.servers)

    # ------------------------------------------------------------ outputs
    def datagrams_to_send(self) -> list[Transmit]:
        out = self._out
        self._out = []
        return out

    def next_event(self) -> TransactionEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, is_client, key = heap[0]
            if self._scheduled.get((is_client, key)) == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    # ------------------------------------------------------------ TU-side inputs
    def send_request(
        self, request: Request, now: float, *, reliable: bool = False, peer: Any = None
    ) -> ClientTransaction:
        """Start a client transaction for ``request`` (its top Via needs a z9hG4bK branch)."""
        key = client_key(request)
        if key in self.clients:
            raise LocalProtocolError(f"a client transaction with branch {key.branch} exists")
        tx = ClientTransaction.create(request, reliable=reliable, timers=self.timers, peer=peer)
        self.clients[key] = tx
        tx.send_request(now)
        self._pump(tx, True)
        return tx

    def send_response(self, key: TransactionKey, response: Response, now: float) -> None:
        """Send the TU's response on the server transaction ``key`` (from RequestReceived)."""
        tx = self.servers.get(key)
        if tx is None:
            raise LocalProtocolError("no server transaction for this response (terminated?)")
        tx.send_response(response, now)
        self._pump(tx, False)

    def send_stateless(self, message: Request | Response, peer: Any = None) -> None:
        """Send outside any transaction: the UAC core's ACK for a 2xx (§13.2.2.4), a 2xx
        retransmission by the UAS core (§13.3.1.4), a stateless proxy's forward."""
        self._out.append(Transmit(serialize(message), message, None, peer))

    def transport_error(self, key: TransactionKey, now: float) -> None:
        for is_client, table in ((True, self.clients), (False, self.servers)):
            tx: ClientTransaction | ServerTransaction | None = table.get(key)
            if tx is not None:
                tx.transport_error(now)
                self._pump(tx, is_client)

    def abandon(self, key: TransactionKey) -> None:
        """Forget a client transaction without waiting for it (a proxy that CANCELled a branch
        which then stays silent, RFC 3261 §9.1: "the client transaction SHOULD be destroyed"
        64*T1 after the CANCEL). No event is emitted; later responses become stray."""
        if self.clients.pop(key, None) is not None:
            self._scheduled.pop((True, key), None)

    def cancel_target(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (§9.2: same match rules as
        §17.2.3 but with method INVITE)."""
        key = server_key(cancel)
        return self.servers.get(TransactionKey(key.branch, "INVITE", key.sent_by))

    # ------------------------------------------------------------ network inputs
    def receive(
        self,
        message: Request | Response,
        now: float,
        *,
        reliable: bool = False,
        peer: Any = None,
        key: TransactionKey | None = None,
    ) -> None:
        """Feed one parsed message. Raises SipParseError if it lacks Via/CSeq (the transport
        answers 400 to requests when it can and drops responses). ``key``: the request's
        :func:`server_key` when the caller computed it already."""
        if isinstance(message, Response):
            tx = self.clients.get(client_key_of_response(message))
            if tx is None:
                self._events.append(StrayResponse(message, peer))
                return
            tx.receive(message, now)
            self._pump(tx, True)
            return
        if key is None:
            key = server_key(message)
        stx = self.servers.get(key)
        if message.method == "ACK":
            if stx is None:
                self._events.append(AckReceived(message, None, peer))
                return
            stx.receive(message, now)
            self._pump(stx, False)
            return
        if stx is None:
            stx = ServerTransaction.create(
                message,
                key,
                reliable=reliable,
                timers=self.timers,
                peer=peer,
                auto_trying=self.auto_trying,
            )
            self.servers[key] = stx
        stx.receive(message, now)
        self._pump(stx, False)

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, is_client, key = heapq.heappop(heap)
            if self._scheduled.get((is_client, key)) != deadline:
                continue  # stale entry: the transaction re-armed or ended
            del self._scheduled[(is_client, key)]
            tx: ClientTransaction | ServerTransaction | None = (
                self.clients.get(key) if is_client else self.servers.get(key)
            )
            if tx is None:
                continue
            tx.handle_timer(now)
            self._pump(tx, is_client)

    # ------------------------------------------------------------ plumbing
    def _pump(self, tx: ClientTransaction | ServerTransaction, is_client: bool) -> None:
        for data, msg in tx.messages_to_send():
            self._out.append(Transmit(data, msg, tx.key, tx.peer))
        while (ev := tx.next_event()) is not None:
            self._events.append(ev)
        slot = (is_client, tx.key)
        if tx.terminated:
            (self.clients if is_client else self.servers).pop(tx.key, None)
            self._scheduled.pop(slot, None)
            return
        deadline = tx.get_timer()
        if deadline is None:
            self._scheduled.pop(slot, None)
        elif self._scheduled.get(slot) != deadline:
            self._scheduled[slot] = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), is_client, tx.key))


def client_key_of_response(response: Response) -> TransactionKey:
    """§17.1.3: top Via branch + CSeq method of the response."""
    return TransactionKey(response.top_via.branch or "", response.cseq.method)
