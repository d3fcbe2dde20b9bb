"""The edge's stateful proxy core (RFC 3261 §16), sans-IO, on the shared transaction layer.

Vocabulary (the same as every callward core)::

    core.receive_datagram(data, peer, now)      # one datagram / framed stream message
    core.datagrams_to_send() -> [(Peer, bytes)]
    core.next_event() -> Event | None           # CallStarted, RegistrationChanged, ...
    core.next_request() -> Pending | None       # a question for the outside (store, DNS, ...)
    core.resolve(pending.id, answer, now)       # its answer
    core.get_timer() / core.handle_timer(now)

It is made of components with explicit interfaces: the
:class:`~callward.sip.transaction_layer.TransactionLayer` (every transaction), the
:class:`~callward.edge.targets.Router` (routing and targets), :class:`~callward.edge.forking.
Forking` (branches, failover, best response), :class:`~callward.edge.sessions.DialogTracker`
(calls and session timers), :class:`~callward.edge.topology.TopologyHider`, the
:class:`~callward.edge.registrar.Registrar`, the :class:`~callward.edge.ack_forwarding.
AckForwarder` (ACK for 2xx, stateless), and the hooks of :mod:`callward.edge.hooks`
(admission, authentication schemes, media anchoring, trust boundary).

Request path: rate limit (per source, before parsing) → parse (400 with the parser's reason) →
Via stamping (received/rport) → admission hooks (overload: 503 + Retry-After) → transaction
layer (retransmissions, ACK/CANCEL matching) → Max-Forwards (483) → loop check (482) →
Proxy-Require (420) → a task that routes (§16.4-§16.5, asking the location service), checks
credentials (asking the subscriber store), applies identity and session-timer rules, and forks.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator
from typing import TYPE_CHECKING

from callward.edge.ack_forwarding import AckForwarder
from callward.edge.auth import Authenticator, DigestScheme
from callward.edge.forking import Forking, ProxyContext
from callward.edge.hooks import Accept, Drop, Hooks
from callward.edge.identity import assert_identity
from callward.edge.metrics import EdgeMetrics
from callward.edge.outbox import Outbox
from callward.edge.overload import OverloadGuard, OverloadLimits, RateLimiter
from callward.edge.pending import Pending, Query, Task, Tasks
from callward.edge.registrar import Registrar, RegistrarPolicy
from callward.edge.routing import loop_hash
from callward.edge.security import AUTH_METHODS, EdgeSecurity, strip_untrusted
from callward.edge.sessions import UNSUPERVISED_CALL_LIMIT, DialogTracker
from callward.edge.settings import EdgeSettings
from callward.edge.srtp_policy import srtp_refusal
from callward.edge.targets import ALLOW, Router
from callward.edge.topology import TopologyHider
from callward.errors import LocalProtocolError, SipParseError, StoreError
from callward.events import Event, RegistrationChanged, SecurityAlert
from callward.sip.message import Request, Response, make_response
from callward.sip.parser import parse_message
from callward.sip.peer import Peer, stamp_via
from callward.sip.replies import bad_request_reply
from callward.sip.timers import TimerConfig
from callward.sip.transaction_events import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionKey,
    TransactionTerminated,
    TransactionTimeout,
)
from callward.sip.transaction_layer import TransactionLayer, server_key
from callward.sip.uri import SipURI

if TYPE_CHECKING:
    from callward.edge.stir import StirShaken

__all__ = ["UNSUPERVISED_CALL_LIMIT", "EdgeCore"]

_OURS: frozenset[str] = frozenset()  # Proxy-Require option tags this proxy implements
_REJECT_TAG = "cwrj"  # To tag of stateless rejections: their ACKs are absorbed


def _refusal(exc: SipParseError) -> tuple[int, str]:
    """Status and reason for a request whose header was malformed: the parser's hint when it
    is a 4xx-6xx, else 400; the reason printable ASCII only."""
    status = exc.status_hint if 400 <= exc.status_hint < 700 else 400
    return status, "".join(ch if " " <= ch <= "~" else " " for ch in str(exc))[:200]


class EdgeCore:
    """One edge node's protocol logic. Not thread-safe; one per event loop."""

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        secret: bytes | None = None,
        metrics: EdgeMetrics | None = None,
    ) -> None:
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self.metrics = metrics if metrics is not None else EdgeMetrics()
        self.settings = settings
        self.outbox = Outbox(settings.node)
        self.layer = TransactionLayer(
            timers=TimerConfig(t1=settings.t1, t2=max(settings.t2, settings.t1)),
            auto_trying=False,
        )
        self.tasks = Tasks()
        self.hooks = Hooks(admission=[], auth_schemes=[])
        self.authenticator = Authenticator(self.hooks.auth_schemes)
        self.topology = TopologyHider(self.secret, settings.trusted, settings.untrusted)
        self.router = Router(settings, self.secret, self.topology)
        self.dialogs = DialogTracker(
            settings, self.outbox, self.metrics, self.layer, lambda: self.router.local
        )
        self.dialogs.on_end = self._media_ended
        self.topology.hidden_routes = self.dialogs.hidden_routes
        self.forking = Forking(
            settings,
            self.outbox,
            self.metrics,
            self.layer,
            self.router,
            self.topology,
            self.dialogs,
        )
        self.forking.relay = self._relay
        self.acks = AckForwarder(self.router, self.layer, self.topology, self.hooks, self._clock)
        self.forking.hooks = self.hooks
        self.overload = OverloadGuard(
            OverloadLimits(), lambda: self.forking.setup, lambda: len(self.layer)
        )
        self.hooks.admission.append(self.overload)
        # Security on by default (docs/security.md): admission after the overload guard,
        # failed-auth lockout on every authentication outcome, relay and toll-fraud policy.
        self.security = EdgeSecurity(
            node=settings.node,
            emit=self._security_alert,
            is_trusted=self.topology.is_trusted,
            auth_on=lambda: self.settings.auth,
            challenge=self._stateless_challenge,
            is_local=self.router.local.is_local_uri,
        )
        self.authenticator.guard = self.security
        self.security.known_call = self.dialogs.calls.__contains__  # in-dialog needs a call
        self.stir: StirShaken | None = None  # STIR/SHAKEN when configured (EdgeNode)
        self._now = 0.0
        self.reconfigure(settings)

    # ----------------------------------------------------------------- configuration
    def reconfigure(self, settings: EdgeSettings) -> None:
        """Swap settings (SIGHUP). Transactions and calls in progress keep running."""
        self.settings = settings
        self.rate = RateLimiter(settings.rate_limit, settings.rate_burst)
        admission = self.hooks.admission
        if settings.security_admission and self.security not in admission:
            admission.insert(admission.index(self.overload) + 1, self.security)
        elif not settings.security_admission and self.security in admission:
            admission.remove(self.security)
        self.overload.limits = OverloadLimits(
            capacity=settings.max_setup_calls,
            max_transactions=settings.max_transactions,
            max_lag=settings.max_backlog,
        )
        self.topology.trusted, self.topology.untrusted = settings.trusted, settings.untrusted
        self.router.configure(settings)
        self.dialogs.settings = settings
        self.forking.settings = settings
        digest = DigestScheme(settings.realm, self.secret, settings.algorithms, settings.nonce_ttl)
        schemes = self.hooks.auth_schemes
        old = [i for i, s in enumerate(schemes) if isinstance(s, DigestScheme)]
        if old:
            schemes[old[0]] = digest
        else:
            schemes.insert(0, digest)
        self.registrar = Registrar(
            self.authenticator,
            RegistrarPolicy(
                realm=settings.realm,
                min_expires=settings.min_expires,
                max_expires=settings.max_expires,
                default_expires=settings.default_expires,
                auth=settings.auth,
                node=settings.node,
                node_uri=settings.node_uri,
            ),
        )

    def warm_up(self, now: float) -> None:
        """Ask for what is best known before the first call (upstreams given by name)."""
        self._now = now
        self.tasks.start(self.router.warm(now), now)

    def _clock(self) -> float:
        return self._now  # the time of the input being handled (a task resumes at its answer)

    # ----------------------------------------------------------------- sans-IO API
    def receive_datagram(self, data: bytes, peer: Peer, now: float) -> None:
        self._now = now
        if not data.strip(b"\r\n"):
            return  # keep-alives are the transports' business
        if self.settings.rate_limit > 0 and not self.rate.admit(peer.host, now):
            self.metrics.reject("rate-limit")
            return
        try:
            msg = parse_message(data, limits=self.settings.limits)
        except SipParseError as exc:
            self.metrics.reject("malformed")
            reply = bad_request_reply(data, exc, self.settings.limits)
            if reply is not None:
                self.outbox.send(peer, reply)
            return
        self.receive_message(msg, peer, now)

    def receive_message(self, msg: Request | Response, peer: Peer, now: float) -> None:
        """A message already parsed (by the caller)."""
        self._now = now
        try:
            if isinstance(msg, Request):
                self.metrics.request(msg.method)
                self._on_request(msg, peer, now)
            else:
                self.layer.receive(msg, now, reliable=peer.reliable, peer=peer)
        except SipParseError as exc:
            # A header parsed lazily (Via, CSeq, Contact...) was malformed.
            if isinstance(msg, Request) and msg.method != "ACK":
                self.outbox.send(peer, bytes(make_response(msg, *_refusal(exc))))
                self.metrics.reject("malformed")
        self._pump(now)

    def datagrams_to_send(self) -> list[tuple[Peer, bytes]]:
        for t in self.layer.datagrams_to_send():
            self.outbox.send(t.peer, t.data)
        out = self.outbox.datagrams
        self.outbox.datagrams = []
        return out

    def next_event(self) -> Event | None:
        return self.outbox.events.popleft() if self.outbox.events else None

    def next_request(self) -> Pending | None:
        return self.tasks.next_request()

    def resolve(self, pending_id: int, result: object, now: float) -> None:
        """The answer to a :class:`Pending` (an exception instance for a failure)."""
        self._now = now
        self.tasks.resolve(pending_id, result, now)
        self._pump(now)

    def get_timer(self) -> float | None:
        times = [
            t
            for t in (self.layer.get_timer(), self.outbox.get_timer(), self.tasks.get_timer())
            if t is not None
        ]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self._now = now
        self.layer.handle_timer(now)
        self._pump(now)
        self.outbox.handle_timer(now)
        self.tasks.handle_timer(now)
        self._pump(now)

    def flow_failed(self, peer: Peer, now: float) -> None:
        """A connection closed or a send failed (reported by the adapter)."""
        self._now = now
        self.forking.flow_failed(peer, now)
        self._pump(now)

    @property
    def active_transactions(self) -> int:
        return len(self.layer)

    # ----------------------------------------------------------------- requests
    def _on_request(self, req: Request, source: Peer, now: float) -> None:
        req = stamp_via(req, source)
        if not source.reliable:
            # §18.2.2: over UDP without rport the response goes to the Via port, which may
            # differ from the source port (sipsak sends and listens on different sockets).
            via = req.top_via
            port = int(via.rport) if via.rport else (via.port or 5060)
            if port != source.port:
                source = Peer("udp", source.host, port)
        method = req.method
        key = server_key(req)
        if method == "ACK" or key not in self.layer.servers:
            in_dialog = method in ("ACK", "CANCEL") or req.to.tag is not None
            if not self._admit(req, source, in_dialog, now):
                return
        self.layer.receive(req, now, reliable=source.reliable, peer=source, key=key)

    def _admit(self, req: Request, peer: Peer, in_dialog: bool, now: float) -> bool:
        for policy in self.hooks.admission:
            verdict = policy.admit(req, peer, in_dialog=in_dialog, now=now)
            if isinstance(verdict, Accept):
                continue
            self.metrics.reject(verdict.rule)
            if isinstance(verdict, Drop) or req.method == "ACK":
                return False
            extra = list(verdict.headers)
            if verdict.retry_after is not None:
                extra.append(("Retry-After", str(verdict.retry_after)))
            tag = _REJECT_TAG + secrets.token_hex(4)
            resp = make_response(req, verdict.status, verdict.reason, to_tag=tag, extra=extra)
            self.metrics.response(verdict.status)
            self.outbox.send(peer, bytes(resp))
            return False
        return True

    def _pump(self, now: float) -> None:
        layer, forking = self.layer, self.forking
        while (ev := layer.next_event()) is not None:
            match ev:
                case RequestReceived(request=req, key=key, peer=peer):
                    self._new_request(req, key, peer, now)
                case ResponseReceived(response=resp, key=key):
                    forking.on_response(key, resp, now)
                case TransactionTerminated(key=key):
                    forking.forget(key)
                case AckReceived(request=req, peer=peer):
                    self._ack(req, peer, now)
                case StrayResponse(response=resp):
                    forking.stray(resp)
                case TransactionTimeout(key=key):
                    forking.on_timeout(key, now)

    def _reply(
        self,
        key: TransactionKey,
        req: Request,
        status: int,
        now: float,
        reason: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        resp = make_response(
            req, status, reason, to_tag="cw" + secrets.token_hex(4), extra=extra or ()
        )
        self.metrics.response(status)
        try:
            self.layer.send_response(key, resp, now)
        except LocalProtocolError:
            pass

    def _new_request(self, req: Request, key: TransactionKey, peer: Peer, now: float) -> None:
        try:
            self._dispatch(req, key, peer, now)
        except SipParseError as exc:
            self.metrics.reject("malformed")
            ctx = self.forking.contexts.get(key)
            status, reason = _refusal(exc)
            if ctx is None:
                self._reply(key, req, status, now, reason)
            elif not ctx.final_status:
                self.forking.respond(ctx, status, reason, now)

    def _dispatch(self, req: Request, key: TransactionKey, peer: Peer, now: float) -> None:
        method = req.method
        if method == "CANCEL":
            # §16.10 / §9.2: answer the CANCEL, cancel the INVITE's branches; the 487 comes
            # back from downstream.
            target = self.layer.cancel_target(req)
            if target is None:
                self._reply(key, req, 481, now)
                return
            self._reply(key, req, 200, now)
            self.forking.cancel(target.key, now)
            return
        mf = req.max_forwards
        if mf is not None and mf <= 0:
            if method == "OPTIONS" and self.router.is_for_us(req):
                self._reply(key, req, 200, now, extra=[("Allow", ALLOW)])
            else:
                self._reply(key, req, 483, now)
            return
        lhash = loop_hash(req)
        if self.router.is_loop(req, lhash):
            self.metrics.reject("loop")
            self._reply(key, req, 482, now)
            return
        if "Proxy-Require" in req.headers:
            # §16.3 item 5: options a proxy must understand; we implement none of them.
            unknown = [v for v in req.headers.values("Proxy-Require") if v.lower() not in _OURS]
            if unknown:
                self._reply(key, req, 420, now, extra=[("Unsupported", ", ".join(unknown))])
                return
        ctx = ProxyContext(key, req, peer, now, lhash, req.to.tag is None, method == "INVITE")
        self.forking.open(ctx, now)
        if ctx.invite:
            # §16.2 / §16.7: a 100 now stops the caller's INVITE retransmissions.
            self.layer.send_response(key, make_response(req, 100), now)
        if self.tasks.full:
            self.forking.respond(ctx, 503, "Busy", now, extra=[("Retry-After", "5")])
            return
        self.tasks.start(self._process(ctx, now), now)

    def _process(self, ctx: ProxyContext, now: float) -> Task:
        """The part of a request's handling that may wait on the outside world."""
        try:
            yield from self._route_and_forward(ctx, now)
        except StoreError:
            self.metrics.reject("store")
            if not ctx.final_status:
                extra = [("Retry-After", "5")]
                self.forking.respond(ctx, 503, "Store Unavailable", self._now, extra)
        except SipParseError as exc:
            self.metrics.reject("malformed")
            if not ctx.final_status:
                self.forking.respond(ctx, *_refusal(exc), now=self._now)

    def _route_and_forward(self, ctx: ProxyContext, now: float) -> Task:
        forking = self.forking
        if ctx.initial and ctx.request.method != "REGISTER":
            req0 = ctx.request
            refusal = self.security.relay_refusal(
                req0,
                ruri_local=self.router.local.is_local_uri(req0.uri),
                from_local=self.router.local.is_local_uri(req0.from_.uri),
                trusted=self.topology.is_trusted(ctx.source),
                auth_on=self.settings.auth,
                authenticates=req0.method in AUTH_METHODS,
            )
            if refusal is not None:
                self.metrics.reject("not-relaying")
                forking.respond(ctx, refusal[0], refusal[1], now)
                return
        routed = yield from self.router.route(ctx.request, ctx.source, initial=ctx.initial, now=now)
        if routed.local:
            req = routed.request
            uri = req.uri
            assert isinstance(uri, SipURI)
            if req.method == "REGISTER":
                yield from self._register(ctx, req)
                return
            if uri.user is None:
                if req.method == "OPTIONS":
                    extra = [("Allow", ALLOW), ("Accept", "application/sdp")]
                    forking.respond(ctx, 200, None, now, extra)
                else:
                    forking.respond(ctx, 404, None, now)
                return
            routed = yield from self.router.local_route(req, initial=ctx.initial, now=self._now)
        if routed.status:
            retry = [("Retry-After", "30")] if routed.status == 503 else None
            forking.respond(ctx, routed.status, routed.reason, self._now, retry)
            return
        prepared = yield from self._prepare(ctx, routed.request)
        if prepared is None:
            return
        media = self.hooks.media
        if media is not None:
            prepared = yield from media.request(prepared, self._now)
        if ctx.cancelled or ctx.final_status:
            if not ctx.final_status:
                forking.respond(ctx, 487, None, self._now)
            return
        ctx.forwarded = prepared
        forking.start(ctx, routed.targets, routed.serial, self._now)

    def _register(self, ctx: ProxyContext, req: Request) -> Task:
        result = yield from self.registrar.handle(
            req, ctx.source, self._now, first_hop=len(req.vias) == 1
        )
        now = self._now
        self.forking.send_up(ctx, result.response, now, False)
        if result.auth_failed:
            self.metrics.reject("auth")
            self.outbox.emit(
                SecurityAlert, now, rule="register-auth-failed", source=ctx.source.host, detail=""
            )
        if result.changed and result.reason:
            names = ("tenant", "aor", "contact_count", "expires", "reason")
            self.outbox.emit(RegistrationChanged, now, **{n: getattr(result, n) for n in names})

    def _prepare(self, ctx: ProxyContext, req: Request) -> Generator[Query, object, Request | None]:
        """Per-request (not per-branch) edits: auth, identity, session timers, Max-Forwards."""
        method = req.method
        tenant = "default"
        if ctx.initial and method in AUTH_METHODS:
            authed: str | None = None
            frm = req.from_.uri
            trusted = self.topology.is_trusted(ctx.source)
            if not trusted:
                req = strip_untrusted(req)
            # Every From is authenticated (tel:, foreign domains, ours with a trailing dot):
            # an untrusted request is only ever processed for one of our subscribers. A From
            # in our domain must be the authenticated user's own (§22.4).
            if self.settings.auth and not trusted:
                local_from = isinstance(frm, SipURI) and self.router.local.is_local_uri(frm)
                who = yield from self.authenticator.authenticate(
                    req,
                    self._now,
                    proxy=True,
                    username=frm.user_unescaped if local_from and isinstance(frm, SipURI) else None,
                )
                if isinstance(who, Response):
                    self.metrics.reject("auth")
                    self.forking.send_up(ctx, who, self._now, False)
                    return None
                tenant = who.tenant
                domain = frm.host if local_from and isinstance(frm, SipURI) else self.settings.realm
                authed = f"{who.username}@{self.router.aor_domain(domain)}"
                req = req.replace(headers=req.headers.remove("Proxy-Authorization"))
                if method == "INVITE":
                    refused = self.security.call_attempt(
                        who.username,
                        tenant,
                        req,
                        self._now,
                        region=self.settings.region_for(tenant),
                    )
                    if refused is not None:
                        self.metrics.reject("fraud")
                        self.forking.respond(ctx, refused[0], refused[1], self._now)
                        return None
            req = assert_identity(
                req,
                trusted_source=trusted,
                authenticated_aor=authed,
                region=self.settings.region_for(tenant),
            )
            if self.stir is not None and method == "INVITE":  # RFC 8224 (edge/stir.py)
                stirred = yield from self.stir.process(
                    req,
                    authenticated=authed is not None,
                    trusted=trusted,
                    tenant=tenant,
                    outbound=not self.router.local.is_local_uri(req.uri),
                    now=self._now,
                )
                if isinstance(stirred, tuple):
                    self.metrics.reject("stir")
                    self.forking.respond(ctx, stirred[0], stirred[1], self._now)
                    return None
                req = stirred
        plain = srtp_refusal(
            req,
            policy=self.settings.srtp_policy,
            trusted=self.topology.is_trusted(ctx.source),
            host=self.settings.node,
        )
        if plain is not None:  # SRTP-only policy (edge/srtp_policy.py, docs/security.md)
            self.metrics.reject("srtp-required")
            self.forking.respond(ctx, plain[0], plain[1], self._now, list(plain[2]))
            return None
        mf = req.max_forwards
        # Header edits are collected and applied once per branch (each Headers edit copies).
        ctx.fwd_set = {"Max-Forwards": str(70 if mf is None else mf - 1)}
        now = self._now
        if method == "INVITE" and ctx.initial:
            status, inserted = self.dialogs.session_timer_request(req, ctx.fwd_set)
            if status:
                extra = [("Min-SE", str(self.settings.min_se))]
                self.forking.respond(ctx, status, None, now, extra)
                return None
            self.dialogs.started(req, ctx.source, inserted, now)
            ctx.tracked = True
        elif method == "BYE":
            self.dialogs.ended(req.call_id, 200, "bye", now)
        return req

    # ----------------------------------------------------------------- ACK for 2xx
    def _ack(self, req: Request, source: Peer, now: float) -> None:
        if (req.to.tag or "").startswith(_REJECT_TAG):
            return  # the ACK of our stateless rejection (admission): hop-by-hop, ends here
        if not self.tasks.full:
            self.tasks.start(self.acks.forward(req, source), now)

    # ----------------------------------------------------------------- media hook seams
    def _relay(self, ctx: ProxyContext, resp: Response, now: float, retransmit: bool) -> None:
        if self.hooks.media is None:
            self.forking.send_up(ctx, resp, now, retransmit)
            return
        # One response at a time per transaction through the media hook, in arrival order: a
        # 183 whose SDP the anchor is still rewriting is never overtaken by the 200 (or a 2xx
        # retransmission) behind it (RFC 3261 §16.7 step 5 forwards in order).
        ctx.media_queue.append((resp, retransmit))
        if len(ctx.media_queue) == 1:
            self.tasks.start(self._media_responses(ctx), now)

    def _media_responses(self, ctx: ProxyContext) -> Task:
        queue = ctx.media_queue
        try:
            while queue and (media := self.hooks.media) is not None:
                resp, retransmit = queue[0]
                if not retransmit:
                    try:
                        resp = yield from media.response(resp, ctx.request, self._now)
                    except StoreError:
                        if resp.status < 200 or ctx.final_status:
                            queue.pop(0)
                            continue
                        resp = make_response(
                            ctx.request, 500, "Media Unavailable", to_tag="cwmedia"
                        )
                queue.pop(0)
                self.forking.send_up(ctx, resp, self._now, retransmit)
        finally:
            queue.clear()  # a hook that failed otherwise must not hold the next responses

    def _stateless_challenge(self, req: Request, now: float) -> list[tuple[str, str]]:
        """The Proxy-Authenticate lines of a 407 (every scheme's), for a challenge answered
        before any transaction exists (memory per unauthenticated INVITE: none)."""
        return [
            line
            for scheme in self.hooks.auth_schemes
            for line in scheme.challenges(req, now, proxy=True)
        ]

    def _security_alert(self, alert: SecurityAlert) -> None:
        self.metrics.security_alert(alert.rule)
        self.outbox.emit(
            SecurityAlert, alert.ts, rule=alert.rule, source=alert.source, detail=alert.detail
        )

    def _media_ended(self, call_id: str, now: float) -> None:
        self.security.call_ended(call_id)
        media = self.hooks.media
        if media is not None:
            self.tasks.start(_quiet(media.ended(call_id, now)), now)


def _quiet(task: Task) -> Task:
    """A fire-and-forget task: a failed answer ends it silently."""
    try:
        yield from task
    except StoreError:
        return
