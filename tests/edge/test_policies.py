"""Failover, session timers, topology hiding and caller identity in the sans-IO core."""

from __future__ import annotations

import phonenumbers

from callward.edge.flow import Peer
from callward.edge.identity import normalize_number
from callward.events import CallEnded

UP1 = Peer("udp", "127.0.0.1", 7101)
UP2 = Peer("udp", "127.0.0.1", 7102)
UAS = Peer("udp", "127.0.0.1", 5080)


def test_failover_on_timeout_and_503_with_blacklist(h) -> None:
    core, _, _ = h.make_core(
        upstreams=("sip:127.0.0.1:7101", "sip:127.0.0.1:7102", "sip:127.0.0.1:7103"),
        blacklist_seconds=60.0,
    )
    net = h.Net(core)
    out = net.send(h.build("INVITE", "sip:+15551234567@carrier.example", call_id="f1"))
    ((peer, inv1),) = h.requests(out, "INVITE")
    assert peer == UP1
    assert inv1.headers.values("Route")[0].startswith("<sip:127.0.0.1:7101")
    # UP1 is silent: Timer B (32 s) → next upstream
    out = net.tick(32.1)
    nxt = [(p, m) for p, m in h.requests(out, "INVITE") if p != UP1]
    ((peer, inv2),) = nxt
    assert peer == UP2
    # UP2 says 503 → third upstream (UP2 blacklisted too)
    out = net.send(h.reply(inv2, 503, to_tag="u2"), UP2)
    ((peer, inv3),) = [(p, m) for p, m in h.requests(out, "INVITE")]
    assert peer.port == 7103
    out = net.send(h.reply(inv3, 200, to_tag="u3"), peer)
    assert [r.status for r in h.responses(out)] == [200]
    # A new call within the blacklist period skips the two dead upstreams.
    out = net.send(h.build("INVITE", "sip:+15551234567@carrier.example", call_id="f2"))
    assert [p.port for p, _ in h.requests(out, "INVITE")] == [7103]
    # After it expires, the first one is tried again.
    net.now += 61
    out = net.send(h.build("INVITE", "sip:+15551234567@carrier.example", call_id="f3"))
    assert [p.port for p, _ in h.requests(out, "INVITE")] == [7101]
    assert core.metrics.failovers._value.get() == 2


def test_all_upstreams_fail_gives_single_5xx(h) -> None:
    core, _, _ = h.make_core(upstreams=("sip:127.0.0.1:7101", "sip:127.0.0.1:7102"))
    net = h.Net(core)
    out = net.send(h.build("MESSAGE", "sip:x@carrier.example", call_id="f4"))
    ((_, m1),) = h.requests(out, "MESSAGE")
    out = net.send(h.reply(m1, 503), UP1)
    ((_, m2),) = h.requests(out, "MESSAGE")
    out = net.send(h.reply(m2, 503), UP2)
    # §16.7.6: a lone 503 becomes 500 so the caller does not think *we* are overloaded
    assert [r.status for r in h.responses(out)] == [500]


def _invite_with_timer(h, net, se: str | None, call_id: str, supported: str = "timer"):
    extra = [("Supported", supported), ("Contact", "<sip:alice@127.0.0.1:5091>")]
    if se:
        extra.append(("Session-Expires", se))
    return net.send(
        h.build("INVITE", "sip:bob@callward.local", call_id=call_id, extra=tuple(extra))
    )


def test_session_timer_422_min_se(h) -> None:
    core, _, _ = h.make_core(routes=(("bob", "sip:bob@127.0.0.1:5080"),), min_se=120)
    net = h.Net(core)
    out = _invite_with_timer(h, net, "100", "st1")
    (r,) = [r for r in h.responses(out) if r.status >= 200]
    assert r.status == 422 and r.headers.get("Min-SE") == "120"
    out = _invite_with_timer(h, net, "300;refresher=uac", "st2")
    ((_, inv),) = h.requests(out, "INVITE")
    assert inv.headers.get("Min-SE") == "120" and inv.headers.get("Session-Expires").startswith(
        "300"
    )


def test_session_expiry_tears_down_and_refresh_extends(h) -> None:
    core, _, _ = h.make_core(routes=(("bob", "sip:bob@127.0.0.1:5080"),), session_expires=600)
    net = h.Net(core)
    out = _invite_with_timer(h, net, None, "st3")
    ((_, inv),) = h.requests(out, "INVITE")
    assert inv.headers.get("Session-Expires") == "600"  # inserted (RFC 4028 §8.1)
    # The UAS does not do timers; the UAC does: we make the UAC the refresher in the 2xx.
    out = net.send(h.reply(inv, 200, extra=(("Contact", "<sip:bob@127.0.0.1:5080>"),)), UAS)
    (ok,) = h.responses(out)
    assert ok.headers.get("Session-Expires") == "600;refresher=uac"
    assert "timer" in ok.headers.values("Require")
    # A re-INVITE refresh at 500 s extends the session.
    net.tick(500.0)
    reinv = h.build(
        "INVITE",
        "sip:bob@127.0.0.1:5080",
        call_id="st3",
        to_tag="tb",
        cseq=2,
        extra=(("Route", inv.headers.values("Record-Route")[0]), ("Session-Expires", "600")),
    )
    out = net.send(reinv)
    ((_, re2),) = h.requests(out, "INVITE")
    net.send(h.reply(re2, 200, extra=(("Session-Expires", "600;refresher=uac"),)), UAS)
    out = net.tick(200.0)  # t = 700 s: the first interval has passed but was refreshed
    assert not [e for e in net.events if isinstance(e, CallEnded)]
    out = net.tick(500.0)  # t = 1200 s: no refresh since 500 s → torn down
    ended = [e for e in net.events if isinstance(e, CallEnded)]
    assert [e.reason for e in ended] == ["session-expired"]
    byes = h.requests(out, "BYE")
    assert sorted({p.port for p, _ in byes}) == [5080, 5091]
    assert core.metrics.session_expired._value.get() == 1


def test_topology_hiding_toward_untrusted_peer(h) -> None:
    core, _, _ = h.make_core(
        routes=(("bob", "sip:bob@127.0.0.1:5080"),), untrusted=("127.0.0.1:5080",)
    )
    net = h.Net(core)
    internal = ("SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bKinternal",)
    out = net.send(
        h.build(
            "INVITE",
            "sip:bob@callward.local",
            call_id="th",
            vias=internal,
            extra=(
                ("Record-Route", "<sip:10.1.2.3;lr>"),
                ("Contact", '<sip:alice@10.9.8.7:5060>;+sip.instance="<urn:x>"'),
                ("Privacy", "id"),
                ("P-Asserted-Identity", "<sip:+15550001111@callward.local>"),
            ),
        )
    )
    ((_, inv),) = h.requests(out, "INVITE")
    text = bytes(inv).decode()
    assert "10.1.2.3" not in text and "P-Asserted-Identity" not in text
    assert len(inv.vias) == 1
    assert "10.9.8.7" not in text  # Contact sealed: the outside targets the edge
    (sealed,) = inv.contacts
    assert sealed.uri.host == "127.0.0.1" and sealed.uri.port == 5060
    assert sealed.param("+sip.instance") == '"<urn:x>"'
    out = net.send(h.reply(inv, 200), UAS)
    (ok,) = h.responses(out)
    assert [v.host for v in ok.vias] == ["127.0.0.1", "10.1.2.3"]  # restored for the inside
    assert ok.headers.values("Record-Route")[-1] == "<sip:10.1.2.3;lr>"
    # The outside's BYE to the sealed Contact reaches the real one; a forged token does not.
    bye = h.build(
        "BYE",
        str(sealed.uri),
        src=UAS,
        from_="<sip:bob@callward.local>",
        from_tag="tb",
        to="<sip:alice@callward.local>",
        to_tag="fa",
        call_id="th",
        cseq=9,
        extra=(("Route", inv.headers.values("Record-Route")[0]),),
    )
    out = net.send(bye, UAS)
    ((peer, fwd),) = h.requests(out, "BYE")
    # the hidden internal route set is put back and the Contact unsealed: via 10.1.2.3
    assert str(fwd.uri) == "sip:alice@10.9.8.7:5060"
    assert (peer.host, peer.port) == ("10.1.2.3", 5060)
    assert fwd.headers.values("Route") == ["<sip:10.1.2.3;lr>"]
    forged = bye.replace(sealed.uri.user.encode(), b"c" + b"A" * 40)
    out = net.send(forged.replace(b"CSeq: 9", b"CSeq: 10").replace(b"z9hG4bKt", b"z9hG4bKf"), UAS)
    assert not [m for _, m in h.requests(out, "BYE") if "10.9.8.7" in str(m.uri)]


def test_identity_asserted_for_authenticated_caller(h) -> None:
    import hashlib

    core, _, subs = h.make_core(
        auth=True, routes=(("bob", "sip:bob@127.0.0.1:5080"),), default_region="FR"
    )
    from callward.edge.subscribers import Subscriber

    subs.put(Subscriber.from_password("0612345678", "callward.local", "pw"))
    net = h.Net(core)
    frm = "<sip:0612345678@callward.local>"
    first = net.send(h.build("INVITE", "sip:bob@callward.local", from_=frm, call_id="id1"))
    (r407,) = [r for r in h.responses(first) if r.status == 407]
    chal = r407.headers.get_lines("Proxy-Authenticate")[0]  # MD5
    nonce = chal.split('nonce="')[1].split('"')[0]

    def H(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = H("0612345678:callward.local:pw")
    resp = H(f"{ha1}:{nonce}:00000001:cn:auth:{H('INVITE:sip:bob@callward.local')}")
    auth = (
        f'Digest username="0612345678", realm="callward.local", nonce="{nonce}", '
        f'uri="sip:bob@callward.local", response="{resp}", algorithm=MD5, qop=auth, '
        f'nc=00000001, cnonce="cn"'
    )
    out = net.send(
        h.build(
            "INVITE",
            "sip:bob@callward.local",
            from_=frm,
            call_id="id1",
            cseq=2,
            extra=(("Proxy-Authorization", auth), ("P-Asserted-Identity", "<sip:+1999@evil>")),
        )
    )
    ((_, inv),) = h.requests(out, "INVITE")
    expected = phonenumbers.format_number(
        phonenumbers.parse("0612345678", "FR"), phonenumbers.PhoneNumberFormat.E164
    )
    assert inv.headers.get_lines("P-Asserted-Identity") == [
        f"<sip:{expected}@callward.local;user=phone>"
    ]
    assert "Proxy-Authorization" not in inv.headers


def test_normalize_number_against_libphonenumber_examples() -> None:
    for region in ("FR", "DE", "GB", "US", "IN"):
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
        e164 = f"+{example.country_code}{example.national_number}"
        assert normalize_number(national, region) == e164
    assert normalize_number("alice", "FR") is None
    assert normalize_number("112", "FR") is None  # short code: not rewritten


def test_rate_limit_per_source(h) -> None:
    core, _, _ = h.make_core(rate_limit=10.0, rate_burst=5)
    net = h.Net(core)
    answered = 0
    for i in range(20):
        out = net.send(h.build("OPTIONS", "sip:127.0.0.1:5060", call_id=f"rl{i}"))
        answered += len(h.responses(out))
    assert answered == 5  # the burst; the rest dropped within the same instant
    net.now += 1.0  # 10 tokens/s refill
    got = sum(
        len(h.responses(net.send(h.build("OPTIONS", "sip:127.0.0.1:5060", call_id=f"x{i}"))))
        for i in range(20)
    )
    assert got == 5  # refill is capped by the burst size
    elsewhere = Peer("udp", "127.0.0.2", 5092)
    other = net.send(
        h.build("OPTIONS", "sip:127.0.0.1:5060", call_id="o", src=elsewhere), elsewhere
    )
    assert h.responses(other)  # per source: another host is unaffected


def test_reconfigure_keeps_calls_and_changes_routes(h) -> None:
    """SIGHUP reload path: new static routes apply to new calls, a call in progress finishes."""
    from dataclasses import replace

    core, _, _ = h.make_core(routes=(("bob", "sip:bob@127.0.0.1:5080"),))
    net = h.Net(core)
    out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id="hup1"))
    ((_, inv),) = h.requests(out, "INVITE")
    core.reconfigure(replace(core.settings, routes=(("bob", "sip:bob@127.0.0.1:5081"),)))
    out = net.send(h.reply(inv, 200), UAS)
    assert [r.status for r in h.responses(out)] == [200]  # old transaction completed
    out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id="hup2"))
    assert [p.port for p, _ in h.requests(out, "INVITE")] == [5081]


def test_unsupervised_call_tracking_expires(h) -> None:
    """A call whose BYE never passes the edge (no Record-Route honoured) is forgotten after
    UNSUPERVISED_CALL_LIMIT, with a CallEnded so the CDR closes."""
    from callward.edge.proxy import UNSUPERVISED_CALL_LIMIT

    core, _, _ = h.make_core(routes=(("bob", "sip:bob@127.0.0.1:5080"),), session_expires=0)
    net = h.Net(core)
    out = net.send(h.build("INVITE", "sip:bob@callward.local", call_id="lost"))
    ((_, inv),) = h.requests(out, "INVITE")
    net.send(h.reply(inv, 200), UAS)
    assert core.metrics.calls_active._value.get() == 1
    net.tick(UNSUPERVISED_CALL_LIMIT + 1)
    assert [e.reason for e in net.events if isinstance(e, CallEnded)] == ["untracked"]
    assert core.metrics.calls_active._value.get() == 0
