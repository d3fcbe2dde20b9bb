"""Branch and forking supervision of the edge proxy (RFC 3261 §16.6-§16.10) on the shared
transaction layer.

A :class:`ProxyContext` is the forking context of one server transaction: the request after our
edits, its branches (one client transaction each, :class:`~callward.sip.transaction_layer.
TransactionLayer`), the failover targets still to try, the responses collected for §16.7 best
response selection. The transaction layer does the RFC 3261 §17 work (retransmissions,
Timers A-M, ACK for non-2xx, 2xx passed through in Accepted); this module adds what a proxy
needs on top: Via/Record-Route/Route per branch, Timer C, CANCEL per branch (and abandoning a
branch that stays silent 64*T1 after it), serial failover with blacklisting, best response,
and relaying responses upstream (hidden Vias/Record-Routes restored).

Contexts and branches reference each other by transaction key only, never by object, so a
finished call's messages are freed by reference counting (see ``app.tune_gc``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from callward.edge.flow import encode_flow_token
from callward.edge.hooks import Hooks
from callward.edge.identity import apply_privacy
from callward.edge.metrics import EdgeMetrics
from callward.edge.outbox import Outbox
from callward.edge.routing import Target, best_response, branch_loop_hash, make_branch
from callward.edge.sessions import DialogTracker
from callward.edge.settings import EdgeSettings
from callward.edge.targets import Router
from callward.edge.topology import TopologyHider, rebuild_headers
from callward.errors import LocalProtocolError
from callward.sip.headers import parse_via
from callward.sip.message import Request, Response, make_response
from callward.sip.peer import Peer, via_destination
from callward.sip.transaction import TxState, make_cancel
from callward.sip.transaction_events import TransactionKey
from callward.sip.transaction_layer import TransactionLayer

__all__ = ["Branch", "Forking", "ProxyContext"]

_DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})

# (context, response, now, retransmit) -> None: the media hook's seam on the way up.
Relay = Callable[["ProxyContext", Response, float, bool], None]


@dataclass(slots=True, eq=False)
class ProxyContext:
    key: TransactionKey  # the server transaction
    request: Request
    source: Peer
    created: float
    lhash: str
    initial: bool  # no To tag: may create a dialog
    invite: bool
    forwarded: Request | None = None  # template after our edits, before per-branch changes
    fwd_set: dict[str, str] = field(default_factory=dict)
    branches: list[TransactionKey] = field(default_factory=list)
    pending: list[Target] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    final_status: int = 0
    cancelled: bool = False
    hidden_vias: bool = False
    hidden_rr: tuple[str, ...] = ()
    tracked: bool = False  # an initial INVITE whose call the DialogTracker follows
    # responses waiting for (or in) the media hook, oldest first: (response, retransmission)
    media_queue: list[tuple[Response, bool]] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Branch:
    key: TransactionKey  # the client transaction
    context: TransactionKey
    target: Target
    request: Request
    invite: bool
    state: int = 0  # 0 trying, 1 proceeding, 2 final
    cancel_sent: bool = False
    timer_c_at: float = 0.0


class Forking:
    def __init__(
        self,
        settings: EdgeSettings,
        outbox: Outbox,
        metrics: EdgeMetrics,
        layer: TransactionLayer,
        router: Router,
        topology: TopologyHider,
        dialogs: DialogTracker,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.metrics = metrics
        self.layer = layer
        self.router = router
        self.topology = topology
        self.dialogs = dialogs
        self.relay: Relay = self.send_up  # replaced by the core when a media hook is set
        self.hooks: Hooks | None = None  # the core's hooks (the boundary filter is read here)
        self.contexts: dict[TransactionKey, ProxyContext] = {}
        self.branches: dict[TransactionKey, Branch] = {}
        self.setup = 0  # INVITE contexts without a final response (the overload gauge)
        self._n = 0

    # ------------------------------------------------------------------ contexts
    def open(self, ctx: ProxyContext, now: float) -> None:
        self.contexts[ctx.key] = ctx
        if ctx.invite:
            self.setup += 1
        s = self.settings
        # Guard: whatever happens downstream or in the stores, the caller gets a final answer.
        guard = (s.timer_c if ctx.invite else 0.0) + 128 * s.t1 + 10.0
        self.outbox.at(now + guard, self._guard, ctx.key)

    def _guard(self, key: TransactionKey, now: float) -> None:
        ctx = self.contexts.get(key)
        if ctx is None:
            return
        if ctx.final_status == 0:
            self.respond(ctx, 500, "No Final Response", now)
        for bkey in ctx.branches:
            if self.branches.pop(bkey, None) is not None:
                tx = self.layer.clients.get(bkey)
                if tx is not None and tx.state in (TxState.CALLING, TxState.PROCEEDING):
                    self.layer.abandon(bkey)  # one that would never end by itself
        self.contexts.pop(key, None)

    def respond(
        self,
        ctx: ProxyContext,
        status: int,
        reason: str | None,
        now: float,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        """A response the proxy generates itself on the context's server transaction."""
        resp = make_response(
            ctx.request, status, reason, to_tag="cw" + ctx.lhash[:8], extra=extra or ()
        )
        self.send_up(ctx, resp, now, False)
        if status >= 200 and ctx.tracked:
            ctx.tracked = False
            self.dialogs.ended(ctx.request.call_id, status, f"error:{status}", now)

    def _finished(self, ctx: ProxyContext) -> None:
        """Drop the context once it has answered and every branch has ended."""
        if ctx.final_status and not any(k in self.branches for k in ctx.branches):
            self.contexts.pop(ctx.key, None)

    # ------------------------------------------------------------------ branches out
    def start(
        self, ctx: ProxyContext, targets: tuple[Target, ...], serial: bool, now: float
    ) -> None:
        if serial:
            ctx.pending = list(targets[1:])
            self._start_branch(ctx, targets[0], now)
        else:
            for t in targets:
                self._start_branch(ctx, t, now)

    def _start_branch(self, ctx: ProxyContext, target: Target, now: float) -> None:
        base = ctx.forwarded
        assert base is not None
        self._n += 1
        bid = make_branch(ctx.lhash, f"{self._n:x}")
        req = self._branch_request(ctx, base, target, bid)
        tx = self.layer.send_request(req, now, reliable=target.dest.reliable, peer=target.dest)
        self.branches[tx.key] = Branch(tx.key, ctx.key, target, req, req.method == "INVITE")
        ctx.branches.append(tx.key)

    def _branch_request(
        self, ctx: ProxyContext, base: Request, target: Target, bid: str
    ) -> Request:
        """§16.6 steps 2-8 for one target: Request-URI, Route, Record-Route, Via."""
        dest = target.dest
        local = self.router.local
        untrusted = self.topology.is_untrusted(dest)
        drop: tuple[str, ...] = ()
        if untrusted:
            # Topology hiding: the untrusted side sees only us (restored on the way back).
            ctx.hidden_vias = True
            drop = ("Via", "Record-Route")
            if ctx.initial and base.method in _DIALOG_CREATING:
                ctx.hidden_rr = tuple(base.headers.values("Record-Route"))
                self.dialogs.hide_routes(base.call_id, ctx.hidden_rr)
            base = apply_privacy(base)
            if self.hooks is not None and self.hooks.boundary is not None:
                base = self.hooks.boundary.request(base)
        out_if = local.iface(dest.transport)
        front = [("Via", local.via(dest.transport, bid) + ";rport")]
        if self.settings.record_route and ctx.initial and base.method in _DIALOG_CREATING:
            in_if = local.iface(ctx.source.transport)
            if not in_if.same_address(out_if):
                front.append(("Record-Route", _rr(out_if, None)))  # RFC 5658 double RR
            token = None
            ftag = None
            if len(ctx.request.vias) == 1 and not untrusted:
                token = encode_flow_token(self.router.secret, self.settings.node, ctx.source)
                # The flow's owner is the caller: its From tag tells its in-dialog requests
                # apart even after it moved to a new address (mobility, RFC 5626 §5.3 leaves
                # direction to the proxy; Kamailio's rr uses the same ftag parameter).
                ftag = ctx.request.from_.tag
            front.append(("Record-Route", _rr(in_if, token, ftag)))
        front += [("Route", r) for r in target.routes]
        sets = ctx.fwd_set
        if untrusted and "Contact" in base.headers:
            sets = {**sets, "Contact": self.topology.hidden_contacts(base, out_if)}
        headers = rebuild_headers(base.headers, front, sets, drop)
        if target.uri:
            return base.replace(headers=headers, uri=target.uri)
        return base.replace(headers=headers)

    def cancel(self, key: TransactionKey, now: float) -> None:
        """The caller CANCELled (§16.10): stop failover, CANCEL every proceeding branch (the
        others are CANCELled when their first provisional arrives, §9.1)."""
        ctx = self.contexts.get(key)
        if ctx is None or ctx.final_status:
            return
        ctx.cancelled = True
        ctx.pending.clear()
        for bkey in ctx.branches:
            b = self.branches.get(bkey)
            if b is not None and b.state == 1:
                self._send_cancel(b, now)

    def _send_cancel(self, b: Branch, now: float) -> None:
        if b.cancel_sent or b.state == 2:
            return
        b.cancel_sent = True
        cancel = make_cancel(b.request)
        dest = b.target.dest
        self.layer.send_request(cancel, now, reliable=dest.reliable, peer=dest)
        self.outbox.at(now + 64 * self.settings.t1, self._give_up, b.key)

    def _give_up(self, key: TransactionKey, now: float) -> None:
        """64*T1 after a CANCEL the branch has not answered: destroy it (§9.1)."""
        b = self.branches.get(key)
        if b is None:
            return
        tx = self.layer.clients.get(key)
        if tx is not None and tx.state in (TxState.CALLING, TxState.PROCEEDING):
            self.layer.abandon(key)
            tx = None
        if b.state < 2:
            self._final(b, make_response(b.request, 408), now, synthetic=True)
        if tx is None:
            self.forget(key)

    def _timer_c(self, key: TransactionKey, now: float) -> None:
        b = self.branches.get(key)
        if b is None or b.state != 1 or now < b.timer_c_at:
            return
        # §16.6 step 11 / §16.8: Timer C fired on a proceeding INVITE: CANCEL it, act as if
        # it answered 408.
        self._send_cancel(b, now)
        self._final(b, make_response(b.request, 408), now, synthetic=True)

    # ------------------------------------------------------------------ branches in
    def on_response(self, key: TransactionKey, resp: Response, now: float) -> None:
        b = self.branches.get(key)
        if b is None:
            return  # a CANCEL's or a teardown BYE's answer
        ctx = self.contexts.get(b.context)
        if resp.status < 200:
            if b.state == 0:
                b.state = 1
            if (b.invite and resp.status > 100) or (b.invite and not b.timer_c_at):
                b.timer_c_at = now + self.settings.timer_c
                self.outbox.at(b.timer_c_at, self._timer_c, key)
            if ctx is None:
                return
            if ctx.cancelled and b.invite:
                self._send_cancel(b, now)
                return
            if resp.status > 100 and ctx.final_status == 0:
                self.up(ctx, resp, now)
            return
        if b.state == 2:
            # A 2xx retransmission (the INVITE client transaction passes them on in
            # Accepted, RFC 6026) or another 2xx of the same branch: relay it.
            if b.invite and resp.status < 300 and ctx is not None:
                self.up(ctx, resp, now, retransmit=True)
            return
        self._final(b, resp, now)

    def on_timeout(self, key: TransactionKey, now: float) -> None:
        """Timer B/F: no answer (§16.8: treat as 408)."""
        b = self.branches.get(key)
        if b is not None and b.state < 2:
            if b.target.failover:
                self.router.blacklist(b.target.dest, now)
            self._final(b, make_response(b.request, 408), now, synthetic=True)

    def flow_failed(self, peer: Peer, now: float) -> None:
        """A connection closed or a send failed: branches waiting on it fail over at once (the
        transport error of §16.7 step 9 / RFC 3263 §4.3)."""
        for b in [b for b in self.branches.values() if b.state < 2]:
            if b.target.dest.same_address(peer):
                # RFC 5626 §5.3: a registered flow that is gone is 430 Flow Failed; any other
                # transport error is a 503 that triggers failover.
                status = 430 if b.target.label == "flow" else 503
                self.layer.abandon(b.key)
                if b.target.failover:
                    self.router.blacklist(b.target.dest, now)
                self._final(b, make_response(b.request, status), now, synthetic=True)
                self.forget(b.key)

    def forget(self, key: TransactionKey) -> None:
        """The branch's client transaction ended."""
        b = self.branches.pop(key, None)
        if b is not None:
            ctx = self.contexts.get(b.context)
            if ctx is not None:
                self._finished(ctx)

    def _final(self, b: Branch, resp: Response, now: float, *, synthetic: bool = False) -> None:
        b.state = 2
        ctx = self.contexts.get(b.context)
        if ctx is None:
            return
        status = resp.status
        if 200 <= status < 300:
            first = ctx.final_status == 0
            if b.invite and ctx.initial and first:
                resp = self.dialogs.session_timer_response(ctx.request.call_id, resp)
            elif not ctx.initial and ctx.request.method in ("INVITE", "UPDATE"):
                self.dialogs.refreshed(ctx.request, resp, now)
            self.up(ctx, resp, now)
            if b.invite:
                for other in self._live(ctx):
                    if other is not b:
                        self._send_cancel(other, now)  # §16.7 step 10
                ctx.pending.clear()
                if first and ctx.initial:
                    self.dialogs.answered(ctx.request.call_id, b.target.dest, resp, now)
                    ctx.tracked = False
            return
        if (
            (status in (408, 503) or synthetic)
            and b.target.failover
            and ctx.pending
            and not ctx.cancelled
            and ctx.final_status == 0
        ):
            # Outbound failover: next target (RFC 3263 §4.3 / §16.7 step 9 semantics).
            self.router.blacklist(b.target.dest, now)
            self.metrics.failovers.inc()
            self._start_branch(ctx, ctx.pending.pop(0), now)
            return
        ctx.responses.append(resp)
        if b.target.failover:
            ctx.pending.clear()  # a real answer (not 408/503): stop walking the failover list
        if status >= 600 and b.invite:
            ctx.pending.clear()
            for other in self._live(ctx):
                self._send_cancel(other, now)
        if ctx.final_status == 0 and not ctx.pending and not self._live(ctx):
            best = best_response(ctx.responses)
            assert best is not None
            if best.status == 503:
                # §16.7 step 6: a 503 must not make the caller think *we* are overloaded.
                best = best.replace(status=500, reason="Server Internal Error")
            self.up(ctx, best, now)
            if ctx.tracked:
                ctx.tracked = False
                reason = "cancel" if ctx.cancelled else f"error:{best.status}"
                self.dialogs.ended(ctx.request.call_id, best.status, reason, now)

    def _live(self, ctx: ProxyContext) -> list[Branch]:
        out = []
        for k in ctx.branches:
            b = self.branches.get(k)
            if b is not None and b.state < 2:
                out.append(b)
        return out

    # ------------------------------------------------------------------ responses up
    def up(self, ctx: ProxyContext, resp: Response, now: float, retransmit: bool = False) -> None:
        """§16.7 step 9: remove our Via, restore hidden ones, relay on the server transaction."""
        _, headers = resp.headers.pop_first_value("Via")
        if ctx.hidden_vias:
            headers = self.topology.restore_response(headers, ctx.request, ctx.hidden_rr)
        if "Contact" in headers and self.topology.is_untrusted(ctx.source):
            iface = self.router.local.iface(ctx.source.transport)
            hidden = self.topology.hidden_contacts(resp.replace(headers=headers), iface)
            headers = headers.set("Contact", hidden)
        out = resp.replace(headers=headers)
        boundary = self.hooks.boundary if self.hooks is not None else None
        if boundary is not None and self.topology.is_untrusted(ctx.source):
            out = boundary.response(out)
        self.relay(ctx, out, now, retransmit)

    def send_up(self, ctx: ProxyContext, out: Response, now: float, retransmit: bool) -> None:
        status = out.status
        if status >= 200 and not retransmit:
            if ctx.final_status and not (ctx.invite and status < 300):
                return  # one final per transaction; only further 2xx of a fork pass
            if ctx.final_status == 0:
                ctx.final_status = status
                if ctx.invite:
                    self.setup -= 1
                self.metrics.response(status)
                ctx.responses = []
                ctx.forwarded = None
                # The context and its transactions linger (Timers J/L/M, 32 s) for
                # retransmissions only: drop the typed-header caches of the requests they
                # hold (a later read re-parses), a third of what a finished call keeps.
                ctx.request._cache.clear()
                for bkey in ctx.branches:
                    b = self.branches.get(bkey)
                    if b is not None:
                        b.request._cache.clear()
        try:
            self.layer.send_response(ctx.key, out, now)
        except LocalProtocolError:
            # The server transaction is gone (Timer L) or already answered: a 2xx still
            # travels, statelessly by Via (§16.7 step 10, RFC 6026 §8.4).
            if ctx.invite and 200 <= status < 300:
                self.layer.send_stateless(out, peer=via_destination(out.top_via))
        if status >= 200:
            self._finished(ctx)

    def stray(self, resp: Response) -> None:
        """§16.11 for a 2xx retransmission after our client transaction is gone: by Via."""
        if not (200 <= resp.status < 300 and resp.cseq.method == "INVITE"):
            return
        if branch_loop_hash(resp.top_via.branch) is None:
            return  # not one of our branches
        _, headers = resp.headers.pop_first_value("Via")
        vias = headers.values("Via")
        if vias:
            self.layer.send_stateless(
                resp.replace(headers=headers), peer=via_destination(parse_via(vias[0]))
            )


def _rr(iface: Peer, token: str | None, ftag: str | None = None) -> str:
    host = f"[{iface.host}]" if ":" in iface.host else iface.host
    user = f"{token}@" if token else ""
    transport = "" if iface.transport == "udp" else f";transport={iface.transport}"
    tag = f";ftag={ftag}" if token and ftag and _TOKEN_SAFE.fullmatch(ftag) else ""
    return f"<sip:{user}{host}:{iface.port}{transport}{tag};lr>"


_TOKEN_SAFE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]{1,64}")  # RFC 3261 token, bounded
