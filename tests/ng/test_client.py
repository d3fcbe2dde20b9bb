"""The sans-IO ng client: cookies, retransmission of the same bytes, timeouts, matching
replies only from the relay's address. No sockets."""

from __future__ import annotations

import pytest

from callward.errors import LocalProtocolError
from callward.ng import NgClient, NgCommand, NgReply, NgRequest, NgTimeout, parse_message
from callward.ng.protocol import serialize_message

RELAY = ("127.0.0.1", 2223)


def test_request_reply_by_cookie() -> None:
    c = NgClient(RELAY, cookie_prefix="e1", timeout_s=1.0, attempts=3)
    k1 = c.send(NgRequest(NgCommand.PING), 0.0)
    k2 = c.send(NgRequest(NgCommand.LIST), 0.0)
    out = c.datagrams_to_send()
    assert [parse_message(d).cookie for d, _ in out] == [k1, k2] and k1 != k2
    assert all(addr == RELAY for _, addr in out)
    # replies out of order, one from a stranger, one garbage
    c.receive_datagram(serialize_message(k2, {"result": "ok", "calls": []}), RELAY, 0.2)
    c.receive_datagram(serialize_message(k1, {"result": "pong"}), ("127.0.0.1", 9), 0.2)
    c.receive_datagram(b"\x00garbage", RELAY, 0.2)
    c.receive_datagram(serialize_message(k1, {"result": "pong"}), RELAY, 0.3)
    ev1, ev2 = c.next_event(), c.next_event()
    assert isinstance(ev1, NgReply) and ev1.cookie == k2 and ev1.ok
    assert isinstance(ev2, NgReply) and ev2.cookie == k1 and ev2.rtt_s == pytest.approx(0.3)
    assert c.next_event() is None and c.stray == 2 and c.pending == 0
    # a late duplicate reply is a stray, not a second event
    c.receive_datagram(serialize_message(k1, {"result": "pong"}), RELAY, 0.4)
    assert c.next_event() is None and c.stray == 3
    assert c.get_timer() is None


def test_retransmits_same_bytes_then_times_out() -> None:
    c = NgClient(RELAY, cookie_prefix="e1", timeout_s=0.5, attempts=3)
    c.send(NgRequest(NgCommand.PING), 10.0)
    first = c.datagrams_to_send()
    assert c.get_timer() == 10.5
    c.handle_timer(10.4)
    assert c.datagrams_to_send() == []
    c.handle_timer(10.5)
    assert c.datagrams_to_send() == first  # same cookie: the relay answers from its cache
    assert c.get_timer() == 11.0
    c.handle_timer(11.0)
    assert c.datagrams_to_send() == first
    c.handle_timer(11.5)
    assert c.datagrams_to_send() == []
    ev = c.next_event()
    assert isinstance(ev, NgTimeout) and ev.request.command is NgCommand.PING
    assert c.retransmissions == 2 and c.pending == 0 and c.get_timer() is None


def test_error_reply_and_limits() -> None:
    c = NgClient(RELAY, cookie_prefix="e1", max_pending=1)
    k = c.send(NgRequest(NgCommand.QUERY, call_id="x"), 0)
    with pytest.raises(LocalProtocolError):
        c.send(NgRequest(NgCommand.PING), 0)
    c.receive_datagram(
        serialize_message(k, {"result": "error", "error-reason": "Unknown call-id"}), RELAY, 0
    )
    ev = c.next_event()
    assert isinstance(ev, NgReply) and not ev.ok and ev.error == "Unknown call-id"
    with pytest.raises(LocalProtocolError):
        NgClient(RELAY, cookie_prefix="has space")
