"""Lost datagrams on UDP through the sans-IO edge core (no sockets): the edge's transactions
(the shared :mod:`callward.sip.transaction_layer`) recover per RFC 3261 §17 / RFC 6026.

The caller side is an independent state machine driven only by what the edge sends it: a
final it never receives must come again (Timer G), and the caller's transaction must reach its
end state. Expected intervals are computed here from T1/T2 as RFC 3261 Table 4 states them.
"""

from __future__ import annotations

import itertools

from callward.events import CallEnded
from callward.sip import Request, Response, parse_message
from callward.sip.peer import Peer
from callward.sip.transaction import ClientTransaction, ResponseReceived, TxState

UAS = Peer("udp", "127.0.0.1", 5080)
T1, T2 = 0.5, 4.0


def _net(h):
    core, _, _ = h.make_core(routes=(("bob", "sip:bob@127.0.0.1:5080"),))
    return h.Net(core)


def _to_caller(out, h) -> list[Response]:
    return [m for p, m in out if p.same_address(h.ALICE) and isinstance(m, Response)]


def _invite_through(h, net, call_id: str) -> tuple[ClientTransaction, Request]:
    """The caller's INVITE client transaction, and the INVITE as the UAS received it."""
    invite = parse_message(h.build("INVITE", "sip:bob@callward.local", call_id=call_id))
    assert isinstance(invite, Request)
    caller = ClientTransaction.create(invite, reliable=False)
    caller.send_request(net.now)
    (data,) = caller.datagrams_to_send()
    out = net.send(data)
    ((peer, fwd),) = h.requests(out, "INVITE")
    assert peer == UAS
    for r in _to_caller(out, h):
        caller.receive(r, net.now)
    return caller, fwd


def _deliver(caller: ClientTransaction, responses, now: float) -> None:
    for r in responses:
        caller.receive(r, now)


def test_lost_final_response_is_resent_by_timer_g_and_caller_completes(h) -> None:
    net = _net(h)
    caller, fwd = _invite_through(h, net, "g1")
    out = net.send(h.reply(fwd, 486, to_tag="busy"), UAS)
    assert [(p, m.method) for p, m in h.requests(out, "ACK")] == [(UAS, "ACK")]  # hop-by-hop
    (lost,) = _to_caller(out, h)  # the first copy never reaches the caller
    assert lost.status == 486
    # Timer G: T1 later, the same response again; then 2*T1, 4*T1, capped at T2.
    got: list[tuple[float, Response]] = []
    start = net.now
    for _ in range(200):  # 10 s in 50 ms steps
        for r in _to_caller(net.tick(0.05), h):
            got.append((net.now - start, r))
    assert [r.status for _, r in got][:4] == [486] * 4
    assert all(bytes(r) == bytes(lost) for _, r in got)
    times = [0.0] + [t for t, _ in got]
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(times)]
    assert gaps[:4] == [T1, 2 * T1, 4 * T1, min(8 * T1, T2)]
    # The caller's transaction gets the retransmission, ACKs it, and completes.
    _deliver(caller, [got[0][1]], net.now)
    assert caller.state is TxState.COMPLETED
    events = []
    while (ev := caller.next_event()) is not None:
        events.append(ev)
    assert [e.response.status for e in events if isinstance(e, ResponseReceived)][-1] == 486
    (ack,) = caller.datagrams_to_send()
    out = net.send(ack)
    assert out == []  # the ACK for a non-2xx stops at the edge (§17.2.1)
    assert _to_caller(net.tick(40.0), h) == []  # Timer G stopped: confirmed
    assert [e.reason for e in net.events if isinstance(e, CallEnded)] == ["error:486"]


def test_lost_ack_for_non_2xx_gets_the_final_again_then_stops(h) -> None:
    net = _net(h)
    caller, fwd = _invite_through(h, net, "g2")
    out = net.send(h.reply(fwd, 603, to_tag="no"), UAS)
    _deliver(caller, _to_caller(out, h), net.now)
    assert caller.state is TxState.COMPLETED
    caller.datagrams_to_send()  # the caller's first ACK is lost
    again = _to_caller(net.tick(T1 + 0.01), h)  # Timer G resends the 603
    assert [r.status for r in again] == [603]
    _deliver(caller, again, net.now)  # the caller resends its ACK for the retransmission
    (ack,) = caller.datagrams_to_send()
    assert net.send(ack) == []
    assert _to_caller(net.tick(40.0), h) == []


def test_lost_ack_toward_uas_is_resent_not_relayed(h) -> None:
    """The UAS did not get the edge's ACK and resends its 486: the edge's client transaction
    ACKs again and the caller does not see a second 486 from that."""
    net = _net(h)
    _, fwd = _invite_through(h, net, "g3")
    busy = h.reply(fwd, 486, to_tag="busy")
    net.send(busy, UAS)
    out = net.send(busy, UAS)  # retransmitted by the UAS
    assert [p for p, _ in h.requests(out, "ACK")] == [UAS]
    assert _to_caller(out, h) == []


def test_lost_200_ok_is_resent_by_the_uas_and_passes_through(h) -> None:
    net = _net(h)
    caller, fwd = _invite_through(h, net, "ok1")
    ok = h.reply(fwd, 200, to_tag="ans")
    out = net.send(ok, UAS)
    (lost,) = _to_caller(out, h)  # lost on the way to the caller
    assert lost.status == 200
    # §13.3.1.4: the UAS core resends its 2xx (T1, 2*T1...) until the ACK arrives; the
    # edge's transactions are Accepted (RFC 6026) and relay every copy.
    out = net.send(ok, UAS)
    (again,) = _to_caller(out, h)
    assert again.status == 200 and again.headers.get("To") == lost.headers.get("To")
    _deliver(caller, [again], net.now)
    assert caller.state is TxState.ACCEPTED
    # The 2xx ACK is end to end: routed by the edge statelessly to the UAS, every copy.
    rr = again.headers.values("Record-Route")
    ack = h.build(
        "ACK",
        "sip:bob@127.0.0.1:5080",
        call_id="ok1",
        to_tag="ans",
        extra=tuple(("Route", r) for r in rr),
    )
    first = h.requests(net.send(ack), "ACK")
    second = h.requests(net.send(ack), "ACK")  # the ACK was lost: the caller resends it
    assert [p for p, _ in first] == [UAS] and [p for p, _ in second] == [UAS]
    assert first[0][1].top_via.branch == second[0][1].top_via.branch
    # After Timer L/M the transactions are gone; a very late 2xx still goes up by Via.
    net.tick(40.0)
    assert net.core.active_transactions == 0
    out = net.send(ok, UAS)
    assert [r.status for r in _to_caller(out, h)] == [200]


def test_lost_cancel_is_retransmitted_by_timer_e(h) -> None:
    net = _net(h)
    br = "z9hG4bKlostcancel"
    out = net.send(h.build("INVITE", "sip:bob@callward.local", branch=br, call_id="cl"))
    ((_, inv),) = h.requests(out, "INVITE")
    net.send(h.reply(inv, 180), UAS)
    cancel_in = h.build("CANCEL", "sip:bob@callward.local", branch=br, call_id="cl")
    out = net.send(cancel_in)
    assert [r.status for r in h.responses(out)] == [200]
    ((_, cancel),) = h.requests(out, "CANCEL")  # lost on the way to the UAS
    out = net.tick(T1 + 0.01)  # Timer E
    ((peer, again),) = h.requests(out, "CANCEL")
    assert peer == UAS and bytes(again) == bytes(cancel)
    assert again.top_via.branch == inv.top_via.branch  # matches the INVITE (§9.1)
    # The caller's own CANCEL retransmission (its 200 was lost) gets the 200 again.
    out = net.send(cancel_in)
    assert [r.status for r in h.responses(out)] == [200] and not h.requests(out)
    net.send(h.reply(again, 200), UAS)
    out = net.send(h.reply(inv, 487, to_tag="tb"), UAS)
    assert [r.status for r in _to_caller(out, h)] == [487]
    assert [e.reason for e in net.events if isinstance(e, CallEnded)] == ["cancel"]


def test_silent_branch_after_cancel_is_abandoned_and_the_caller_answered(h) -> None:
    """§9.1: the UAS never answers the CANCEL nor sends 487: 64*T1 later the branch is
    destroyed and the caller gets a final response; nothing is left behind."""
    net = _net(h)
    br = "z9hG4bKsilent"
    out = net.send(h.build("INVITE", "sip:bob@callward.local", branch=br, call_id="si"))
    ((_, inv),) = h.requests(out, "INVITE")
    net.send(h.reply(inv, 180), UAS)
    net.send(h.build("CANCEL", "sip:bob@callward.local", branch=br, call_id="si"))
    out = net.tick(64 * T1 + 1)
    finals = [r.status for r in _to_caller(out, h) if r.status >= 200]
    assert finals and finals[0] == 408
    net.tick(400.0)
    assert net.core.active_transactions == 0
    assert not net.core.forking.contexts and not net.core.forking.branches


def test_rfc2543_peer_without_magic_cookie(h) -> None:
    """§17.2.3: a request without a z9hG4bK branch is matched on Request-URI, From tag,
    Call-ID, CSeq and top Via: its retransmission, its ACK and its CANCEL all find it."""
    net = _net(h)

    def old(method: str, cseq_method: str | None = None, to_tag: str | None = None) -> bytes:
        data = h.build(method, "sip:bob@callward.local", call_id="old", to_tag=to_tag)
        data = data.replace(b";branch=" + data.split(b";branch=")[1].split(b";")[0], b"")
        if cseq_method:
            data = data.replace(f"CSeq: 1 {method}".encode(), f"CSeq: 1 {cseq_method}".encode())
        return data

    invite = old("INVITE")
    out = net.send(invite)
    ((_, fwd),) = h.requests(out, "INVITE")
    assert fwd.top_via.branch.startswith("z9hG4bK")  # our own branch is RFC 3261
    out = net.send(invite)  # retransmission: absorbed, the 100 replayed, nothing forwarded
    assert not h.requests(out) and [r.status for r in h.responses(out)] == [100]
    net.send(h.reply(fwd, 180), UAS)
    out = net.send(old("CANCEL"))
    assert [r.status for r in h.responses(out)] == [200]
    assert len(h.requests(out, "CANCEL")) == 1
    out = net.send(h.reply(fwd, 487, to_tag="tb"), UAS)
    (final,) = _to_caller(out, h)
    assert final.status == 487
    out = net.send(old("ACK", to_tag="tb"))  # matched to the INVITE: absorbed
    assert out == []
    assert _to_caller(net.tick(40.0), h) == []  # and Timer G stopped
