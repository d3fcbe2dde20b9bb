# mypy: disable-error-code="misc"
# (mixin methods declare `self: EdgeCore`; mypy calls that a non-supertype self, which is the point)
"""Client-side branches of the edge proxy (RFC 3261 §16.6–§16.10, §17.1): forwarding one
request per target with Via/Record-Route/Route, retransmission timers A/B/E/F and Timer C,
CANCEL per branch, ACK for non-2xx, serial failover with blacklisting, best-response selection
and sending responses upstream (with hidden Vias/Record-Routes restored).

A mixin of :class:`callward.edge.proxy.EdgeCore` (methods take ``self: EdgeCore``), split out so
no module holds the whole proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from callward.edge.calls import CallState
from callward.edge.flow import (
    Peer,
    encode_flow_token,
)
from callward.edge.identity import apply_privacy
from callward.edge.routing import (
    Target,
    best_response,
    branch_loop_hash,
    make_branch,
)
from callward.events import CallEnded
from callward.sip.headers import Via, parse_via
from callward.sip.message import Headers, Request, Response, make_response

if TYPE_CHECKING:
    from callward.edge.proxy import EdgeCore

__all__ = ["Branch", "BranchMixin", "ServerTx"]

_DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})


@dataclass(slots=True, eq=False)
class ServerTx:
    key: tuple[str, str, str]
    request: Request
    source: Peer
    created: float
    invite: bool
    lhash: str
    initial: bool
    last: bytes | None = None
    final_status: int = 0
    cancelled: bool = False
    branches: list[Branch] = field(default_factory=list)
    pending: list[Target] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    tried: int = 0
    hidden_vias: bool = False
    hidden_rr: tuple[str, ...] = ()
    fwd_set: dict[str, str] = field(default_factory=dict)
    call: CallState | None = None
    forwarded: Request | None = None  # template after our edits, before per-branch changes


@dataclass(slots=True, eq=False)
class Branch:
    id: str
    st: ServerTx | None  # None: a request we originate (CANCEL, session-timer BYE)
    target: Target
    request: Request
    data: bytes
    invite: bool
    interval: float
    next_retx: float
    deadline: float
    state: int = 0  # 0 calling/trying, 1 proceeding, 2 completed
    final: Response | None = None
    cancel_sent: bool = False


class BranchMixin:
    def _start_branch(self: EdgeCore, st: ServerTx, target: Target, now: float) -> None:
        base = st.forwarded
        assert base is not None
        st.tried += 1
        bid = make_branch(st.lhash, f"{next(self._ids):x}")
        req, hidden = self._branch_request(st, base, target, bid)
        st.hidden_vias = st.hidden_vias or hidden
        self._launch(bid, st, target, req, now)

    def _branch_request(
        self: EdgeCore, st: ServerTx, base: Request, target: Target, bid: str
    ) -> tuple[Request, bool]:
        """§16.6 steps 2-8 for one target: Request-URI, Route, Record-Route, Via."""
        dest = target.dest
        hidden = False
        untrusted = self._is_untrusted(dest)
        drop: tuple[str, ...] = ()
        if untrusted:
            # Topology hiding: the untrusted side sees only us (restored on the way back).
            hidden = True
            drop = ("Via", "Record-Route")
            if st.initial and base.method in _DIALOG_CREATING:
                st.hidden_rr = tuple(base.headers.values("Record-Route"))
                call = self._calls.get(base.call_id)
                if call is not None:
                    call.hidden_routes = st.hidden_rr
            base = apply_privacy(base)
        out_if = self.local.iface(dest.transport) or self.local.listen[0]
        host = f"[{out_if.host}]" if ":" in out_if.host else out_if.host
        front = [
            ("Via", f"SIP/2.0/{dest.transport.upper()} {host}:{out_if.port};branch={bid};rport")
        ]
        if self.settings.record_route and st.initial and base.method in _DIALOG_CREATING:
            in_if = self.local.iface(st.source.transport) or self.local.listen[0]
            if (in_if.transport, in_if.host, in_if.port) != (
                out_if.transport,
                out_if.host,
                out_if.port,
            ):
                front.append(("Record-Route", _rr(out_if, None)))  # RFC 5658 double RR
            token = None
            if len(st.request.vias) == 1 and not untrusted:
                token = encode_flow_token(self.secret, self.settings.node, st.source)
            front.append(("Record-Route", _rr(in_if, token)))
        front += [("Route", r) for r in target.routes]
        sets = st.fwd_set
        if untrusted and "Contact" in base.headers:
            sets = {**sets, "Contact": self._hidden_contacts(base, out_if)}
        headers = _rebuild(base.headers, front, sets, drop)
        req = (
            base.replace(headers=headers, uri=target.uri)
            if target.uri
            else base.replace(headers=headers)
        )
        return req, hidden

    def _launch(
        self: EdgeCore, bid: str, st: ServerTx | None, target: Target, req: Request, now: float
    ) -> None:
        data = bytes(req)
        s = self.settings
        invite = req.method == "INVITE"
        reliable = target.dest.reliable
        b = Branch(
            bid,
            st,
            target,
            req,
            data,
            invite,
            s.t1,
            0.0 if reliable else now + s.t1,
            now + 64 * s.t1,
        )
        self._branches[bid] = b
        if st is not None:
            st.branches.append(b)
        self._send(target.dest, data)
        if not reliable:
            self._timer(b.next_retx, "b", bid)
        self._timer(b.deadline, "b", bid)

    def _branch_timer(self: EdgeCore, bid: str, now: float) -> None:
        b = self._branches.get(bid)
        if b is None:
            return
        if b.state == 2:
            if now >= b.deadline:
                del self._branches[bid]
                st = b.st
                if st is not None:
                    # ServerTx.branches <-> Branch.st is a reference cycle: break it, so the
                    # messages of a finished call are freed by reference counting at once
                    # instead of piling up (~140 objects a call) for the cyclic collector,
                    # whose full passes over them stalled the edge for 0.2 s at 800 calls/s.
                    # Only branches that are still running (state < 2) are ever looked up
                    # through st.branches, so dropping a completed one changes nothing.
                    if b in st.branches:
                        st.branches.remove(b)
                    b.st = None
            return
        if b.next_retx and now >= b.next_retx and now < b.deadline:
            self._send(b.target.dest, b.data)
            # Timer A doubles; Timer E doubles up to T2 (and is T2 once proceeding).
            b.interval = b.interval * 2 if b.invite else min(b.interval * 2, self.settings.t2)
            b.next_retx = now + b.interval
            self._timer(b.next_retx, "b", bid)
        if now >= b.deadline:
            self._branch_timeout(b, now)

    def _branch_timeout(
        self: EdgeCore, b: Branch, now: float, *, transport_error: bool = False
    ) -> None:
        """Timer B/F (no answer: 408, §16.8), Timer C (CANCEL, then 408), or transport error."""
        if b.state == 1 and b.invite and not transport_error:
            self._send_cancel(b, now)
        # RFC 5626 §5.3: a registered flow that is gone is 430 Flow Failed (the phone will
        # re-register); any other transport error is a 503 that triggers failover.
        status = 408 if not transport_error else (430 if b.target.label == "flow" else 503)
        synthetic = make_response(b.request, status)
        if b.target.failover:
            self._blacklist_dest(b.target.dest, now)
        self._final(b, synthetic, now, synthetic_only=True)

    def _blacklist_dest(self: EdgeCore, dest: Peer, now: float) -> None:
        if self.settings.blacklist_seconds > 0:
            self._blacklist[(dest.transport, dest.host, dest.port)] = (
                now + self.settings.blacklist_seconds
            )

    def _send_cancel(self: EdgeCore, b: Branch, now: float) -> None:
        """§9.1: CANCEL with the INVITE's Request-URI, Call-ID, From, To, CSeq number, Route
        and the same branch (only our Via)."""
        if b.cancel_sent or b.state == 2:
            return
        b.cancel_sent = True
        r = b.request
        items: list[tuple[str, str]] = [("Via", r.headers.values("Via")[0])]
        items += [(n, v) for n, v in r.headers if n == "Route"]
        for name in ("From", "To", "Call-ID"):
            items.append((name, r.headers.get(name) or ""))
        items.append(("CSeq", f"{r.cseq.seq} CANCEL"))
        items.append(("Max-Forwards", "70"))
        cancel = Request(Headers._trusted(items), b"", method="CANCEL", uri=r.uri)
        cid = b.id + "c"
        # The CANCEL shares the INVITE's branch on the wire but is a separate transaction.
        self._launch(cid, None, b.target, cancel, now)

    def _on_response(self: EdgeCore, resp: Response, source: Peer, now: float) -> None:
        via = resp.top_via
        bid = via.branch or ""
        key = bid + "c" if resp.cseq.method == "CANCEL" else bid
        b = self._branches.get(key)
        if b is None:
            if (
                200 <= resp.status < 300
                and resp.cseq.method == "INVITE"
                and branch_loop_hash(bid) is not None
            ):
                self._forward_response_stateless(resp)
            return
        if resp.status < 200:
            if b.state == 0:
                b.state = 1
                if b.invite:
                    b.next_retx = 0.0  # Timer A stops on a provisional (§17.1.1.2)
                    b.deadline = now + self.settings.timer_c
                    self._timer(b.deadline, "b", b.id)
            st = b.st
            if st is None:
                return
            if st.cancelled and b.invite:
                self._send_cancel(b, now)
                return
            if resp.status > 100 and st.final_status == 0:
                self._upstream(st, resp, now)
            return
        if b.final is not None:
            # A retransmitted final: re-ACK a non-2xx, pass a 2xx on (§16.7 step 5 / §17.1.1.3).
            if b.invite and resp.status >= 300:
                self._send(b.target.dest, bytes(_ack_for(b.request, resp)))
            elif b.invite and b.st is not None:
                self._upstream(b.st, resp, now, retransmit=True)
            return
        self._final(b, resp, now)

    def _final(
        self: EdgeCore, b: Branch, resp: Response, now: float, *, synthetic_only: bool = False
    ) -> None:
        b.final = resp
        b.state = 2
        b.next_retx = 0.0
        b.deadline = now + (0.0 if b.target.dest.reliable else 32.0)
        self._timer(b.deadline, "b", b.id)
        if b.invite and resp.status >= 300 and not synthetic_only:
            self._send(b.target.dest, bytes(_ack_for(b.request, resp)))
        st = b.st
        if st is None:
            return
        status = resp.status
        if 200 <= status < 300:
            first = st.final_status == 0
            if b.invite and st.initial and first:
                resp = self._session_timer_response(st, resp)
            elif not st.initial and st.request.method in ("INVITE", "UPDATE"):
                self.session_refreshed(st.request, resp, now)
            self._upstream(st, resp, now)
            if b.invite:
                for other in st.branches:
                    if other is not b and other.state < 2:
                        self._send_cancel(other, now)  # §16.7 step 10
                st.pending.clear()
                if first and st.initial:
                    self._call_answered(st, b, resp, now)
            return
        if (
            (status in (408, 503) or synthetic_only)
            and b.target.failover
            and st.pending
            and not st.cancelled
            and st.final_status == 0
        ):
            # Outbound failover: next target (RFC 3263 §4.3 / §16.7 step 9 semantics).
            self._blacklist_dest(b.target.dest, now)
            self.metrics.failovers.inc()
            nxt = st.pending.pop(0)
            self._start_branch(st, nxt, now)
            return
        st.responses.append(resp)
        if b.target.failover:
            st.pending.clear()  # a real answer (not 408/503): stop walking the failover list
        if status >= 600 and b.invite:
            st.pending.clear()
            for other in st.branches:
                if other.state < 2:
                    self._send_cancel(other, now)
        if st.final_status == 0 and not st.pending and all(x.state == 2 for x in st.branches):
            best = best_response(st.responses)
            assert best is not None
            if best.status == 503:
                # §16.7 step 6: a 503 must not make the caller think *we* are overloaded.
                best = best.replace(status=500, reason="Server Internal Error")
            self._upstream(st, best, now)
            if st.invite and st.initial:
                call = self._calls.pop(st.request.call_id, None)
                if call is not None:
                    self.metrics.calls_active.dec()
                reason = "cancel" if st.cancelled else f"error:{best.status}"
                self._emit(
                    CallEnded, now, call_id=st.request.call_id, status=best.status, reason=reason
                )

    def _upstream(
        self: EdgeCore, st: ServerTx, resp: Response, now: float, *, retransmit: bool = False
    ) -> None:
        """§16.7 step 9: remove our Via, restore hidden ones, send on the server transaction."""
        _, headers = resp.headers.pop_first_value("Via")
        if st.hidden_vias:
            headers = headers.remove("Via")
            for v in reversed(st.request.headers.values("Via")):
                headers = headers.prepend("Via", v)
            if st.hidden_rr and "Record-Route" in headers:
                for rr in st.hidden_rr:
                    headers = headers.append("Record-Route", rr)
        if "Contact" in headers and self._is_untrusted(st.source):
            iface = self.local.iface(st.source.transport) or self.local.listen[0]
            hidden = self._hidden_contacts(resp.replace(headers=headers), iface)
            headers = headers.set("Contact", hidden)
        out = resp.replace(headers=headers)
        if retransmit:
            self._send(st.source, bytes(out))
            return
        if (
            resp.status >= 200
            and st.final_status >= 200
            and not (st.invite and 200 <= resp.status < 300)
        ):
            return
        if resp.status >= 200 and st.final_status == 0:
            self._reply(st, out)
        elif resp.status >= 200:
            self._send(st.source, bytes(out))  # further 2xx of a forked INVITE
        else:
            data = bytes(out)
            st.last = data
            self._send(st.source, data)

    def _forward_response_stateless(self: EdgeCore, resp: Response) -> None:
        """§16.11 for 2xx retransmissions after our transaction is gone: by Via."""
        _, headers = resp.headers.pop_first_value("Via")
        vias = headers.values("Via")
        if not vias:
            return

        nxt = parse_via(vias[0])
        self._send(_via_dest(nxt), bytes(resp.replace(headers=headers)))


def _rebuild(
    headers: Headers,
    front: list[tuple[str, str]],
    sets: dict[str, str],
    drop: tuple[str, ...] = (),
) -> Headers:
    """One copy for all of a forward's edits: ``front`` lines first (our Via, Record-Route,
    pushed Route: each lands above the existing lines of its name), ``sets`` replace a header
    in place (or are appended), ``drop`` names are removed."""
    items = list(front)
    done: set[str] = set()
    for name, value in headers:
        if name in drop:
            continue
        new = sets.get(name)
        if new is not None:
            if name not in done:
                items.append((name, new))
                done.add(name)
            continue
        items.append((name, value))
    for name, value in sets.items():
        if name not in done:
            items.append((name, value))
    return Headers._trusted(items)


def _rr(iface: Peer, token: str | None) -> str:
    host = f"[{iface.host}]" if ":" in iface.host else iface.host
    user = f"{token}@" if token else ""
    transport = "" if iface.transport == "udp" else f";transport={iface.transport}"
    return f"<sip:{user}{host}:{iface.port}{transport};lr>"


def _peer_of(text: str, conn: int) -> Peer:
    transport, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    return Peer(transport, host.strip("[]"), int(port), conn)


def _via_dest(via: Via) -> Peer:
    """§18.2.2: received/rport override sent-by."""
    host = via.received or via.maddr or via.host
    port = int(via.rport) if via.rport else (via.port or 5060)
    return Peer(via.transport.lower(), host.strip("[]"), port)


def _ack_for(invite: Request, resp: Response) -> Request:
    """§17.1.1.3: the ACK a client transaction sends for a non-2xx final."""
    items: list[tuple[str, str]] = [("Via", invite.headers.values("Via")[0])]
    items += [(n, v) for n, v in invite.headers if n == "Route"]
    items.append(("From", invite.headers.get("From") or ""))
    items.append(("To", resp.headers.get("To") or ""))
    items.append(("Call-ID", invite.call_id))
    items.append(("CSeq", f"{invite.cseq.seq} ACK"))
    items.append(("Max-Forwards", "70"))
    return Request(Headers._trusted(items), b"", method="ACK", uri=invite.uri)
