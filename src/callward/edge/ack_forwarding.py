"""Stateless forwarding of the ACK for a 2xx (RFC 3261 §16.11, §17.1.1.3): that ACK is a
transaction of its own, so no transaction state is kept for it. It is routed like any
in-dialog request (Route set, location lookup) and sent with a branch derived from the ACK's
own, so that its retransmissions (one per 2xx retransmission) carry the same branch."""

from __future__ import annotations

from collections.abc import Callable

from callward.edge.hooks import Hooks
from callward.edge.pending import Task
from callward.edge.routing import loop_hash, make_branch
from callward.edge.targets import Router
from callward.edge.topology import TopologyHider, rebuild_headers
from callward.errors import StoreError
from callward.sip.message import Request
from callward.sip.peer import Peer
from callward.sip.transaction_layer import TransactionLayer

__all__ = ["AckForwarder"]


class AckForwarder:
    def __init__(
        self,
        router: Router,
        layer: TransactionLayer,
        topology: TopologyHider,
        hooks: Hooks,
        clock: Callable[[], float],
    ) -> None:
        self.router, self.layer, self.topology = router, layer, topology
        self.hooks, self.clock = hooks, clock

    def forward(self, req: Request, source: Peer) -> Task:
        mf = req.max_forwards
        if mf is not None and mf <= 0:
            return
        source_branch = req.top_via.branch or ""
        lhash = loop_hash(req)
        router = self.router
        if router.is_loop(req, lhash):
            return
        try:
            routed = yield from router.route(req, source, initial=False, now=self.clock())
            if routed.local:
                routed = yield from router.local_route(
                    routed.request, initial=False, now=self.clock()
                )
            if not routed.targets:
                return
            target = routed.targets[0]
            req, dest = routed.request, target.dest
            if target.uri is not None:
                req = req.replace(uri=target.uri)
            if target.routes:
                req = req.replace(headers=req.headers.prepend("Route", target.routes[0]))
            media = self.hooks.media
            if media is not None and req.body:
                req = yield from media.request(req, self.clock())
        except StoreError:
            return  # the caller resends the ACK with the next 2xx retransmission
        bid = make_branch(lhash, "a" + source_branch[-10:].replace(".", ""))
        via = router.local.via(dest.transport, bid)
        headers = rebuild_headers(
            req.headers, [("Via", via)], {"Max-Forwards": str(70 if mf is None else mf - 1)}
        )
        req = req.replace(headers=headers)
        if self.hooks.boundary is not None and self.topology.is_untrusted(dest):
            req = self.hooks.boundary.request(req)
        self.layer.send_stateless(req, peer=dest)
