"""Registrar behaviour (RFC 3261 §10.3, RFC 5626 §6) through the sans-IO core."""

from __future__ import annotations

import hashlib

from callward.edge.flow import Peer
from callward.events import RegistrationChanged


def _digest_header(
    www: str, user: str, password: str, uri: str, method: str = "REGISTER", nc: int = 1
) -> str:
    """Client side of RFC 7616 written independently with hashlib."""
    params = dict(p.strip().split("=", 1) for p in www[len("Digest ") :].split(", "))
    params = {k: v.strip('"') for k, v in params.items()}
    alg = params["algorithm"]
    hname = {"MD5": "md5", "SHA-256": "sha256"}[alg]

    def H(s: str) -> str:
        return hashlib.new(hname, s.encode()).hexdigest()

    ha1 = H(f"{user}:{params['realm']}:{password}")
    ha2 = H(f"{method}:{uri}")
    resp = H(f"{ha1}:{params['nonce']}:{nc:08x}:abc:auth:{ha2}")
    return (
        f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
        f'uri="{uri}", response="{resp}", algorithm={alg}, qop=auth, nc={nc:08x}, cnonce="abc"'
    )


def _register(h, net, *, contact="<sip:alice@127.0.0.1:5091>", cseq=1, extra=(), src=None):
    return net.send(
        h.build(
            "REGISTER",
            "sip:callward.local",
            to="<sip:alice@callward.local>",
            from_="<sip:alice@callward.local>",
            call_id="reg-1",
            cseq=cseq,
            extra=(("Contact", contact), *extra),
        ),
        src or h.ALICE,
    )


def test_digest_challenge_then_register_sha256_and_md5(h) -> None:
    core, loc, _ = h.make_core(auth=True)
    net = h.Net(core)
    out = _register(h, net)
    (r401,) = h.responses(out)
    assert r401.status == 401
    chals = r401.headers.get_lines("WWW-Authenticate")
    assert "MD5" in chals[0] and "SHA-256" in chals[1]
    for i, chal in enumerate(chals):
        auth = _digest_header(chal, "alice", "secret-a", "sip:callward.local", nc=1 + i)
        out = _register(h, net, cseq=2 + i, extra=(("Authorization", auth),))
        (ok,) = h.responses(out)
        assert ok.status == 200, ok.reason
    # the same credentials again (same nonce and nonce-count): a replay, refused
    (r,) = h.responses(_register(h, net, cseq=5, extra=(("Authorization", auth),)))
    assert r.status == 403
    assert [b.aor for b in loc.lookup("alice@callward.local", net.now)] == ["alice@callward.local"]
    # wrong password → 403, and no binding change
    bad = _digest_header(chals[0], "alice", "nope", "sip:callward.local", nc=7)
    (r,) = h.responses(_register(h, net, cseq=9, extra=(("Authorization", bad),)))
    assert r.status == 403
    # bob's credentials cannot register alice's AOR
    bob = _digest_header(chals[0], "bob", "secret-b", "sip:callward.local", nc=8)
    (r,) = h.responses(_register(h, net, cseq=10, extra=(("Authorization", bob),)))
    assert r.status == 403
    kinds = [e.reason for e in net.events if isinstance(e, RegistrationChanged)]
    assert kinds[0] == "registered" and kinds[1] == "refreshed"


def test_stale_nonce_gets_stale_true(h) -> None:
    core, _, _ = h.make_core(auth=True, nonce_ttl=30.0)
    net = h.Net(core)
    (r401,) = h.responses(_register(h, net))
    chal = r401.headers.get_lines("WWW-Authenticate")[1]
    net.now += 120
    auth = _digest_header(chal, "alice", "secret-a", "sip:callward.local")
    (r,) = h.responses(_register(h, net, cseq=2, extra=(("Authorization", auth),)))
    assert r.status == 401 and "stale=true" in r.headers.get("WWW-Authenticate")


def test_refresh_at_90_percent_of_600_s_reuses_the_nonce(h) -> None:
    """A phone refreshes a 600 s registration at 75-90 % (ua/registration.py) with the last
    challenge and the next nc: with the default nonce_ttl that is REGISTER + 200, no 401."""
    core, _, _ = h.make_core(auth=True)
    net = h.Net(core)
    (r401,) = h.responses(_register(h, net))
    chal = r401.headers.get_lines("WWW-Authenticate")[0]
    auth = _digest_header(chal, "alice", "secret-a", "sip:callward.local", nc=1)
    assert h.responses(_register(h, net, cseq=2, extra=(("Authorization", auth),)))[0].status == 200
    net.now += 540
    auth = _digest_header(chal, "alice", "secret-a", "sip:callward.local", nc=2)
    (r,) = h.responses(_register(h, net, cseq=3, extra=(("Authorization", auth),)))
    assert r.status == 200, r.reason


def test_expiry_limits_423_and_clamp(h, net) -> None:
    (r,) = h.responses(_register(h, net, contact="<sip:alice@127.0.0.1:5091>;expires=10"))
    assert r.status == 423 and r.headers.get("Min-Expires") == "60"
    (r,) = h.responses(
        _register(h, net, cseq=2, contact="<sip:alice@127.0.0.1:5091>;expires=99999")
    )
    assert r.status == 200
    assert r.headers.get("Contact").endswith(";expires=7200")


def test_multiple_contacts_refresh_star_and_expiry(h, net) -> None:
    (r,) = h.responses(
        _register(h, net, contact="<sip:a@127.0.0.1:5091>;expires=100, <sip:a@127.0.0.1:5093>")
    )
    assert r.status == 200 and len(r.headers.values("Contact")) == 2
    loc = net.location
    assert len(loc.lookup("alice@callward.local", net.now)) == 2
    # out-of-order CSeq within the same Call-ID is refused (§10.3 step 7)
    (r,) = h.responses(_register(h, net, cseq=1, contact="<sip:a@127.0.0.1:5091>"))
    assert r.status == 500
    # the 100 s contact expires, the 3600 s one stays
    net.now += 101
    assert [b.contact for b in loc.lookup("alice@callward.local", net.now)] == [
        "<sip:a@127.0.0.1:5093>"
    ]
    # Contact: * needs Expires: 0
    (r,) = h.responses(_register(h, net, cseq=3, contact="*"))
    assert r.status == 400
    (r,) = h.responses(_register(h, net, cseq=4, contact="*", extra=(("Expires", "0"),)))
    assert r.status == 200 and not r.headers.get("Contact")
    assert loc.lookup("alice@callward.local", net.now) == []
    assert [e.reason for e in net.events][-1] == "unregistered"


def test_outbound_instance_replaces_binding_and_uses_flow(h, net) -> None:
    inst = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    tcp_a = Peer("tcp", "127.0.0.1", 40001, conn="c7")
    c1 = f"<sip:alice@10.0.0.5:5062;transport=tcp>;+sip.instance={inst};reg-id=1"
    (r,) = h.responses(_register(h, net, contact=c1, extra=(("Supported", "outbound"),), src=tcp_a))
    assert r.status == 200 and r.headers.get("Require") == "outbound"
    # the phone moves (new IP, new connection): same instance/reg-id → replaced, not added
    tcp_b = Peer("tcp", "127.0.0.1", 40002, conn="c8")
    c2 = c1.replace("10.0.0.5", "10.0.0.9")
    (r,) = h.responses(
        _register(h, net, cseq=2, contact=c2, extra=(("Supported", "outbound"),), src=tcp_b)
    )
    (b,) = net.location.lookup("alice@callward.local", net.now)
    assert b.outbound and b.conn == "c8" and "10.0.0.9" in b.contact
    # an INVITE for alice goes over her registered connection, Request-URI = her Contact
    out = net.send(h.build("INVITE", "sip:alice@callward.local", src=h.BOB, call_id="c-o"), h.BOB)
    ((peer, inv),) = h.requests(out, "INVITE")
    assert peer == tcp_b
    assert str(inv.uri) == "sip:alice@10.0.0.9:5062;transport=tcp"


def test_nat_contact_fixup_sends_to_source(h, net) -> None:
    natted = Peer("udp", "127.0.0.1", 47000)
    (r,) = h.responses(_register(h, net, contact="<sip:alice@192.168.1.20:5060>", src=natted))
    assert r.status == 200
    out = net.send(h.build("INVITE", "sip:alice@callward.local", src=h.BOB, call_id="c-n"), h.BOB)
    ((peer, inv),) = h.requests(out, "INVITE")
    assert peer == natted and inv.uri.host == "192.168.1.20"


def test_call_to_a_dead_flow_gets_430(h, net) -> None:
    """RFC 5626 §5.3: the connection the phone registered on is gone → 430 Flow Failed."""
    tcp = Peer("tcp", "127.0.0.1", 40009, conn="c11")
    (r,) = h.responses(_register(h, net, contact="<sip:alice@10.0.0.7;transport=tcp>", src=tcp))
    assert r.status == 200
    out = net.send(h.build("INVITE", "sip:alice@callward.local", src=h.BOB, call_id="df"), h.BOB)
    assert [p for p, _ in h.requests(out, "INVITE")] == [tcp]
    net.core.flow_failed(tcp, net.now)
    out = net._drain()
    assert [m.status for _, m in out if m.status >= 200] == [430]
