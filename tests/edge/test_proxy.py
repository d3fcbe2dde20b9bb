"""Stateful proxy behaviour (RFC 3261 §16) through the sans-IO core, no sockets."""

from __future__ import annotations

from callward.edge.flow import Peer
from callward.events import CallAnswered, CallEnded, CallStarted
from callward.sip import parse_message

UAS = Peer("udp", "127.0.0.1", 5080)


def _core_with_route(h, **kw):
    routes = kw.pop("routes", (("bob", "sip:bob@127.0.0.1:5080"),))
    core, _loc, _subs = h.make_core(routes=routes, **kw)
    return h.Net(core)


def test_invite_forwarded_with_via_rr_and_max_forwards(h) -> None:
    net = _core_with_route(h)
    out = net.send(h.build("INVITE", "sip:bob@callward.local", max_forwards=10))
    assert [r.status for r in h.responses(out)] == [100]
    ((peer, inv),) = h.requests(out, "INVITE")
    assert peer == UAS
    assert str(inv.uri) == "sip:bob@127.0.0.1:5080"
    assert inv.max_forwards == 9
    assert len(inv.vias) == 2 and inv.vias[0].host == "127.0.0.1" and inv.vias[0].port == 5060
    assert inv.vias[0].branch.startswith("z9hG4bK")
    (rr,) = inv.headers.values("Record-Route")
    assert rr.startswith("<sip:") and ";lr" in rr and "127.0.0.1:5060" in rr
    # 180 and 200 come back to alice with our Via removed
    out = net.send(h.reply(inv, 180), UAS)
    ((peer, r180),) = [(p, m) for p, m in out]
    assert peer == h.ALICE and r180.status == 180 and len(r180.vias) == 1
    out = net.send(h.reply(inv, 200), UAS)
    ((peer, r200),) = out
    assert r200.status == 200 and r200.headers.values("Record-Route") == [rr]
    kinds = [type(e) for e in net.events]
    assert kinds == [CallStarted, CallAnswered]


def test_max_forwards_zero_483_and_options_to_us(h, net) -> None:
    out = net.send(h.build("INVITE", "sip:bob@callward.local", max_forwards=0))
    assert [r.status for r in h.responses(out)] == [483]
    out = net.send(h.build("OPTIONS", "sip:127.0.0.1:5060", max_forwards=0, call_id="o"))
    assert [r.status for r in h.responses(out)] == [200]


def test_loop_482_but_spiral_passes(h, net) -> None:
    """§16.3 item 4: our own Via with the same request hash is a loop; the same request
    retargeted in between (a different Request-URI) is a spiral and passes."""
    out = net.send(h.build("MESSAGE", "sip:carol@example.net", call_id="loop"))
    ((peer, fwd),) = h.requests(out, "MESSAGE")
    assert (peer.host, peer.port) == ("example.net", 5060)
    hop = b"\r\nVia: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKhop"
    back = bytes(fwd).replace(b"\r\n", hop + b"1\r\n", 1)  # came back, only a Via added
    out = net.send(back, Peer("udp", "127.0.0.1", 7000))
    assert [r.status for r in h.responses(out)] == [482]
    spiral = bytes(fwd).replace(b"\r\n", hop + b"2\r\n", 1)
    spiral = spiral.replace(b"MESSAGE sip:carol@", b"MESSAGE sip:dave@")
    out = net.send(spiral, Peer("udp", "127.0.0.1", 7000))
    assert h.responses(out) == [] and len(h.requests(out, "MESSAGE")) == 1


def test_upstream_never_back_into_a_traversed_node(h) -> None:
    """Failover skips upstreams already in the Via list, ending in a 5xx instead of a loop."""
    net = _core_with_route(h, routes=(), upstreams=("sip:127.0.0.1:5060", "sip:127.0.0.1:7001"))
    vias = ("SIP/2.0/UDP 127.0.0.1:7001;branch=z9hG4bKprev",)
    out = net.send(h.build("MESSAGE", "sip:carol@example.net", call_id="up", vias=vias))
    # 5060 is ourselves (in the request as soon as we forward), 7001 already traversed
    msgs = h.requests(out, "MESSAGE")
    if msgs:  # forwarded to ourselves via Route: comes back, and then nothing is left
        ((_peer, fwd),) = msgs
        out = net.send(bytes(fwd), Peer("udp", "127.0.0.1", 5060))
    assert [r.status for r in h.responses(out)] == [503]


def test_double_record_route_when_transport_changes(h) -> None:
    net = _core_with_route(h, routes=(("bob", "sip:bob@127.0.0.1:5080;transport=tcp"),))
    out = net.send(h.build("INVITE", "sip:bob@callward.local"))
    ((peer, inv),) = h.requests(out, "INVITE")
    assert peer.transport == "tcp"
    assert inv.vias[0].transport == "TCP"
    rrs = inv.headers.values("Record-Route")
    assert len(rrs) == 2
    assert "transport=tcp" in rrs[0] and "transport" not in rrs[1]
    # An in-dialog BYE from the callee routes through both our values and reaches alice.
    bye = h.build(
        "BYE",
        "sip:alice@127.0.0.1:5091",
        src=Peer("tcp", "127.0.0.1", 5080, conn="c3"),
        from_="<sip:bob@callward.local>",
        from_tag="tb",
        to="<sip:alice@callward.local>",
        to_tag="fa",
        cseq=5,
        extra=tuple(("Route", r) for r in rrs),
    )
    out = net.send(bye, Peer("tcp", "127.0.0.1", 5080, conn="c3"))
    ((peer, fwd),) = h.requests(out, "BYE")
    assert peer.same_address(h.ALICE)  # via the flow token in the caller-side Record-Route
    assert not fwd.headers.get("Route")


def test_loose_route_to_next_hop_and_strict_route_fixup(h, net) -> None:
    out = net.send(
        h.build(
            "BYE",
            "sip:bob@127.0.0.1:5080",
            to_tag="tb",
            extra=(("Route", "<sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5099;lr>"),),
        )
    )
    ((peer, fwd),) = h.requests(out, "BYE")
    assert (peer.host, peer.port) == ("127.0.0.1", 5099)
    assert str(fwd.uri) == "sip:bob@127.0.0.1:5080"
    assert fwd.headers.values("Route") == ["<sip:127.0.0.1:5099;lr>"]
    # A strict router before us put our URI in the Request-URI (§16.4).
    out = net.send(
        h.build(
            "BYE",
            "sip:127.0.0.1:5060;lr",
            to_tag="tb",
            call_id="c-strict",
            extra=(("Route", "<sip:bob@127.0.0.1:5080>"),),
        )
    )
    ((peer, fwd),) = h.requests(out, "BYE")
    assert str(fwd.uri) == "sip:bob@127.0.0.1:5080" and (peer.port == 5080)


def test_fork_best_response_and_cancel_others(h, net) -> None:
    for port in (6001, 6002, 6003):
        net.location.save(
            __import__("callward.edge.location", fromlist=["Binding"]).Binding(
                aor="bob@callward.local",
                contact=f"<sip:bob@127.0.0.1:{port}>",
                key=f"k{port}",
                expires_at=net.now + 600,
                call_id="r",
                cseq=1,
                source=f"udp:127.0.0.1:{port}",
            )
        )
    out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id="fork"))
    invs = h.requests(out, "INVITE")
    assert sorted(p.port for p, _ in invs) == [6001, 6002, 6003]
    by_port = {p.port: m for p, m in invs}
    # 404 and 486 arrive: nothing forwarded yet (a branch is still pending), ACKs sent
    out = net.send(h.reply(by_port[6001], 404, to_tag="x1"), Peer("udp", "127.0.0.1", 6001))
    assert h.requests(out, "ACK") and not h.responses(out)
    out = net.send(h.reply(by_port[6002], 486, to_tag="x2"), Peer("udp", "127.0.0.1", 6002))
    assert not h.responses(out)
    out = net.send(h.reply(by_port[6003], 503, to_tag="x3"), Peer("udp", "127.0.0.1", 6003))
    # §16.7.6: lowest class among 4xx/5xx → a 4xx (404 or 486), never the 503
    (final,) = h.responses(out)
    assert final.status in (404, 486)
    ended = [e for e in net.events if isinstance(e, CallEnded)]
    assert ended and ended[-1].reason == f"error:{final.status}"


def test_6xx_wins_and_cancels_pending(h, net) -> None:
    from callward.edge.location import Binding

    for port in (6001, 6002):
        net.location.save(
            Binding(
                "bob@callward.local",
                f"<sip:bob@127.0.0.1:{port}>",
                f"k{port}",
                net.now + 600,
                "r",
                1,
                f"udp:127.0.0.1:{port}",
            )
        )
    out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id="six"))
    by_port = {p.port: m for p, m in h.requests(out, "INVITE")}
    net.send(h.reply(by_port[6001], 180, to_tag="y1"), Peer("udp", "127.0.0.1", 6001))
    net.send(h.reply(by_port[6002], 180, to_tag="y2"), Peer("udp", "127.0.0.1", 6002))
    out = net.send(h.reply(by_port[6002], 603, to_tag="y2"), Peer("udp", "127.0.0.1", 6002))
    cancels = h.requests(out, "CANCEL")
    assert [p.port for p, _ in cancels] == [6001]
    out = net.send(h.reply(by_port[6001], 487, to_tag="y1"), Peer("udp", "127.0.0.1", 6001))
    assert [r.status for r in h.responses(out)] == [603]


def test_cancel_from_caller(h) -> None:
    net = _core_with_route(h)
    br = "z9hG4bKcancel1"
    out = net.send(h.build("INVITE", "sip:bob@callward.local", branch=br, call_id="cx"))
    ((_, inv),) = h.requests(out, "INVITE")
    net.send(h.reply(inv, 180), UAS)
    out = net.send(h.build("CANCEL", "sip:bob@callward.local", branch=br, call_id="cx"))
    assert [r.status for r in h.responses(out)] == [200]
    ((peer, cancel),) = h.requests(out, "CANCEL")
    assert peer == UAS and cancel.top_via.branch == inv.top_via.branch
    net.send(h.reply(cancel, 200), UAS)
    out = net.send(h.reply(inv, 487), UAS)
    assert [r.status for r in h.responses(out)] == [487]
    assert [e.reason for e in net.events if isinstance(e, CallEnded)] == ["cancel"]
    # unknown CANCEL → 481
    out = net.send(h.build("CANCEL", "sip:bob@callward.local", branch="z9hG4bKnone"))
    assert [r.status for r in h.responses(out)] == [481]


def test_retransmissions_timer_a_and_408(h) -> None:
    net = _core_with_route(h)
    out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id="slow"))
    first = h.requests(out, "INVITE")
    out = net.tick(0.6)  # T1 = 0.5 s
    assert len(h.requests(out, "INVITE")) == 1
    out = net.tick(40.0)  # Timer B = 64*T1 = 32 s
    resent = h.requests(out, "INVITE")
    assert 3 <= len(resent) <= 6 and first
    # one 408 to the caller, resent by Timer G (T1, 2*T1, ... capped at T2) until it ACKs
    statuses = [r.status for r in h.responses(out)]
    assert set(statuses) == {408} and 2 <= len(statuses) <= 8


def test_request_retransmission_answered_from_server_transaction(h) -> None:
    net = _core_with_route(h)
    data = h.build("OPTIONS", "sip:bob@callward.local", branch="z9hG4bKre1", call_id="re")
    out = net.send(data)
    ((_, fwd),) = h.requests(out, "OPTIONS")
    net.send(h.reply(fwd, 200), UAS)
    out = net.send(data)  # the caller retransmits: the stored 200 is replayed, not forwarded
    assert not h.requests(out) and [r.status for r in h.responses(out)] == [200]


def test_ack_for_2xx_routed_by_request_uri_without_route(h) -> None:
    """SIPp's built-in uac sends ACK/BYE to the proxy with its original Request-URI."""
    net = _core_with_route(h)
    out = net.send(h.build("ACK", "sip:bob@callward.local", to_tag="tb", call_id="a1"))
    ((peer, ack),) = h.requests(out, "ACK")
    assert peer == UAS and str(ack.uri) == "sip:bob@127.0.0.1:5080"
    again = net.send(
        h.build("ACK", "sip:bob@callward.local", to_tag="tb", call_id="a1", branch="z9hG4bKsame")
    )
    again2 = net.send(
        h.build("ACK", "sip:bob@callward.local", to_tag="tb", call_id="a1", branch="z9hG4bKsame")
    )
    b1 = h.requests(again, "ACK")[0][1].top_via.branch
    b2 = h.requests(again2, "ACK")[0][1].top_via.branch
    assert b1 == b2  # stateless: same input, same branch (§16.11)


def test_unknown_user_480_or_404(h, net) -> None:
    out = net.send(h.build("INVITE", "sip:nobody@callward.local", call_id="u"))
    assert [r.status for r in h.responses(out)][-1] == 480


def test_malformed_gets_400_with_parser_reason(h, net) -> None:
    bad = h.build("INVITE", "sip:bob@callward.local").replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE")
    out = net.send(bad)
    (r,) = h.responses(out)
    assert r.status == 400 and "CSeq" in r.reason
    junk = net.send(b"\x00\xffgarbage\r\n\r\n")
    assert junk == []
    big = h.build("MESSAGE", "sip:bob@callward.local", body=b"x" * 70000)
    (r,) = h.responses(net.send(big))
    assert r.status in (413, 513)


def test_responses_for_unknown_branch_are_dropped(h, net) -> None:
    inv = parse_message(h.build("INVITE", "sip:bob@callward.local"))
    assert net.send(h.reply(inv, 180), UAS) == []


def test_proxy_require_unknown_option_420(h, net) -> None:
    """§16.3 item 5 / §20.29: a Proxy-Require option we do not implement → 420 + Unsupported."""
    out = net.send(
        h.build("INVITE", "sip:bob@callward.local", extra=(("Proxy-Require", "foo, bar"),))
    )
    (r,) = [r for r in h.responses(out) if r.status >= 200]
    assert r.status == 420 and r.headers.get("Unsupported") == "foo, bar"
    assert not h.requests(out)


def test_finished_calls_leave_no_reference_cycles(h) -> None:
    """Transactions, branches and messages of finished calls must be freed by reference
    counting: the edge freezes survivors for the cyclic collector (app.tune_gc), so a cycle
    here would be both a stall source and, between full passes, a leak."""
    import gc

    from callward.edge.forking import Branch, ProxyContext
    from callward.sip.message import Headers, Request, Response
    from callward.sip.transaction import ClientTransaction, ServerTransaction

    net = _core_with_route(h)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(3):
            cid = f"cyc-{i}"
            out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id=cid))
            ((_, inv),) = h.requests(out, "INVITE")
            net.send(h.reply(inv, 180), UAS)
            out = net.send(h.reply(inv, 200), UAS)
            ((_, ok),) = out
            net.send(h.build("ACK", "sip:bob@127.0.0.1:5080", call_id=cid, to_tag="tb"))
            out = net.send(
                h.build("BYE", "sip:bob@127.0.0.1:5080", call_id=cid, cseq=2, to_tag="tb")
            )
            ((_, bye),) = h.requests(out, "BYE")
            net.send(h.reply(bye, 200), UAS)
        # a rejected call too (ACK for the non-2xx, best-response path)
        out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id="cyc-busy"))
        ((_, inv),) = h.requests(out, "INVITE")
        net.send(h.reply(inv, 486, to_tag="busy"), UAS)
        net.tick(400.0)  # every Timer J/K/L/M and the 300 s transaction guard fire
        assert net.core.active_transactions == 0
        assert not net.core.forking.contexts and not net.core.forking.branches
        del out, inv, ok, bye
        net.log.clear()
        gc.collect()
        ours = (
            ProxyContext,
            Branch,
            ClientTransaction,
            ServerTransaction,
            Request,
            Response,
            Headers,
        )
        leaked = [type(o).__name__ for o in gc.garbage if isinstance(o, ours)]
        assert leaked == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
