"""A user agent (UAC + UAS, RFC 3261 §8, §12-15) as a thin asyncio adapter.

The protocol logic is sans-IO: retransmissions and timers in
:class:`~callward.sip.transaction_layer.TransactionLayer`, dialog and call state in
:class:`~callward.ua.call.CallLeg`. The byte/timer plumbing is
:class:`~callward.ua.sip_adapter.SipAdapter`, what an incoming request does is
:mod:`callward.ua.incoming`; this module is the UA's API (call, register, keep-alive, handover)
and turns outcomes into awaitables and events::

    alice = await Phone.start("alice", transport="udp")
    bob = await Phone.start("bob", transport="udp", auto_answer=True)
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
    assert call.status == 200
    await call.hangup()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import ssl
import time
from typing import TYPE_CHECKING, Any

from callward.errors import AuthError, LocalProtocolError, TransportError
from callward.events import (
    CallAnswered,
    CallEnded,
    CallStarted,
    Event,
    EventBus,
    RegistrationChanged,
)
from callward.nat.path_mtu import probe_path_mtu
from callward.rtp.dtls_srtp import DtlsCertificate
from callward.sdp.security import Fingerprint
from callward.sip.auth import authorize
from callward.sip.message import Headers, Request, Response
from callward.sip.timers import TimerConfig
from callward.sip.transaction import TransactionKey
from callward.sip.transport import Address, StreamTransport, TransportLimits, open_transport
from callward.sip.uri import parse_uri
from callward.ua.bearer_credentials import bearer_slot
from callward.ua.call import CallLeg, CallState, LocalEndpoint, new_branch, new_tag
from callward.ua.call_handle import Call, Peer
from callward.ua.emergency import SOS_URN
from callward.ua.ice_sdp import add_ice
from callward.ua.incoming import route_request
from callward.ua.sdp_offer import G711_ONLY, MediaPrefs, answer_sdp, offer_sdp
from callward.ua.session_timer import MIN_SE, request_headers
from callward.ua.sip_adapter import SipAdapter

if TYPE_CHECKING:
    from callward.ua.emergency import EmergencyPlan
    from callward.ua.ice_lite import IceLite
    from callward.ua.ice_session import IceAgent
    from callward.ua.registration_agent import RegistrationAgent

__all__ = ["Call", "Phone"]


class Phone(SipAdapter):
    """One SIP user agent bound to one transport. See the module docstring."""

    def __init__(
        self,
        user: str,
        *,
        domain: str | None = None,
        display: str | None = None,
        bus: EventBus | None = None,
        node: str = "ua",
        timers: TimerConfig | None = None,
        auto_answer: bool = False,
        password: str | None = None,
        auth_user: str | None = None,
    ) -> None:
        self.user = user
        self.password = password  # digest credentials (RFC 3261 §22), never logged
        self.auth_user = auth_user or user
        self._domain = domain
        self._display = display
        self.bus = bus
        self.node = node
        self.auto_answer = auto_answer
        super().__init__(timers)
        self.calls: dict[str, Call] = {}
        self.incoming: asyncio.Queue[Call] = asyncio.Queue()
        self._seq = itertools.count(1)
        self._reg_call_id = secrets.token_hex(12)
        self._reg_tag = new_tag()
        self._reg_cseq = 0
        self._registration: tuple[Address, int, str, str | None, int | None] | None = None
        self.flow_timer: float | None = None  # RFC 5626 §5.4 Flow-Timer from the registrar
        self.registration: RegistrationAgent | None = None  # the registration manager's adapter
        # RFC 4028 session interval we ask for / accept (None: only when the peer asks).
        self.session_expires: int | None = None
        self.min_se = MIN_SE  # smallest interval we accept (RFC 4028 §5)
        self._transport_kw: dict[str, Any] = {}  # limits / TLS contexts, reused by rebind()
        self._session_id = secrets.randbelow(2**31)
        self.media_host = "127.0.0.1"
        self.media_port = 0  # the port advertised in our SDP (0: none chosen → 9, discard)
        # "rtp": offer plain RTP/AVP (lab peers, SIPp); "srtp": offer SDES-SRTP and refuse plain
        # offers with 488; "dtls": offer DTLS-SRTP (RFC 5763) and refuse plain offers. Whatever
        # the mode, a secure offer is answered securely (sdp/policy.py picks DTLS, then SDES).
        self.media_security = "rtp"
        self._dtls_certificate: DtlsCertificate | None = None
        # ICE for media (RFC 8445/8839): once gathered, our SDP carries its candidates and its
        # default candidate in c=/m=; a peer's ICE restart makes us gather again before answering.
        self.ice: IceAgent | None = None
        # Behind a NAT whose edge routes in-dialog requests by Contact: use the address the
        # registrar saw (Via received/rport) as our Contact (ua/registration_agent.py).
        self.nat_contact = False
        # ICE-lite on our RTP port (ua/ice_lite.py), for peers that require ICE (browsers).
        self.ice_lite: IceLite | None = None
        # Emergency numbers of a region and their pre-resolved route (ua/emergency.py).
        self.emergency: EmergencyPlan | None = None
        # codecs, ptime and Opus FEC/DTX/bitrate we offer and accept (ua/sdp_offer.py)
        self.media_prefs: MediaPrefs = G711_ONLY

    @classmethod
    async def start(
        cls,
        user: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        transport: str = "udp",
        domain: str | None = None,
        display: str | None = None,
        bus: EventBus | None = None,
        node: str = "ua",
        timers: TimerConfig | None = None,
        limits: TransportLimits | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        auto_answer: bool = False,
        password: str | None = None,
        auth_user: str | None = None,
    ) -> Phone:
        """Bind a transport (``udp``/``tcp``/``tls``/``ws``/``wss``) and start the UA."""
        self = cls(
            user,
            domain=domain,
            display=display,
            bus=bus,
            node=node,
            timers=timers,
            auto_answer=auto_answer,
            password=password,
            auth_user=auth_user,
        )
        self._transport_kw = {"limits": limits, "server_ssl": server_ssl, "client_ssl": client_ssl}
        self.transport = await open_transport(
            f"{transport}:{host}:{port}", self._on_message, **self._transport_kw
        )
        lhost, lport = self.transport.local_addr
        self.local = LocalEndpoint(
            user, domain or f"{lhost}:{lport}", lhost, lport, self.transport.name, display
        )
        self.media_host = lhost
        self._sender = self._loop.create_task(self._send_loop())
        return self

    async def rebind(self, host: str, port: int = 0) -> None:
        """Move SIP to a new local address (the phone's network changed: Wi-Fi <-> cellular,
        IPv4 <-> IPv6). The old socket closes; Via/Contact of what we send next use the new
        address. Registration and calls follow through :meth:`handover`."""
        old = self.transport
        new = await open_transport(
            f"{old.name}:{host}:{port}", self._on_message, **self._transport_kw
        )
        for tap in old._taps:
            new.add_tap(tap)
        self.transport = new
        lhost, lport = new.local_addr
        self.local = LocalEndpoint(
            self.user, self.local.domain, lhost, lport, new.name, self._display
        )
        self.media_host = lhost
        await old.close()

    async def handover(
        self, host: str, *, port: int = 0, media_port: int | None = None, timeout: float = 10.0
    ) -> list[int]:
        """Survive an address change: rebind SIP to ``host``, re-register every flow from the
        new Contact, and re-INVITE every confirmed call with the new Contact and media address
        (``media_port``: the RTP socket the app opened on the new network). Returns the
        re-INVITE statuses."""
        await self.rebind(host, port)
        if media_port is not None:
            self.media_port = media_port
        if self.registration is not None:
            self.registration.address_changed()
            if self.nat_contact:  # re-INVITE from the public Contact the registrar sees
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.registration.settled.wait(), timeout)
        statuses = []
        for call in list(self.calls.values()):
            if call.state is CallState.CONFIRMED:
                call.leg.local = self.local
                statuses.append(await call.reinvite(timeout=timeout))
        return statuses

    def probe_mtu(self, dest: Address) -> int | None:
        """Set :attr:`mtu` to the kernel's path MTU toward ``dest`` (``nat/path_mtu.py``) from
        our SIP address; unchanged when it cannot be known."""
        mtu = probe_path_mtu(dest, local=self.local_addr[0])
        if mtu is not None:
            self.mtu = mtu
        return mtu

    @property
    def aor(self) -> str:
        return self.local.aor

    # ------------------------------------------------------------------ public API
    @property
    def dtls_certificate(self) -> DtlsCertificate:
        """Our self-signed DTLS certificate (one per phone run; its fingerprint goes in SDP)."""
        if self._dtls_certificate is None:
            self._dtls_certificate = DtlsCertificate.generate()
        return self._dtls_certificate

    def _fingerprint(self) -> Fingerprint:
        return Fingerprint.of_digest("sha-256", self.dtls_certificate.fingerprint("sha-256"))

    def _media_address(self) -> tuple[str, int]:
        if self.ice is not None:
            return self.ice.default_address()
        return self.media_host, self.media_port or 9

    def _with_ice(self, sdp: bytes | None) -> bytes | None:
        if sdp is None:
            return None
        if self.ice_lite is not None:
            host, port = self._media_address()
            lite = self.ice_lite
            return add_ice(sdp, lite.media_lines(host, port), lite.session_lines())
        return sdp if self.ice is None else add_ice(sdp, self.ice.sdp_lines())

    async def prepare_answer(self, offer: bytes) -> None:
        """What must happen before answering ``offer`` that cannot be done synchronously: an
        ICE restart asked by the peer (new ufrag) gathers new candidates (RFC 8445 §9)."""
        if self.ice is not None and self.ice.needs_restart(offer):
            await self.ice.gather(fast=False)

    def needs_preparing(self, offer: bytes) -> bool:
        return self.ice is not None and self.ice.needs_restart(offer)

    def make_offer(self, *, version: int = 1, hold: bool = False) -> bytes:
        host, port = self._media_address()
        offer = offer_sdp(
            host,
            port,
            self._session_id,
            srtp=self.media_security == "srtp",
            dtls=self._fingerprint() if self.media_security == "dtls" else None,
            version=version,
            hold=hold,
            prefs=self.media_prefs,
        )
        return self._with_ice(offer) or offer

    def make_answer(self, offer: bytes, *, version: int = 1) -> bytes | None:
        host, port = self._media_address()
        return self._with_ice(
            answer_sdp(
                offer,
                host,
                port,
                self._session_id,
                require_srtp=self.media_security in ("srtp", "dtls"),
                dtls=self._fingerprint(),
                version=version,
                prefs=self.media_prefs,
            )
        )

    async def call(
        self,
        target: str,
        *,
        sdp: bytes | None = None,
        dest: Address | None = None,
        routes: tuple[str, ...] = (),
    ) -> Call:
        """Place a call and wait for the INVITE's final response (a 2xx is ACKed at once).
        ``call.status`` tells the outcome: 200 answered, 4xx-6xx rejected, 408 timeout."""
        call = self.dial(target, sdp=sdp, dest=dest, routes=routes)
        await call.wait_final()
        return call

    def dial(
        self,
        target: str,
        *,
        sdp: bytes | None = None,
        dest: Address | None = None,
        routes: tuple[str, ...] = (),
    ) -> Call:
        """Start a call without waiting for the answer: ``await call.wait_final()`` or
        ``await call.cancel()``. ``dest`` overrides the next hop (an outbound proxy). An
        emergency number of ``self.emergency``'s region goes to ``urn:service:sos`` on the
        plan's pre-resolved route, with the location reference, whatever the registration."""
        extra = request_headers(self.session_expires) if self.session_expires else []
        plan = self.emergency
        sos = plan.number(target) if plan is not None else None
        if plan is not None and sos is not None:
            extra = [*extra, *plan.headers()]
            target, dest, routes = SOS_URN, plan.routes[0], ()
        leg = CallLeg.outgoing_invite(
            self.local,
            target,
            self.make_offer() if sdp is None else sdp,
            routes=routes,
            extra=extra,
        )
        call = Call(self, leg, (dest or leg.next_hop(), None))
        self.calls[leg.call_id] = call
        self._publish(CallStarted, call_id=leg.call_id, leg="a", caller=self.aor, callee=target)
        call._invite_task = self._loop.create_task(self._run_invite(call, sos is not None))
        return call

    async def _run_invite(self, call: Call, emergency: bool = False) -> int:
        leg = call.leg
        assert leg.invite is not None
        creds = self.registration.manager.credentials if self.registration else None
        # An emergency call never waits for a token refresh (the IdP may be unreachable).
        finalize = None if emergency else getattr(creds, "finalize", None)
        if finalize is not None:  # RFC 8898: the registration's Bearer token on the INVITE too
            leg.invite = await finalize(bearer_slot(leg.invite))
        resp = await self.request(leg.invite, call.peer[0], on_provisional=call._on_provisional)
        retry = self._authorized(leg.invite, resp, leg.local_cseq + 1)
        if retry is None and finalize and creds is not None and creds.answer(leg.invite, resp):
            headers = leg.invite.headers.set("Via", self.local.via(new_branch()))
            headers = headers.set("CSeq", f"{leg.local_cseq + 1} INVITE")
            retry = await finalize(bearer_slot(leg.invite.replace(headers=headers)))
        if retry is not None:
            leg.invite = retry
            leg.local_cseq += 1
            resp = await self.request(retry, call.peer[0], on_provisional=call._on_provisional)
        call._on_final(resp)
        return call.status

    async def next_call(self, timeout: float | None = None) -> Call:
        """The next incoming call (when ``auto_answer`` is off)."""
        return await asyncio.wait_for(self.incoming.get(), timeout)

    async def register(
        self,
        registrar: Address,
        *,
        expires: int = 600,
        domain: str | None = None,
        instance: str | None = None,
        reg_id: int | None = None,
    ) -> Response:
        """REGISTER our Contact for our AOR (§10.2); same Call-ID, increasing CSeq across
        refreshes (§10.2.4). ``expires=0`` removes the binding. ``instance`` (a ``urn:uuid:``)
        and ``reg_id`` ask for an RFC 5626 outbound flow: the edge then reaches us over the
        connection this REGISTER used, which :meth:`keep_alive` keeps open."""
        domain = domain or self._domain or f"{registrar[0]}:{registrar[1]}"
        self.local = LocalEndpoint(
            self.user, domain, self.local.host, self.local.port, self.local.transport, self._display
        )
        self._registration = (registrar, expires, domain, instance, reg_id)
        contact = f"{self.local.contact};expires={expires}"
        outbound = instance is not None and reg_id is not None
        if instance is not None:
            contact += f';+sip.instance="<{instance}>"'  # RFC 5626 §4.1
        if outbound:
            contact += f";reg-id={reg_id}"
        self._reg_cseq += 1
        items = [
            ("Via", self.local.via(new_branch())),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={self._reg_tag}"),
            ("To", f"<{self.aor}>"),
            ("Call-ID", self._reg_call_id),
            ("CSeq", f"{self._reg_cseq} REGISTER"),
            ("Contact", contact),
            ("Expires", str(expires)),
        ]
        if outbound:
            items.append(("Supported", "outbound, path"))
        items += [("User-Agent", "callward"), ("Content-Length", "0")]
        req = Request(Headers(items), method="REGISTER", uri=parse_uri(f"sip:{domain}"))
        resp = await self.request(req, registrar)
        retry = self._authorized(req, resp, self._reg_cseq + 1)
        if retry is not None:
            self._reg_cseq += 1
            resp = await self.request(retry, registrar)
        if 200 <= resp.status < 300:
            flow_timer = (resp.headers.get("Flow-Timer") or "").strip()
            self.flow_timer = float(flow_timer) if flow_timer.isdigit() else None
            self._publish(
                RegistrationChanged,
                aor=self.aor,
                contact_count=len(resp.contacts),
                expires=expires,
                reason="unregistered" if expires == 0 else "registered",
            )
        return resp

    async def keep_alive(self, *, timeout: float = 10.0) -> bool:
        """One RFC 5626 §4.4.1 keep-alive on the registration's connection (CRLFCRLF → CRLF).

        Returns True on a pong. When the flow is dead (no pong, or the connection is gone) the
        phone registers again, which opens a new flow (§4.4.1 "flow recovery"), and returns
        False. Only stream transports have flows; UDP needs STUN keep-alives (§4.4.2)."""
        if self._registration is None:
            raise LocalProtocolError("keep_alive needs a registration")
        transport = self.transport
        if not isinstance(transport, StreamTransport):
            raise LocalProtocolError(
                f"CRLF keep-alives need a stream transport, not {transport.name}"
            )
        registrar, expires, domain, instance, reg_id = self._registration
        cid = transport.connection_for(registrar)
        try:
            if cid is None:
                raise TransportError("no connection to the registrar")
            await transport.ping(cid, timeout)
            return True
        except TransportError:
            await self.register(
                registrar, expires=expires, domain=domain, instance=instance, reg_id=reg_id
            )
            return False

    def _authorized(self, req: Request, resp: Response, cseq: int) -> Request | None:
        """The retry of ``req`` answering a 401/407 (§8.1.3.5, §22.2): new branch, CSeq
        ``cseq``, Authorization for each realm; None when there is nothing to retry with."""
        if resp.status not in (401, 407) or self.password is None:
            return None
        try:
            authed = authorize(req, resp, username=self.auth_user, password=self.password)
        except AuthError:
            return None
        headers = authed.headers.set("Via", self.local.via(new_branch()))
        headers = headers.set("CSeq", f"{cseq} {req.method}")
        return authed.replace(headers=headers)

    async def close(self) -> None:
        for call in list(self.calls.values()):
            if call.state in (CallState.CONFIRMED, CallState.ANSWERED):
                with contextlib.suppress(Exception):
                    await call.hangup(timeout=2.0)
        if self.registration is not None:
            await self.registration.stop(timeout=4.0)  # clean unregister on shutdown
        await self._close_adapter()

    # ------------------------------------------------------------------ adapter hooks
    def _on_request(self, req: Request, key: TransactionKey, peer: Peer) -> None:
        route_request(self, req, key, peer)

    def _on_ack(self, ack: Request) -> None:
        call = self.calls.get(ack.call_id)
        if call is None:
            return
        if call._reinvite_ok is not None and ack.cseq.seq == call._reinvite_ok.cseq.seq:
            call._on_reinvite_ack(ack)
        elif not call.leg.outgoing:
            call._on_ack()

    def _resend_ack(self, resp: Response) -> None:
        """§13.2.2.4: every retransmitted 2xx to our INVITE gets the same ACK again."""
        if resp.status >= 300 or resp.cseq.method != "INVITE":
            return
        call = self.calls.get(resp.call_id)
        if call is None:
            return
        ack = call.acks.get(resp.cseq.seq) or call.leg.ack
        if ack is not None:
            self.layer.send_stateless(ack, call.peer)

    # ------------------------------------------------------------------ events
    def _end(self, call: Call) -> None:
        if call._ended.is_set():
            return
        call.ended_at = self.now()
        call._ended.set()
        if call._timer_task is not None:
            call._timer_task.cancel()
        # Forget the call once late retransmissions can no longer arrive (64*T1, §17.1.2.2),
        # so a long-running phone does not grow without bound.
        self._loop.call_later(64 * self.layer.timers.t1, self._forget, call)
        self._publish(
            CallEnded,
            call_id=call.call_id,
            leg="a" if call.leg.outgoing else "b",
            status=call.status,
            reason=call.end_reason,
        )

    def _forget(self, call: Call) -> None:
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]

    def _publish_answered(self, call: Call) -> None:
        self._publish(CallAnswered, call_id=call.call_id, leg="a" if call.leg.outgoing else "b")

    def _publish(self, cls: type[Event], **fields: Any) -> None:
        if self.bus is None:
            return
        event = cls(ts=time.time(), node=self.node, seq=next(self._seq), **fields)
        self._spawn(self.bus.publish(event))
