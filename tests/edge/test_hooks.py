"""The edge core's hook points (callward.edge.hooks) with small policies written here, the way
other packages plug in: admission, an extra authentication scheme, a media anchor that asks
its own questions, and the built-in overload guard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from callward.edge.hooks import ACCEPT, Authenticated, AuthRefused, Drop, Reject
from callward.edge.overload import OverloadLimits
from callward.edge.pending import Query, ask
from callward.events import CallEnded
from callward.sip.peer import Peer

UAS = Peer("udp", "127.0.0.1", 5080)
ROUTE = (("bob", "sip:bob@127.0.0.1:5080"),)


class BlockHost:
    def __init__(self, host: str, drop: bool = False) -> None:
        self.host, self.drop = host, drop
        self.seen: list[tuple[str, bool]] = []

    def admit(self, request, peer, *, in_dialog, now):
        self.seen.append((request.method, in_dialog))
        if peer.host != self.host:
            return ACCEPT
        return Drop("blocked") if self.drop else Reject(403, "Blocked", rule="blocked")


def test_admission_reject_and_drop(h) -> None:
    core, _, _ = h.make_core(routes=ROUTE)
    net = h.Net(core)
    policy = BlockHost("127.0.0.1")
    core.hooks.admission.append(policy)
    out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id="adm1"))
    (r,) = h.responses(out)
    assert r.status == 403 and r.reason == "Blocked" and not h.requests(out)
    ack = h.build("ACK", "sip:bob@callward.local", call_id="adm1", to_tag=r.to.tag)
    assert net.send(ack) == []  # the ACK of a rejection goes nowhere
    policy.drop = True
    assert net.send(h.build("OPTIONS", "sip:bob@callward.local", call_id="adm2")) == []
    assert ("INVITE", False) in policy.seen and ("ACK", True) in policy.seen
    assert core.metrics.rejected.labels("blocked")._value.get() == 3


@dataclass(frozen=True, slots=True)
class TokenCheck(Query):
    timeout: ClassVar[float] = 1.0
    token: str


class FakeBearer:
    """An RFC 8898-shaped scheme whose token check is a question answered asynchronously."""

    scheme = "Bearer"

    def has_credentials(self, request, *, proxy):
        header = "Proxy-Authorization" if proxy else "Authorization"
        return any(v.startswith("Bearer ") for v in request.headers.get_lines(header))

    def challenges(self, request, now, *, proxy, stale=False):
        header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        return [(header, 'Bearer realm="callward.local"')]

    def verify(self, request, now, *, proxy):
        header = "Proxy-Authorization" if proxy else "Authorization"
        token = request.headers.get(header).removeprefix("Bearer ")
        user = yield from ask(TokenCheck(token), (str, type(None)))
        return Authenticated(user, scheme="Bearer") if user else AuthRefused(403, "Bad Token")


def test_extra_auth_scheme_challenges_and_verifies(h) -> None:
    core, _, _ = h.make_core(auth=True, routes=ROUTE)
    core.hooks.auth_schemes.append(FakeBearer())
    net = h.Net(core)
    frm = "<sip:alice@callward.local>"
    out = net.send(h.build("INVITE", "sip:bob@callward.local", from_=frm, call_id="b1"))
    (r407,) = [r for r in h.responses(out) if r.status == 407]
    schemes = [v.split()[0] for v in r407.headers.get_lines("Proxy-Authenticate")]
    assert schemes == ["Digest", "Digest", "Bearer"]  # MD5 + SHA-256 digest, then Bearer
    bearer = (("Proxy-Authorization", "Bearer tok-1"),)
    out = net.send(
        h.build("INVITE", "sip:bob@callward.local", from_=frm, call_id="b1", cseq=2, extra=bearer)
    )
    assert not h.requests(out, "INVITE")  # waiting for the token check
    (pending,) = net.waiting
    assert pending.query == TokenCheck("tok-1")
    out = net.answer(pending, "alice")
    ((_, inv),) = h.requests(out, "INVITE")
    assert "Proxy-Authorization" not in inv.headers
    assert inv.headers.get("P-Asserted-Identity") == "<sip:alice@callward.local>"
    # a token for someone else than the From user: 403; an unanswered check: 503
    out = net.send(
        h.build("INVITE", "sip:bob@callward.local", from_=frm, call_id="b2", extra=bearer)
    )
    out = net.answer(net.waiting[0], "mallory")
    assert [r.status for r in h.responses(out) if r.status >= 200] == [403]
    out = net.send(
        h.build("INVITE", "sip:bob@callward.local", from_=frm, call_id="b3", extra=bearer)
    )
    out = net.tick(1.5)
    finals = [r for r in h.responses(out) if r.status >= 200 and r.call_id == "b3"]
    assert finals[0].status == 503 and finals[0].headers.get("Retry-After")


@dataclass(frozen=True, slots=True)
class Offer(Query):
    call_id: str
    sdp: bytes


class FakeRelay:
    def __init__(self) -> None:
        self.gone: list[str] = []

    def request(self, request, now):
        if not request.body:
            return request
        new = yield from ask(Offer(request.call_id, request.body), bytes)
        return request.replace(body=new)

    def response(self, response, request, now):
        if not response.body:
            return response
        new = yield from ask(Offer(request.call_id, response.body), bytes)
        return response.replace(body=new)

    def ended(self, call_id, now):
        self.gone.append(call_id)
        return
        yield


def test_media_anchor_rewrites_both_ways_and_sees_the_end(h) -> None:
    core, _, _ = h.make_core(routes=ROUTE)
    relay = FakeRelay()
    core.hooks.media = relay
    net = h.Net(core)
    sdp = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n"
    out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id="m1", body=sdp))
    assert not h.requests(out, "INVITE")
    (offer,) = net.waiting
    out = net.answer(offer, sdp.replace(b"10.0.0.1", b"192.0.2.9"))
    ((_, inv),) = h.requests(out, "INVITE")
    assert b"192.0.2.9" in inv.body and b"10.0.0.1" not in inv.body
    out = net.send(h.reply(inv, 200, body=sdp.replace(b"10.0.0.1", b"10.0.0.2")), UAS)
    assert h.responses(out) == []  # held until the relay answers
    (answer,) = net.waiting
    out = net.answer(answer, b"v=0\r\nc=IN IP4 192.0.2.9\r\n")
    (ok,) = h.responses(out)
    assert ok.status == 200 and b"192.0.2.9" in ok.body
    bye = h.build("BYE", "sip:bob@127.0.0.1:5080", call_id="m1", cseq=2, to_tag="tb")
    assert len(h.requests(net.send(bye), "BYE")) == 1
    assert relay.gone == ["m1"]
    assert [e.reason for e in net.events if isinstance(e, CallEnded)] == ["bye"]


def test_media_anchor_keeps_response_order_when_it_answers_late(h) -> None:
    """A 183 with SDP still in the anchor when the 200 arrives: the 200 waits its turn (its
    SDP goes to the anchor only after the 183's), so the caller sees 183 then 200, each
    rewritten, and a 2xx retransmission arriving meanwhile is not sent ahead of them."""
    core, _, _ = h.make_core(routes=ROUTE)
    core.hooks.media = FakeRelay()
    net = h.Net(core)
    sdp = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n"
    net.send(h.build("INVITE", "sip:bob@callward.local", call_id="o1", body=sdp))
    ((_, inv),) = h.requests(net.answer(net.waiting[0], sdp), "INVITE")
    early = sdp.replace(b"10.0.0.1", b"10.0.0.2")
    assert [r.status for r in h.responses(net.send(h.reply(inv, 183, body=early), UAS))] == []
    (q183,) = net.waiting
    assert q183.query.sdp == early
    out = net.send(h.reply(inv, 200, body=early), UAS)
    out += net.send(h.reply(inv, 200, body=early), UAS)  # 2xx retransmission
    assert h.responses(out) == [] and net.waiting == [q183]  # the 200 waits for the 183
    out = net.answer(q183, b"v=0\r\nc=IN IP4 192.0.2.1\r\n")
    assert [(r.status, r.body) for r in h.responses(out)] == [
        (183, b"v=0\r\nc=IN IP4 192.0.2.1\r\n")
    ]
    (q200,) = net.waiting  # now the 200 reaches the anchor
    out = net.answer(q200, b"v=0\r\nc=IN IP4 192.0.2.2\r\n")
    statuses = [r.status for r in h.responses(out)]
    assert statuses[0] == 200 and h.responses(out)[0].body.endswith(b"192.0.2.2\r\n")
    assert statuses == [200, 200]  # then the retransmission, relayed as it came
    assert net.waiting == []


def test_overload_sheds_new_invites_but_not_dialogs_or_registers(h) -> None:
    core, _, _ = h.make_core(routes=ROUTE)
    core.overload.limits = OverloadLimits(capacity=2, register_headroom=2.0, retry_after=7)
    net = h.Net(core)
    invs = []
    for i in range(2):
        out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id=f"o{i}"))
        invs += [m for _, m in h.requests(out, "INVITE")]
    assert len(invs) == 2
    out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id="o2"))
    (r,) = h.responses(out)
    assert r.status == 503 and r.headers.get("Retry-After") == "7" and not h.requests(out)
    # in-dialog requests and REGISTER still pass
    bye = h.build("BYE", "sip:bob@127.0.0.1:5080", call_id="old", cseq=5, to_tag="tb")
    assert h.requests(net.send(bye), "BYE")
    reg = h.build(
        "REGISTER",
        "sip:callward.local",
        call_id="reg",
        to="<sip:alice@callward.local>",
        extra=(("Contact", "<sip:alice@127.0.0.1:5091>"), ("Expires", "300")),
    )
    assert [r.status for r in h.responses(net.send(reg))] == [200]
    # one call is answered: capacity frees up, new INVITEs pass again
    net.send(h.reply(invs[0], 200), UAS)
    out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id="o3"))
    assert h.requests(out, "INVITE")
    assert core.overload.shed == 1


def test_overload_lag_sheds_a_share_growing_with_the_lag(h) -> None:
    core, _, _ = h.make_core(routes=ROUTE, max_backlog=0.2)
    net = h.Net(core)

    def shed_share(lag: float, n: int = 40) -> float:
        core.overload.lag = lag
        shed = 0
        for i in range(n):
            net.now += 0.05  # 20 calls/s: well inside the security area's per-source buckets
            out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id=f"l{lag}-{i}"))
            shed += any(r.status == 503 for r in h.responses(out))
            # the callee answers at once: the calls in setup stay far below capacity
            for _, inv in h.requests(out, "INVITE"):
                net.send(h.reply(inv, 486), UAS)
        return shed / n

    assert shed_share(0.1) == 0.0
    assert 0.4 <= shed_share(0.3) <= 0.6  # half-way between the limit and twice it
    assert shed_share(0.5) == 1.0
    assert shed_share(0.0) == 0.0  # back to normal as soon as the backlog is gone
