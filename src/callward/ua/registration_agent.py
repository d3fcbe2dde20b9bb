"""The asyncio adapter of :class:`~callward.ua.registration.RegistrationManager` on a
:class:`~callward.ua.phone.Phone`: it runs the REGISTER transactions the manager asks for, feeds
back their outcome, re-arms the manager's one timer, and performs keep-alives on the wire (CRLF
ping on TCP/TLS, STUN Binding on UDP, RFC 5626 §4.4)::

    agent = await RegistrationAgent.start(phone, [edge_a, edge_b], domain="example.org",
                                          instance=f"urn:uuid:{uuid4()}")
    await agent.wait_registered(5)
    ...
    await agent.stop()          # unregisters every flow
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from callward.errors import AuthError, RemoteProtocolError, TransportError
from callward.events import RegistrationChanged
from callward.nat.keepalive import KeepAlivePolicy
from callward.nat.stun import binding_request, is_stun, parse_binding_response
from callward.sip.message import Headers, Response
from callward.sip.transport import StreamTransport, WireEvent
from callward.ua.call import LocalEndpoint
from callward.ua.credentials import CredentialSource, DigestCredentials
from callward.ua.registration import (
    FlowDown,
    FlowUp,
    KeepAliveDue,
    OutgoingRegister,
    RegistrationManager,
    RetryPolicy,
    Unregistered,
)
from callward.usage import plan_keepalive

if TYPE_CHECKING:
    from callward.ua.phone import Phone

__all__ = ["RegistrationAgent", "keepalive_policy"]

Address = tuple[str, int]


def keepalive_policy(
    transport: str,
    *,
    bytes_per_hour_cap: float | None = None,
    initial_interval: float | None = None,
    min_interval: float = 10.0,
    learn: bool = True,
) -> KeepAlivePolicy:
    """RFC 5626 §4.4: STUN on UDP, CRLF on connection-oriented transports; the bytes per
    keep-alive come from the usage planner so the cap and the planner agree."""
    method = "stun" if transport == "udp" else "crlf"
    carrier = {"udp": "udp", "tcp": "tcp", "ws": "tcp"}.get(transport, "tls")
    per = plan_keepalive(method, 3600, transport=carrier).bytes_per_exchange
    return KeepAlivePolicy(
        method,
        per,
        initial_interval=initial_interval,
        min_interval=min_interval,
        bytes_per_hour_cap=bytes_per_hour_cap,
        learn=learn,
    )


class RegistrationAgent:
    """Drives one RegistrationManager over a phone's transport. See the module docstring."""

    def __init__(self, phone: Phone, manager: RegistrationManager, *, ka_timeout: float) -> None:
        self.phone = phone
        self.manager = manager
        self.ka_timeout = ka_timeout
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stun: dict[bytes, asyncio.Future[Address]] = {}
        self._changed = asyncio.Event()
        self.settled = asyncio.Event()  # our binding names the address the registrar sees
        self.keepalives_sent = 0
        self.mapped: dict[int, Address] = {}
        phone.transport.add_tap(self._on_wire)

    @classmethod
    async def start(
        cls,
        phone: Phone,
        edges: Sequence[Address],
        *,
        domain: str,
        expires: int = 600,
        instance: str | None = None,
        credentials: CredentialSource | None = None,
        retry: RetryPolicy | None = None,
        keepalive: KeepAlivePolicy | bool = True,
        ka_timeout: float = 5.0,
        rng: random.Random | None = None,
    ) -> RegistrationAgent:
        if credentials is None and phone.password is not None:
            credentials = DigestCredentials(phone.auth_user, phone.password)
        phone.local = LocalEndpoint(
            phone.user,
            domain,
            phone.local.host,
            phone.local.port,
            phone.local.transport,
            phone.local.display,
        )
        if keepalive is True:
            keepalive = keepalive_policy(phone.transport.name)
        manager = RegistrationManager(
            phone.local,
            edges,
            domain=domain,
            expires=expires,
            instance=instance,
            credentials=credentials,
            retry=retry,
            keepalive=keepalive or None,
            rng=rng,
        )
        self = cls(phone, manager, ka_timeout=ka_timeout)
        phone.registration = self
        manager.start(phone.now())
        self._pump()
        return self

    # ------------------------------------------------------------------ public
    def registered(self) -> list[int]:
        return self.manager.registered(self.phone.now())

    def active_edge(self) -> Address | None:
        """Where calls go: the first registered flow's edge (RFC 5626 §4.3 failover)."""
        flow = self.manager.active_flow(self.phone.now())
        return None if flow is None else self.manager.flows[flow].edge

    async def wait_registered(self, timeout: float | None = None, *, flows: int = 1) -> None:
        async def until() -> None:
            while len(self.registered()) < flows:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    def refresh(self) -> bool:
        started = self.manager.refresh(self.phone.now())
        self._pump()
        return started

    def set_online(self, online: bool) -> None:
        self.manager.set_online(online, self.phone.now())
        self._pump()

    def address_changed(self) -> None:
        """The phone moved to a new local address (:meth:`Phone.rebind` updated ``local``)."""
        self.settled.clear()
        self.manager.address_changed(self.phone.local, self.phone.now())
        self._pump()

    async def stop(self, timeout: float = 10.0) -> None:
        """Unregister every flow (``Expires: 0``) and wait for the answers (bounded)."""
        self.manager.stop(self.phone.now())
        self._pump()
        with contextlib.suppress(TimeoutError):
            await self._wait_stopped(timeout)
        self.close()

    async def _wait_stopped(self, timeout: float) -> None:
        async def until() -> None:
            while not self.manager.stopped:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        for fut in self._stun.values():
            if not fut.done():
                fut.cancel()
        self._stun.clear()
        if self.phone.registration is self:
            self.phone.registration = None

    # ------------------------------------------------------------------ plumbing
    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pump(self) -> None:
        for out in self.manager.requests_to_send():
            self._spawn(self._run(out))
        while (ev := self.manager.next_event()) is not None:
            self._on_event(ev)
        deadline = self.manager.get_timer()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._tick)
        self._changed.set()

    def _tick(self) -> None:
        self._timer = None
        self.manager.handle_timer(self.phone.now())
        self._pump()

    async def _run(self, out: OutgoingRegister) -> None:
        request = out.request
        finalize = getattr(self.manager.credentials, "finalize", None)
        if finalize is not None:  # e.g. Bearer (ua.bearer_credentials): a token alive now
            try:
                request = await finalize(request)
            except (AuthError, TimeoutError):
                resp = Response(Headers(), status=401, reason="No Usable Token")
                self.manager.receive_response(out.flow, resp, self.phone.now(), request=out.request)
                self._pump()
                return
        resp = await self.phone.request(request, out.dest)
        self.manager.receive_response(out.flow, resp, self.phone.now(), request=out.request)
        if 200 <= resp.status < 300 and not self.manager.stopping:
            self._follow_nat(resp)
        self._pump()

    def _follow_nat(self, resp: Response) -> None:
        """With ``phone.nat_contact``: when the registrar saw us at another address than our
        Contact (Via ``received``/``rport``, RFC 3581: a NAT in between), take that public
        address as our Contact and register it, so in-dialog requests routed by Contact reach
        us through the NAT binding our SIP socket keeps open (what PJSIP calls contact
        rewriting). ``settled`` is set once the binding names where the registrar sees us."""
        local = self.phone.local
        public: Address | None = None
        if self.phone.nat_contact and resp.vias:
            via = resp.vias[0]
            rport = via.rport or ""
            port = int(rport) if rport.isdigit() else via.port
            public = (via.received or via.host, port or local.port)
        if public is None or public == (local.host, local.port):
            self.settled.set()
            return
        self.settled.clear()
        self.phone.local = LocalEndpoint(
            local.user, local.domain, public[0], public[1], local.transport, local.display
        )
        self.manager.address_changed(self.phone.local, self.phone.now())

    def _on_event(self, ev: FlowUp | FlowDown | KeepAliveDue | Unregistered) -> None:
        aor = self.phone.aor
        match ev:
            case FlowUp(expires=expires, refreshed=refreshed):
                reason = "refreshed" if refreshed else "registered"
                self.phone._publish(
                    RegistrationChanged, aor=aor, contact_count=1, expires=expires, reason=reason
                )
            case FlowDown():
                if not self.registered():
                    self.phone._publish(RegistrationChanged, aor=aor, reason="expired")
            case Unregistered():
                self.phone._publish(RegistrationChanged, aor=aor, reason="unregistered")
            case KeepAliveDue(flow=flow, method=method):
                self._spawn(self._keepalive(flow, method))

    # ------------------------------------------------------------------ keep-alives
    async def _keepalive(self, flow: int, method: str) -> None:
        edge = self.manager.flows[flow].edge
        mapped: Address | None = None
        alive = False
        self.keepalives_sent += 1
        if method == "crlf":
            transport = self.phone.transport
            if isinstance(transport, StreamTransport):
                cid = transport.connection_for(edge)
                if cid is not None:
                    with contextlib.suppress(TransportError):
                        await transport.ping(cid, self.ka_timeout)
                        alive = True
        else:
            mapped = await self._stun_binding(edge)
            alive = mapped is not None
            if mapped is not None:
                self.mapped[flow] = mapped
        self.manager.keepalive_result(flow, self.phone.now(), alive=alive, mapped=mapped)
        self._pump()

    async def _stun_binding(self, edge: Address) -> Address | None:
        """One STUN Binding transaction to the edge over the SIP socket (RFC 5626 §4.4.2): sent
        twice at most (RFC 8489 §6.2.1 retransmits; a keep-alive needs no more)."""
        req = binding_request()
        fut: asyncio.Future[Address] = self._loop.create_future()
        self._stun[req.transaction_id] = fut
        try:
            for wait in (self.ka_timeout / 3, self.ka_timeout * 2 / 3):
                try:
                    self.phone.transport.send_nowait(req.data, edge)
                except TransportError:
                    return None
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(fut), wait)
            return None
        finally:
            self._stun.pop(req.transaction_id, None)

    def _on_wire(self, ev: WireEvent) -> None:
        """STUN responses arrive on the SIP socket; the SIP parser drops them, the tap reads
        them first (RFC 7983 demultiplexing by the first byte and the magic cookie)."""
        if ev.direction != "in" or not self._stun or not is_stun(ev.data):
            return
        tid = ev.data[8:20]
        fut = self._stun.get(tid)
        if fut is None or fut.done():
            return
        try:
            fut.set_result(parse_binding_response(ev.data, tid))
        except RemoteProtocolError:
            pass
