"""Never-crash: whatever bytes arrive, the edge core answers or drops, and never raises."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callward.edge.flow import Peer

SRC = Peer("udp", "127.0.0.1", 5091)

_SEEDS = [
    b"INVITE sip:bob@callward.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bK1"
    b";rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@callward.local>;tag=1\r\nTo: <sip:bob@"
    b"callward.local>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5091>"
    b"\r\nSession-Expires: 1800\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nContent-Length: 0\r\n\r\n",
    b"REGISTER sip:callward.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bK2\r\n"
    b"From: <sip:alice@callward.local>;tag=2\r\nTo: <sip:alice@callward.local>\r\nCall-ID: r1\r\n"
    b'CSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:5091>;expires=60;+sip.instance="<u>"'
    b';reg-id=1\r\nSupported: outbound\r\nAuthorization: Digest username="alice", realm='
    b'"callward.local", nonce="1.2", uri="sip:x", response="00"\r\nContent-Length: 0\r\n\r\n',
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcw0011223344556677.1\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>"
    b";tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    b"CANCEL sip:bob@callward.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bK1\r\n"
    b"From: <sip:alice@callward.local>;tag=1\r\nTo: <sip:bob@callward.local>\r\nCall-ID: c1\r\n"
    b"CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and data:
            del data[pos : pos + draw(st.integers(1, 20))]
        elif op == 1:
            data[pos:pos] = draw(st.binary(max_size=30))
        elif op == 2:
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b";",
                        b",",
                        b"<",
                        b">",
                        b"\r\n",
                        b":",
                        b'"',
                        b"sip:",
                        b"@",
                        b"%",
                        b" ",
                        b"Route: <sip:x>",
                    ]
                )
            )
        elif data:
            data[pos % len(data)] = draw(st.integers(0, 255))
    return bytes(data)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.one_of(mutated(), st.binary(max_size=400)))
def test_edge_core_never_raises(h, data: bytes) -> None:
    core, _, _ = h.make_core(auth=True, routes=(("bob", "sip:bob@127.0.0.1:5080"),))
    net = h.Net(core)
    core.receive_datagram(data, SRC, net.now)
    out = core.datagrams_to_send()
    net._drain()
    core.handle_timer(net.now + 100)
    for peer, payload in out:
        assert isinstance(payload, bytes) and peer.port > 0


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seq=st.lists(
        st.tuples(st.one_of(mutated(), st.sampled_from(_SEEDS)), st.sampled_from([0, 1, 2])),
        min_size=1,
        max_size=8,
    ),
    gaps=st.lists(st.floats(0, 40), min_size=1, max_size=8),
)
def test_edge_core_state_never_raises_over_sequences(h, seq, gaps) -> None:
    """Whole exchanges (valid and mutated, from several peers, with timers firing between
    them) keep the core consistent: no exception, and every transaction is reaped by its timers."""
    peers = [SRC, Peer("udp", "127.0.0.1", 5080), Peer("tcp", "127.0.0.1", 5099, conn="c3")]
    core, _, _ = h.make_core(
        auth=False, routes=(("bob", "sip:bob@127.0.0.1:5080"),), upstreams=("sip:127.0.0.1:7001",)
    )
    net = h.Net(core, now=1000.0)
    for (data, who), gap in zip(seq, gaps * 8, strict=False):
        net.send(data, peers[who])
        net.tick(gap)
    net.tick(10_000)  # timeouts, then the 32 s wait for stray retransmissions
    net.tick(20_000)
    # everything reaped: transactions, forking contexts, branches, questions
    assert core.active_transactions == 0
    assert not core.forking.contexts and not core.forking.branches and not len(core.tasks)
