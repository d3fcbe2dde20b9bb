"""Transaction machines against RFC 3261 §17 / Appendix A and RFC 6026, with a fake clock.

Expected timer values are computed here from T1/T2/T4 as the RFC's Table 4 states them, never
read back from callward.sip.timers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import CallwardError, LocalProtocolError, RemoteProtocolError
from callward.sip import Request, Response, make_response, parse_message
from callward.sip.timers import Timer, TimerConfig
from callward.sip.transaction import (
    INVITE_CLIENT_TABLE,
    INVITE_SERVER_TABLE,
    NON_INVITE_CLIENT_TABLE,
    NON_INVITE_SERVER_TABLE,
    AckReceived,
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteServerTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    TransactionKey,
    TransactionTerminated,
    TransactionTimeout,
    TransportFailed,
    TxState,
    _Transaction,
    make_ack,
    make_cancel,
    new_branch,
)
from callward.sip.transaction_layer import TransactionLayer, server_key

T1, T2, T4 = 0.5, 4.0, 5.0  # RFC 3261 §17.1.1.1 / §17.1.2.2 defaults
CFG = TimerConfig(t1=T1, t2=T2, t4=T4)

# Every transition taken by any test in this module, to prove the tables are fully exercised.
SEEN: set[tuple[str, TxState, object]] = set()


@pytest.fixture(autouse=True)
def _record_transitions(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[None]:
    if "fuzz" in request.node.name:  # coverage must come from the deliberate tests
        yield
        return
    original = _Transaction._step

    def step(self: _Transaction, inp: object) -> TxState | None:
        before = self.state
        new = original(self, inp)  # type: ignore[arg-type]
        if new is not None:
            SEEN.add((type(self).__name__, before, inp))
        return new

    monkeypatch.setattr(_Transaction, "_step", step)
    yield


def request(
    method: str = "INVITE",
    branch: str = "z9hG4bKabc123",
    cseq: int = 1,
    to_tag: str | None = None,
    via_host: str = "pc33.example.com",
) -> Request:
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    raw = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host};branch={branch}\r\n"
        f"Max-Forwards: 70\r\nTo: {to}\r\nFrom: Alice <sip:alice@example.com>;tag=1928\r\n"
        f"Call-ID: a84b4c76e66710\r\nCSeq: {cseq} {method}\r\n"
        f"Route: <sip:p1.example.com;lr>\r\nContact: <sip:alice@pc33.example.com>\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    return msg


def respond(req: Request, status: int, tag: str | None = "t1") -> Response:
    return make_response(req, status, to_tag=tag)


def drain(tx: _Transaction) -> list[object]:
    out = []
    while (ev := tx.next_event()) is not None:
        out.append(ev)
    return out


def run_until_quiet(tx: _Transaction, start: float, limit: float = 1000.0) -> list[float]:
    """Advance a fake clock from deadline to deadline; return when each datagram went out."""
    sent: list[float] = []
    now = start
    while (deadline := tx.get_timer()) is not None and deadline < limit:
        assert deadline >= now
        now = deadline
        tx.handle_timer(now)
        sent += [now] * len(tx.datagrams_to_send())
    return sent


# ------------------------------------------------------------------ INVITE client


def test_timer_a_schedule_and_timer_b_timeout() -> None:
    tx = ClientTransaction.create(request(), reliable=False, timers=CFG)
    assert isinstance(tx, InviteClientTransaction)
    tx.send_request(0.0)
    assert tx.state is TxState.CALLING
    first = tx.datagrams_to_send()
    assert len(first) == 1 and first[0].startswith(b"INVITE ")
    # §17.1.1.2: retransmit at T1, then the interval doubles; Timer B fires at 64*T1.
    expected, t, interval = [], 0.0, T1
    while t + interval < 64 * T1:
        t += interval
        expected.append(t)
        interval *= 2
    assert expected == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    sent = run_until_quiet(tx, 0.0)
    assert sent == expected
    events = drain(tx)
    assert events == [
        TransactionTimeout(tx.key, Timer.B),
        TransactionTerminated(tx.key),
    ]
    assert tx.state is TxState.TERMINATED


def test_retransmission_is_the_same_bytes() -> None:
    tx = ClientTransaction.create(request(), timers=CFG)
    tx.send_request(0.0)
    first = tx.datagrams_to_send()
    tx.handle_timer(T1)
    assert tx.datagrams_to_send() == first


def test_invite_reliable_no_retransmission_timer_b() -> None:
    tx = ClientTransaction.create(request(), reliable=True, timers=CFG)
    tx.send_request(10.0)
    assert tx.get_timer() == 10.0 + 64 * T1
    tx.datagrams_to_send()
    assert run_until_quiet(tx, 10.0) == []
    assert isinstance(drain(tx)[0], TransactionTimeout)


def test_invite_provisional_stops_a_and_b() -> None:
    req = request()
    tx = ClientTransaction.create(req, timers=CFG)
    tx.send_request(0.0)
    tx.receive(respond(req, 180), 0.2)
    assert tx.state is TxState.PROCEEDING
    assert tx.get_timer() is None
    tx.receive(respond(req, 183), 0.3)
    evs = drain(tx)
    assert [e.response.status for e in evs if isinstance(e, ResponseReceived)] == [180, 183]


@pytest.mark.parametrize("reliable", [False, True])
@pytest.mark.parametrize("from_state", ["calling", "proceeding"])
def test_invite_non2xx_builds_ack_and_timer_d(reliable: bool, from_state: str) -> None:
    req = request()
    tx = ClientTransaction.create(req, reliable=reliable, timers=CFG)
    tx.send_request(0.0)
    tx.datagrams_to_send()
    if from_state == "proceeding":
        tx.receive(respond(req, 180), 0.1)
    resp = respond(req, 486, tag="callee")
    tx.receive(resp, 1.0)
    (ack_bytes,) = tx.datagrams_to_send()
    ack = parse_message(ack_bytes)
    assert isinstance(ack, Request) and ack.method == "ACK"
    # §17.1.1.3: same R-URI, Call-ID, From, CSeq number; To of the response; one Via, same
    # branch; the INVITE's Route set.
    assert str(ack.uri) == str(req.uri)
    assert ack.call_id == req.call_id
    assert ack.from_.tag == "1928"
    assert ack.to.tag == "callee"
    assert (ack.cseq.seq, ack.cseq.method) == (1, "ACK")
    assert len(ack.vias) == 1 and ack.top_via.branch == req.top_via.branch
    assert ack.headers.get_lines("Route") == req.headers.get_lines("Route")
    evs = drain(tx)
    assert [type(e) for e in evs if not isinstance(e, ResponseReceived) or e.response.status > 199]
    if reliable:
        # Timer D is zero on reliable transports: straight to Terminated.
        assert tx.state is TxState.TERMINATED
        assert isinstance(evs[-1], TransactionTerminated)
        return
    assert tx.state is TxState.COMPLETED
    assert tx.get_timer() == pytest.approx(1.0 + 32.0)  # Timer D >= 32 s for UDP
    # A retransmitted final response: same ACK again, nothing to the TU.
    tx.receive(resp, 5.0)
    assert tx.datagrams_to_send() == [ack_bytes]
    assert drain(tx) == []
    tx.handle_timer(33.0)
    assert tx.state is TxState.TERMINATED


def test_invite_2xx_accepted_state_and_timer_m() -> None:
    req = request()
    tx = ClientTransaction.create(req, timers=CFG)
    tx.send_request(0.0)
    tx.datagrams_to_send()
    tx.receive(respond(req, 200, "a"), 2.0)
    assert tx.state is TxState.ACCEPTED
    assert tx.datagrams_to_send() == []  # the TU, not the transaction, ACKs a 2xx
    # RFC 6026 §8.4: further 2xx (a retransmission or another fork) still reach the TU.
    tx.receive(respond(req, 200, "b"), 3.0)
    tags = [e.response.to.tag for e in drain(tx) if isinstance(e, ResponseReceived)]
    assert tags == ["a", "b"]
    tx.receive(respond(req, 180), 3.1)  # absorbed
    tx.receive(respond(req, 486), 3.2)  # absorbed
    assert drain(tx) == [] and tx.datagrams_to_send() == []
    assert tx.get_timer() == pytest.approx(2.0 + 64 * T1)  # Timer M
    tx.handle_timer(2.0 + 64 * T1)
    assert tx.state is TxState.TERMINATED


def test_invite_transport_error_in_calling_and_completed() -> None:
    req = request()
    tx = ClientTransaction.create(req, timers=CFG)
    tx.send_request(0.0)
    tx.transport_error(0.1)
    assert drain(tx) == [TransportFailed(tx.key), TransactionTerminated(tx.key)]
    tx2 = ClientTransaction.create(req, timers=CFG)
    tx2.send_request(0.0)
    tx2.receive(respond(req, 503), 1.0)
    tx2.transport_error(1.1)
    assert tx2.state is TxState.TERMINATED
    assert TransportFailed(tx2.key) in drain(tx2)


def test_client_illegal_local_inputs_raise() -> None:
    tx = ClientTransaction.create(request(), timers=CFG)
    tx.send_request(0.0)
    with pytest.raises(LocalProtocolError):
        tx.send_request(0.1)
    with pytest.raises(LocalProtocolError):
        ClientTransaction.create(request(branch="old-2543-branch"))
    with pytest.raises(LocalProtocolError):
        ClientTransaction.create(request("ACK"))
    with pytest.raises(LocalProtocolError):
        tx.receive(request(), 0.2)  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError):
        tx.receive(respond(request(), 200).replace(status=700), 0.3)


# ------------------------------------------------------------------ non-INVITE client


def test_timer_e_schedule_capped_at_t2_and_timer_f() -> None:
    tx = ClientTransaction.create(request("OPTIONS"), timers=CFG)
    tx.send_request(0.0)
    assert tx.state is TxState.TRYING
    tx.datagrams_to_send()
    expected, t, interval = [], 0.0, T1
    while t + interval < 64 * T1:
        t += interval
        expected.append(t)
        interval = min(2 * interval, T2)
    assert expected[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert run_until_quiet(tx, 0.0) == expected
    assert drain(tx)[0] == TransactionTimeout(tx.key, Timer.F)
    assert tx.state is TxState.TERMINATED


def test_timer_e_in_proceeding_is_t2() -> None:
    req = request("REGISTER")
    tx = ClientTransaction.create(req, timers=CFG)
    tx.send_request(0.0)
    tx.datagrams_to_send()
    tx.handle_timer(0.5)  # E fires, next after 1.0 s at 1.5
    tx.receive(respond(req, 100, None), 0.6)
    assert tx.state is TxState.PROCEEDING
    tx.datagrams_to_send()
    sent = run_until_quiet(tx, 0.6)
    # §17.1.2.2: the pending E fires at 1.5, then every T2 until F at 64*T1.
    expected = [1.5]
    while expected[-1] + T2 < 64 * T1:
        expected.append(expected[-1] + T2)
    assert sent == expected
    assert TransactionTimeout(tx.key, Timer.F) in drain(tx)


@pytest.mark.parametrize(("reliable", "k"), [(False, T4), (True, 0.0)])
def test_non_invite_final_and_timer_k(reliable: bool, k: float) -> None:
    req = request("BYE", to_tag="x")
    tx = ClientTransaction.create(req, reliable=reliable, timers=CFG)
    tx.send_request(0.0)
    tx.receive(respond(req, 200), 1.0)
    if reliable:
        assert tx.state is TxState.TERMINATED
    else:
        assert tx.state is TxState.COMPLETED
        assert tx.get_timer() == pytest.approx(1.0 + k)
        tx.receive(respond(req, 200), 2.0)  # retransmission absorbed
        tx.handle_timer(1.0 + k)
        assert tx.state is TxState.TERMINATED
    statuses = [e.response.status for e in drain(tx) if isinstance(e, ResponseReceived)]
    assert statuses == [200]


def test_non_invite_transport_error_and_4xx_from_proceeding() -> None:
    req = request("MESSAGE")
    tx = ClientTransaction.create(req, timers=CFG)
    tx.send_request(0.0)
    tx.receive(respond(req, 100), 0.1)
    tx.receive(respond(req, 404), 0.2)
    assert tx.state is TxState.COMPLETED
    tx2 = ClientTransaction.create(req, timers=CFG)
    tx2.send_request(0.0)
    tx2.receive(respond(req, 100), 0.1)
    tx2.transport_error(0.2)
    tx3 = ClientTransaction.create(req, timers=CFG)
    tx3.send_request(0.0)
    tx3.receive(respond(req, 202), 0.1)
    tx3.transport_error(0.1)  # in Completed: nothing was sent, absorbed
    assert tx3.state is TxState.COMPLETED
    assert tx2.state is TxState.TERMINATED


# ------------------------------------------------------------------ INVITE server


def new_server(req: Request, reliable: bool = False, auto_trying: bool = True) -> ServerTransaction:
    tx = ServerTransaction.create(
        req, server_key(req), reliable=reliable, timers=CFG, auto_trying=auto_trying
    )
    tx.receive(req, 0.0)
    return tx


def test_invite_server_trying_and_retransmissions() -> None:
    req = request()
    tx = new_server(req)
    assert isinstance(tx, InviteServerTransaction) and tx.state is TxState.PROCEEDING
    (trying,) = tx.datagrams_to_send()
    assert trying.startswith(b"SIP/2.0 100 Trying")
    assert drain(tx) == [RequestReceived(req, tx.key)]
    tx.receive(req, 0.3)  # retransmitted INVITE: resend the last provisional (§17.2.1)
    assert tx.datagrams_to_send() == [trying]
    tx.send_response(respond(req, 180), 0.4)
    (ringing,) = tx.datagrams_to_send()
    tx.receive(req, 0.5)
    assert tx.datagrams_to_send() == [ringing]
    assert drain(tx) == []


def test_invite_server_timer_g_h_schedule() -> None:
    req = request()
    tx = new_server(req)
    tx.datagrams_to_send()
    tx.send_response(respond(req, 486), 1.0)
    assert tx.state is TxState.COMPLETED
    (final,) = tx.datagrams_to_send()
    # §17.2.1: G = T1, doubling capped at T2; H = 64*T1 gives up waiting for the ACK.
    expected, t, interval = [], 1.0, T1
    while t + interval < 1.0 + 64 * T1:
        t += interval
        expected.append(t)
        interval = min(2 * interval, T2)
    sent = run_until_quiet(tx, 1.0)
    assert sent == expected
    assert drain(tx)[1:] == [TransactionTimeout(tx.key, Timer.H), TransactionTerminated(tx.key)]
    assert final.startswith(b"SIP/2.0 486")


@pytest.mark.parametrize(("reliable", "i"), [(False, T4), (True, 0.0)])
def test_invite_server_ack_confirmed_timer_i(reliable: bool, i: float) -> None:
    req = request()
    tx = new_server(req, reliable=reliable)
    resp = respond(req, 404, tag="uas")
    tx.send_response(resp, 1.0)
    if reliable:
        assert tx.get_timer() == pytest.approx(1.0 + 64 * T1)  # only H, no G on TCP
    tx.receive(req, 1.1)  # retransmitted INVITE in Completed: resend the final response
    assert tx.datagrams_to_send()[-1] == bytes(resp)
    ack = make_ack(req, resp)
    tx.receive(ack, 2.0)
    if reliable:
        assert tx.state is TxState.TERMINATED
        return
    assert tx.state is TxState.CONFIRMED
    assert tx.get_timer() == pytest.approx(2.0 + i)
    tx.receive(ack, 2.5)  # absorbed
    assert tx.datagrams_to_send() == []
    tx.handle_timer(2.0 + i)
    assert tx.state is TxState.TERMINATED
    assert not any(isinstance(e, AckReceived) for e in drain(tx))


def test_invite_server_2xx_accepted_timer_l() -> None:
    req = request()
    tx = new_server(req, auto_trying=False)
    assert tx.datagrams_to_send() == []
    ok = respond(req, 200, "uas")
    tx.send_response(ok, 1.0)
    assert tx.state is TxState.ACCEPTED
    assert tx.get_timer() == pytest.approx(1.0 + 64 * T1)  # Timer L
    tx.datagrams_to_send()
    tx.receive(req, 1.5)  # INVITE retransmission absorbed: the TU retransmits the 2xx
    assert tx.datagrams_to_send() == []
    tx.send_response(ok, 1.5)  # the TU's 2xx retransmission (§13.3.1.4) passes through
    assert tx.datagrams_to_send() == [bytes(ok)]
    ack = request("ACK", branch="z9hG4bKother", to_tag="uas")
    ack = ack.replace(headers=ack.headers.set("Via", str(req.top_via)))
    tx.receive(ack, 2.0)
    assert drain(tx)[-1] == AckReceived(ack, tx.key)  # RFC 6026 §8.7
    with pytest.raises(LocalProtocolError):
        tx.send_response(respond(req, 486), 2.1)
    with pytest.raises(LocalProtocolError):
        tx.send_response(respond(req, 180), 2.1)
    tx.handle_timer(1.0 + 64 * T1)
    assert tx.state is TxState.TERMINATED
    with pytest.raises(LocalProtocolError):
        tx.send_response(ok, 40.0)


def test_invite_server_transport_errors() -> None:
    req = request()
    tx = new_server(req)
    tx.transport_error(0.1)
    assert tx.state is TxState.TERMINATED
    tx2 = new_server(req)
    tx2.send_response(respond(req, 500), 0.2)
    tx2.transport_error(0.3)
    assert TransportFailed(tx2.key) in drain(tx2)


def test_server_response_validation() -> None:
    req = request()
    tx = new_server(req)
    with pytest.raises(LocalProtocolError):
        tx.send_response(respond(request("OPTIONS"), 200), 0.1)
    with pytest.raises(LocalProtocolError):
        tx.send_response(respond(req, 200).replace(status=99), 0.1)
    with pytest.raises(LocalProtocolError):
        ServerTransaction.create(request("ACK"), server_key(request("ACK")))


# ------------------------------------------------------------------ non-INVITE server


@pytest.mark.parametrize(("reliable", "j"), [(False, 64 * T1), (True, 0.0)])
def test_non_invite_server(reliable: bool, j: float) -> None:
    req = request("OPTIONS")
    tx = new_server(req, reliable=reliable)
    assert isinstance(tx, NonInviteServerTransaction) and tx.state is TxState.TRYING
    assert tx.datagrams_to_send() == []  # no automatic 100 for non-INVITE
    tx.receive(req, 0.1)  # absorbed in Trying: nothing to resend yet
    assert tx.datagrams_to_send() == [] and drain(tx) == [RequestReceived(req, tx.key)]
    tx.send_response(respond(req, 100, None), 0.2)
    assert tx.state is TxState.PROCEEDING
    (p,) = tx.datagrams_to_send()
    tx.receive(req, 0.3)
    assert tx.datagrams_to_send() == [p]
    tx.send_response(respond(req, 183), 0.35)
    tx.send_response(respond(req, 200), 0.4)
    if reliable:
        assert tx.state is TxState.TERMINATED
        return
    assert tx.get_timer() == pytest.approx(0.4 + j)
    (final,) = tx.datagrams_to_send()[-1:]
    tx.receive(req, 5.0)
    assert tx.datagrams_to_send() == [final]
    with pytest.raises(LocalProtocolError):
        tx.send_response(respond(req, 404), 5.0)
    tx.handle_timer(0.4 + j)
    assert tx.state is TxState.TERMINATED


def test_non_invite_server_direct_final_and_errors() -> None:
    req = request("REGISTER")
    tx = new_server(req)
    tx.send_response(respond(req, 401), 0.1)
    assert tx.state is TxState.COMPLETED
    tx.transport_error(0.2)
    assert tx.state is TxState.TERMINATED
    tx2 = new_server(req)
    tx2.send_response(respond(req, 100), 0.1)
    tx2.transport_error(0.2)
    assert tx2.state is TxState.TERMINATED


def test_invite_2xx_after_provisional() -> None:
    req = request()
    tx = ClientTransaction.create(req, timers=CFG)
    tx.send_request(0.0)
    tx.receive(respond(req, 180), 0.5)
    tx.receive(respond(req, 200), 1.0)
    assert tx.state is TxState.ACCEPTED
    assert tx.get_timer() == pytest.approx(1.0 + 64 * T1)


@pytest.mark.parametrize(
    ("provisionals", "final", "state"),
    [((100, 180), 200, TxState.COMPLETED), ((), 404, TxState.COMPLETED), ((), None, None)],
)
def test_non_invite_client_paths(
    provisionals: tuple[int, ...], final: int | None, state: TxState | None
) -> None:
    req = request("SUBSCRIBE")
    tx = ClientTransaction.create(req, timers=CFG)
    tx.send_request(0.0)
    for i, code in enumerate(provisionals):
        tx.receive(respond(req, code), 0.1 * (i + 1))
        assert tx.state is TxState.PROCEEDING
    if final is None:  # transport error while Trying
        tx.transport_error(0.5)
        assert drain(tx)[-2:] == [TransportFailed(tx.key), TransactionTerminated(tx.key)]
        return
    tx.receive(respond(req, final), 0.5)
    assert tx.state is state


@pytest.mark.parametrize("via_proceeding", [False, True])
@pytest.mark.parametrize("status", [200, 480])
def test_non_invite_server_finals(via_proceeding: bool, status: int) -> None:
    req = request("NOTIFY")
    tx = new_server(req)
    if via_proceeding:
        tx.send_response(respond(req, 100), 0.1)
    tx.send_response(respond(req, status), 0.2)
    assert tx.state is TxState.COMPLETED
    assert tx.get_timer() == pytest.approx(0.2 + 64 * T1)  # Timer J on UDP


# ------------------------------------------------------------------ builders


def test_make_cancel_matches_invite() -> None:
    req = request()
    cancel = make_cancel(req, reason='SIP;cause=200;text="Call completed elsewhere"')
    again = parse_message(bytes(cancel))
    assert isinstance(again, Request) and again.method == "CANCEL"
    assert str(again.uri) == str(req.uri) and again.call_id == req.call_id
    assert again.headers.get("To") == req.headers.get("To")
    assert again.headers.get("From") == req.headers.get("From")
    assert (again.cseq.seq, again.cseq.method) == (req.cseq.seq, "CANCEL")
    assert again.top_via.branch == req.top_via.branch and len(again.vias) == 1
    assert again.headers.get_lines("Route") == req.headers.get_lines("Route")
    with pytest.raises(LocalProtocolError):
        make_cancel(request("ACK"))


def test_new_branch_has_magic_cookie_and_uses_injected_source() -> None:
    assert new_branch(lambda n: bytes(n)) == "z9hG4bK" + "00" * 12
    assert new_branch() != new_branch()


# ------------------------------------------------------------------ layer


def test_layer_matches_responses_by_branch_and_method() -> None:
    layer = TransactionLayer(timers=CFG)
    inv = request()
    tx = layer.send_request(inv, 0.0, peer=("192.0.2.1", 5060))
    (t,) = layer.datagrams_to_send()
    assert t.peer == ("192.0.2.1", 5060) and t.key == tx.key and t.data.startswith(b"INVITE")
    # A CANCEL's response shares the branch but not the method (§17.1.3): it must not match.
    cancel = make_cancel(inv)
    ctx = layer.send_request(cancel, 0.1)
    layer.receive(respond(cancel, 200), 0.2)
    ev = layer.next_event()
    assert isinstance(ev, ResponseReceived) and ev.key == ctx.key
    assert tx.state is TxState.CALLING
    layer.receive(respond(inv, 487), 0.3)
    ev = layer.next_event()
    assert isinstance(ev, ResponseReceived) and ev.response.status == 487
    acks = [x for x in layer.datagrams_to_send() if isinstance(x.message, Request)]
    assert [x.message.method for x in acks if isinstance(x.message, Request)][-1] == "ACK"
    other = respond(request(branch="z9hG4bKnope"), 200)
    layer.receive(other, 0.4, peer="p")
    assert layer.next_event() == StrayResponse(other, "p")
    with pytest.raises(LocalProtocolError):
        layer.send_request(inv, 0.5)


def test_layer_absorbs_server_retransmissions_and_routes_acks() -> None:
    layer = TransactionLayer(timers=CFG)
    inv = request()
    layer.receive(inv, 0.0, peer="a")
    ev = layer.next_event()
    assert isinstance(ev, RequestReceived) and ev.peer == "a"
    layer.receive(inv, 0.5, peer="a")
    assert layer.next_event() is None  # absorbed, 100 Trying resent
    assert len(layer.datagrams_to_send()) == 2
    resp = respond(inv, 603)
    layer.send_response(ev.key, resp, 1.0)
    layer.receive(make_ack(inv, resp), 1.1, peer="a")
    assert layer.next_event() is None  # ACK for non-2xx is the transaction's
    assert layer.servers[ev.key].state is TxState.CONFIRMED
    # An ACK for a 2xx has its own branch: no server transaction, goes to the TU.
    ack2 = request("ACK", branch="z9hG4bKack2", to_tag="x")
    layer.receive(ack2, 1.2, peer="a")
    assert layer.next_event() == AckReceived(ack2, None, "a")
    # CANCEL finds its INVITE transaction (§9.2).
    cancel = make_cancel(inv)
    assert layer.cancel_target(cancel) is layer.servers[ev.key]
    layer.handle_timer(1.1 + T4)
    assert isinstance(layer.next_event(), TransactionTerminated)
    assert len(layer) == 0
    with pytest.raises(LocalProtocolError):
        layer.send_response(ev.key, resp, 10.0)


def test_layer_rfc2543_fallback() -> None:
    """§17.2.3: a branch without z9hG4bK is matched on R-URI, From tag, Call-ID, CSeq, Via."""
    layer = TransactionLayer(timers=CFG)
    inv = request(branch="1234")
    layer.receive(inv, 0.0)
    ev = layer.next_event()
    assert isinstance(ev, RequestReceived)
    layer.receive(inv, 0.1)
    assert layer.next_event() is None
    other = request(branch="1234", cseq=2)  # same Via, new CSeq: a new transaction
    layer.receive(other, 0.2)
    ev2 = layer.next_event()
    assert isinstance(ev2, RequestReceived) and ev2.key != ev.key
    resp = respond(inv, 486, "z")
    layer.send_response(ev.key, resp, 0.3)
    layer.receive(make_ack(inv, resp), 0.4)
    assert layer.servers[ev.key].state is TxState.CONFIRMED


def test_layer_multiplexes_timers() -> None:
    layer = TransactionLayer(timers=CFG)
    layer.send_request(request("OPTIONS", branch="z9hG4bK1"), 0.0)
    layer.send_request(request("OPTIONS", branch="z9hG4bK2"), 0.2)
    layer.datagrams_to_send()
    assert layer.get_timer() == pytest.approx(T1)
    sends: list[tuple[float, str]] = []
    now = 0.0
    while (d := layer.get_timer()) is not None:
        now = d
        layer.handle_timer(now)
        for t in layer.datagrams_to_send():
            assert t.key is not None
            sends.append((now, t.key.branch))
    first = [s for s, b in sends if b == "z9hG4bK1"]
    second = [s for s, b in sends if b == "z9hG4bK2"]
    assert second == pytest.approx([s + 0.2 for s in first])
    timeouts = []
    while (ev := layer.next_event()) is not None:
        if isinstance(ev, TransactionTimeout):
            timeouts.append(ev.key.branch)
    assert timeouts == ["z9hG4bK1", "z9hG4bK2"] and len(layer) == 0
    layer.transport_error(TransactionKey("x", "OPTIONS"), 1.0)  # unknown key: no-op
    layer.send_stateless(respond(request(), 200), "p")
    assert layer.datagrams_to_send()[0].key is None


# ------------------------------------------------------------------ fuzz


def _pool() -> list[Request | Response]:
    inv, opt = request(), request("OPTIONS", branch="z9hG4bKo")
    old = request(branch="2543x")
    msgs: list[Request | Response] = [inv, opt, old, make_cancel(inv), request("ACK")]
    for req in (inv, opt, old):
        for status in (100, 180, 200, 202, 302, 486, 503, 699):
            msgs.append(respond(req, status))
        msgs.append(make_ack(req, respond(req, 486)))
    broken = parse_message(
        b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 OPTIONS\r\n\r\n", strict=False
    )
    msgs.append(broken)
    return msgs


POOL = _pool()
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("recv"), st.integers(0, len(POOL) - 1), st.booleans()),
        st.tuples(st.just("send"), st.integers(0, len(POOL) - 1), st.booleans()),
        st.tuples(st.just("respond"), st.integers(0, len(POOL) - 1), st.booleans()),
        st.tuples(st.just("timer"), st.integers(0, 40), st.booleans()),
        st.tuples(st.just("error"), st.integers(0, len(POOL) - 1), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_fuzz_layer_only_raises_callward_errors(ops: list[tuple[str, int, bool]]) -> None:
    layer = TransactionLayer(timers=CFG)
    now = 0.0
    keys: list[TransactionKey] = []
    for op, n, flag in ops:
        try:
            if op == "timer":
                now += n * 0.5
                layer.handle_timer(now)
            elif op == "recv":
                layer.receive(POOL[n], now, reliable=flag)
            elif op == "send":
                msg = POOL[n]
                if isinstance(msg, Request):
                    layer.send_request(msg, now, reliable=flag)
            elif op == "respond" and keys:
                msg = POOL[n]
                if isinstance(msg, Response):
                    layer.send_response(keys[n % len(keys)], msg, now)
            elif op == "error" and keys:
                layer.transport_error(keys[n % len(keys)], now)
        except CallwardError:
            pass
        while (ev := layer.next_event()) is not None:
            if isinstance(ev, RequestReceived):
                keys.append(ev.key)
        layer.datagrams_to_send()
        t = layer.get_timer()
        assert t is None or t >= 0


_SEEDS = [bytes(m) for m in _pool()]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(_SEEDS) - 1),
            st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=4)), max_size=4),
            st.floats(0, 40),
        ),
        max_size=12,
    )
)
def test_fuzz_layer_on_mutated_wire_messages(
    items: list[tuple[int, list[tuple[int, bytes]], float]],
) -> None:
    """Mutated real messages (bytes spliced in): whatever still parses is fed to the layer,
    interleaved with timer fires; only callward errors may escape."""
    layer = TransactionLayer(timers=CFG)
    now = 0.0
    for seed, edits, dt in items:
        data = bytearray(_SEEDS[seed])
        for pos, chunk in edits:
            at = pos % (len(data) + 1)
            data[at : at + len(chunk)] = chunk
        try:
            msg = parse_message(bytes(data), strict=False)
            layer.receive(msg, now, reliable=dt > 20)
            while (ev := layer.next_event()) is not None:
                if isinstance(ev, RequestReceived) and ev.request.method != "ACK":
                    layer.send_response(ev.key, make_response(ev.request, 486, to_tag="f"), now)
        except CallwardError:
            pass
        now += dt
        layer.handle_timer(now)
        layer.datagrams_to_send()


# ------------------------------------------------------------------ table coverage (keep last)


def test_zz_every_table_transition_was_exercised() -> None:
    tables = {
        "InviteClientTransaction": INVITE_CLIENT_TABLE,
        "NonInviteClientTransaction": NON_INVITE_CLIENT_TABLE,
        "InviteServerTransaction": INVITE_SERVER_TABLE,
        "NonInviteServerTransaction": NON_INVITE_SERVER_TABLE,
    }
    want = {(name, s, i) for name, table in tables.items() for s, row in table.items() for i in row}
    missing = sorted(str(m) for m in want - SEEN)
    assert not missing, "\n".join(missing)
