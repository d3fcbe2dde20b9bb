"""The edge anchoring media through ng relays (edge/media_anchor.py), driven with no sockets:
the whole EdgeCore with its MediaAnchor hook, relay commands answered by real ng relay cores
(relay.ng_server.NgServer over a fake port pool), so the SDP each party receives is what the
relay really produced. Offer/answer, re-INVITE to the same relay, BYE/CANCEL/failure delete,
a dead relay failed over for a new call, per-tenant/route/NAT policy."""

from __future__ import annotations

import itertools
import random

import pytest

from callward.edge.media_anchor import (
    AnchorPolicy,
    RelayAnchor,
    RelayCommand,
    RelayPool,
    RelayTarget,
    behind_nat,
    parse_relay,
)
from callward.errors import ConfigError, NgError, StoreError
from callward.ng.protocol import error_reply, parse_request, request_body
from callward.relay.ng_server import NgServer, NgSettings
from callward.sdp import parse_sdp
from callward.sip import parse_message

ROUTE = (("bob", "sip:bob@127.0.0.1:5080"),)
CT = (("Content-Type", "application/sdp"),)
A_SDP = (b"v=0\r\no=alice 1 1 IN IP4 10.1.1.1\r\ns=-\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\n"
         b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")  # fmt: skip
B_SDP = A_SDP.replace(b"alice", b"bob").replace(b"10.1.1.1", b"10.2.2.2").replace(b"4000", b"6000")


class Pool:
    def __init__(self, base: int) -> None:
        self.ports = itertools.count(base, 2)
        self.bound: set[int] = set()

    def allocate(self) -> int:
        p = next(self.ports)
        self.bound.add(p)
        return p

    def release(self, port: int) -> None:
        self.bound.discard(port)


class Relays:
    """Real ng relay cores standing in for relay daemons; ``dead`` ones never answer."""

    def __init__(self, *keys: str) -> None:
        self.cores = {k: NgServer(NgSettings(address=f"203.0.113.{i + 1}"), Pool(30000 + 1000 * i))
                      for i, k in enumerate(keys)}  # fmt: skip
        self.dead: set[str] = set()
        self.log: list[tuple[str, str]] = []

    def answer(self, net, pending):  # type: ignore[no-untyped-def]
        q = pending.query
        assert isinstance(q, RelayCommand)
        self.log.append((q.relay.key, q.request.command.value))
        if q.relay.key in self.dead:
            return net.answer(pending, StoreError("no reply"))
        try:
            body = self.cores[q.relay.key].handle(parse_request(request_body(q.request)), net.now)
        except NgError as exc:
            body = error_reply(str(exc))
        return net.answer(pending, body)

    def drive(self, net, out):  # type: ignore[no-untyped-def]
        while net.waiting:
            out = out + self.answer(net, net.waiting[0])
        return out


def setup(h, *keys: str, policy: AnchorPolicy | None = None):  # type: ignore[no-untyped-def]
    core, _, _ = h.make_core(routes=ROUTE)
    relays = Relays(*keys)
    pool = RelayPool([parse_relay(k) for k in keys], rng=random.Random(1))
    anchor = RelayAnchor(pool, policy or AnchorPolicy())
    core.hooks.media = anchor
    return core, h.Net(core), relays, anchor


def test_call_is_anchored_and_topology_hidden_then_deleted(h) -> None:  # type: ignore[no-untyped-def]
    _core, net, relays, anchor = setup(h, "127.0.0.1:2223")
    out = relays.drive(net, net.send(h.build("INVITE", "sip:bob@callward.local", call_id="c1",
                                              body=A_SDP, extra=CT)))  # fmt: skip
    ((_, inv),) = h.requests(out, "INVITE")
    to_b = parse_sdp(inv.body)
    assert b"10.1.1.1" not in inv.body and to_b.connection.address == "203.0.113.1"  # type: ignore[union-attr]
    assert to_b.origin.username == "callward" and 30000 <= to_b.media[0].port < 31000
    out = relays.drive(net, net.send(h.reply(inv, 200, body=B_SDP, extra=CT), h.BOB))
    (ok,) = h.responses(out, 200)
    assert b"10.2.2.2" not in ok.body and parse_sdp(ok.body).media[0].port != to_b.media[0].port
    relay = relays.cores["127.0.0.1:2223"]
    assert relay.calls["c1"].answered and relay.cores["c1"].legs[1].config.remote == (
        "10.2.2.2",
        6000,
    )
    # the callee puts the caller on hold: a re-INVITE from B, to the same relay
    hold = B_SDP.replace(b"m=audio 6000 RTP/AVP 0\r\n", b"m=audio 6000 RTP/AVP 0\r\na=sendonly\r\n")
    out = relays.drive(net, net.send(h.build("INVITE", "sip:alice@127.0.0.1:5091", call_id="c1",
        from_="<sip:bob@callward.local>", from_tag="tb", to="<sip:alice@callward.local>", to_tag="fa",
        cseq=7, body=hold, extra=CT, src=h.BOB)))  # fmt: skip
    reinv = [m for _, m in h.requests(out, "INVITE")]
    assert reinv and b"10.2.2.2" not in reinv[0].body
    out = relays.drive(net, net.send(h.reply(reinv[0], 200, to_tag="fa", body=A_SDP.replace(
        b"RTP/AVP 0\r\n", b"RTP/AVP 0\r\na=recvonly\r\n"), extra=CT)))  # fmt: skip
    assert h.responses(out, 200) and relay.cores["c1"].on_hold
    bye = h.build("BYE", "sip:bob@127.0.0.1:5080", call_id="c1", cseq=2, to_tag="tb")
    relays.drive(net, net.send(bye))
    assert [c for _, c in relays.log] == ["offer", "answer", "offer", "answer", "delete"]
    assert "c1" not in relay.calls and not anchor.calls and not relay.ports.bound  # type: ignore[attr-defined]


def test_failure_response_deletes_and_dead_relay_fails_over(h) -> None:  # type: ignore[no-untyped-def]
    _core, net, relays, anchor = setup(h, "127.0.0.1:2223", "127.0.0.1:2224")
    relays.dead.add("127.0.0.1:2223")
    for n in range(4):
        out = relays.drive(net, net.send(h.build("INVITE", "sip:bob@callward.local", call_id=f"f{n}",
                                                  body=A_SDP, extra=CT)))  # fmt: skip
        ((_, inv),) = h.requests(out, "INVITE")
        out = relays.drive(net, net.send(h.reply(inv, 486), h.BOB))
        assert h.responses(out, 486)
    alive = relays.cores["127.0.0.1:2224"]
    assert not alive.calls and not alive.ports.bound  # type: ignore[attr-defined]  # deleted after 486
    assert not anchor.pool.up["127.0.0.1:2223"] and anchor.failovers <= 1
    # the dead relay saw at most the first offer; every call was anchored on the live one
    assert [c for k, c in relays.log if k == "127.0.0.1:2224"] == ["offer", "delete"] * 4
    # every relay dead: the INVITE is refused, not forwarded unanchored
    relays.dead.add("127.0.0.1:2224")
    anchor.pool.up["127.0.0.1:2224"] = True
    out = relays.drive(net, net.send(h.build("INVITE", "sip:bob@callward.local", call_id="x",
                                              body=A_SDP, extra=CT)))  # fmt: skip
    assert not h.requests(out, "INVITE") and [
        r.status for r in h.responses(out) if r.status >= 200
    ] == [503]


def test_cancel_deletes(h) -> None:  # type: ignore[no-untyped-def]
    _core, net, relays, anchor = setup(h, "127.0.0.1:2223")
    out = relays.drive(net, net.send(h.build("INVITE", "sip:bob@callward.local", call_id="k1",
                                              branch="z9hG4bKcan1", body=A_SDP, extra=CT)))  # fmt: skip
    ((_, inv),) = h.requests(out, "INVITE")
    net.send(h.reply(inv, 180), h.BOB)
    out = relays.drive(net, net.send(h.build("CANCEL", "sip:bob@callward.local", call_id="k1",
                                              branch="z9hG4bKcan1")))  # fmt: skip
    ((_, cancel),) = h.requests(out, "CANCEL")
    relays.drive(net, net.send(h.reply(cancel, 200), h.BOB) + net.send(h.reply(inv, 487), h.BOB))
    assert ("127.0.0.1:2223", "delete") in relays.log and not anchor.calls


def test_policy_modes_and_nat_detection(h) -> None:  # type: ignore[no-untyped-def]
    policy = AnchorPolicy(default="never", tenants=(("callward.local", "nat"),),
                          routes=(("bob", "always"), ("bobby", "never")))  # fmt: skip
    assert policy.mode_for("callward.local", "bob") == "always"
    assert policy.mode_for("callward.local", "bobby") == "never"
    assert policy.mode_for("callward.local", "carol") == "nat"
    assert policy.mode_for("other", "carol") == "never"
    with pytest.raises(ConfigError):
        AnchorPolicy(default="sometimes")
    nat = parse_message(h.build("INVITE", "sip:carol@x", body=A_SDP, extra=CT))
    assert behind_nat(nat)  # private c= address, request from 127.0.0.1
    public = parse_message(
        h.build("INVITE", "sip:carol@x", body=A_SDP.replace(b"10.1.1.1", b"127.0.0.1"), extra=CT)
    )
    assert not behind_nat(public)
    _core, net, relays, _anchor = setup(h, "127.0.0.1:2223", policy=AnchorPolicy(default="never"))
    out = relays.drive(net, net.send(h.build("INVITE", "sip:bob@callward.local", call_id="n1",
                                              body=A_SDP, extra=CT)))  # fmt: skip
    ((_, inv),) = h.requests(out, "INVITE")
    assert inv.body == A_SDP and not relays.log  # never: untouched


def test_parse_relay() -> None:
    assert parse_relay("10.0.0.1:2223 weight=5") == RelayTarget("10.0.0.1", 2223, 5)
    assert parse_relay("[::1]:2223").key == "[::1]:2223"
    for bad in ("nohost", "h:0", "h:1 weight=0", "h:1 w=3"):
        with pytest.raises(ConfigError):
            parse_relay(bad)
    pool = RelayPool([RelayTarget("a", 1, 1), RelayTarget("b", 1, 3)], rng=random.Random(7))
    picks = [pool.pick(f"c{i}").host for i in range(400)]
    assert 0.65 < picks.count("b") / 400 < 0.85  # weights 1:3
    pool.mark(RelayTarget("b", 1), False)
    assert {pool.pick(f"d{i}").host for i in range(20)} == {"a"}
    assert pool.relay_of("c1") is not None
