"""The edge's security policy through the sans-IO core (docs/security.md): no open relay,
authentication for every From, premium destinations, no user enumeration, failed-auth lockout
without an oracle, scanners, untrusted identity headers."""

from __future__ import annotations

import hashlib

from callward.edge.location import Binding
from callward.events import SecurityAlert
from callward.sip.peer import Peer

ATTACKER = Peer("udp", "198.51.100.66", 5070)


def _digest(chal: str, user: str, password: str, uri: str, method: str, nc: int = 1) -> str:
    """RFC 7616 client side, written independently with hashlib (MD5)."""
    params = dict(p.strip().split("=", 1) for p in chal[len("Digest ") :].split(", "))
    params = {k: v.strip('"') for k, v in params.items()}

    def H(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = H(f"{user}:{params['realm']}:{password}")
    resp = H(f"{ha1}:{params['nonce']}:{nc:08x}:c0:auth:{H(f'{method}:{uri}')}")
    return (
        f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
        f'uri="{uri}", response="{resp}", algorithm=MD5, qop=auth, nc={nc:08x}, cnonce="c0"'
    )


def _core(h, **kw):
    defaults = dict(auth=True, algorithms=("MD5",), upstreams=("sip:127.0.0.1:7101",))
    defaults.update(kw)
    core, _, _ = h.make_core(**defaults)
    return core, h.Net(core)


def _invite(h, net, uri, *, src=None, from_="<sip:alice@callward.local>", call_id="c1",
            cseq=1, extra=()):  # fmt: skip
    return net.send(
        h.build("INVITE", uri, from_=from_, to=f"<{uri}>", call_id=call_id, cseq=cseq,
                extra=extra, src=src or h.ALICE),
        src or h.ALICE,
    )  # fmt: skip


def _final(msgs):
    finals = [m for _, m in msgs if getattr(m, "status", 0) >= 200]
    assert len(finals) == 1, finals
    return finals[0]


def _authed_invite(h, net, uri, *, user="alice", password="secret-a", call_id="c9", src=None):
    r407 = _final(_invite(h, net, uri, call_id=call_id, src=src,
                          from_=f"<sip:{user}@callward.local>"))  # fmt: skip
    assert r407.status == 407
    cred = _digest(r407.headers.get("Proxy-Authenticate") or "", user, password, uri, "INVITE")
    return _invite(h, net, uri, call_id=call_id, cseq=2, src=src,
                   from_=f"<sip:{user}@callward.local>",
                   extra=(("Proxy-Authorization", cred),))  # fmt: skip


def test_foreign_request_uri_without_credentials_is_not_relayed(h) -> None:
    _, net = _core(h)
    for from_ in ("<sip:mallory@evil.example>", "<tel:+15551230000>"):
        out = _invite(h, net, "sip:+19005551234@evil.example", from_=from_, src=ATTACKER,
                      call_id=f"relay-{from_}")  # fmt: skip
        resp = _final(out)
        assert (resp.status, resp.reason) == (403, "Not relaying")
        assert not h.requests(out, "INVITE")  # nothing forwarded


def test_every_from_is_authenticated(h) -> None:
    """tel:, a foreign domain and our own domain with a trailing dot: all challenged."""
    _, net = _core(h)
    for i, from_ in enumerate(
        ("<tel:+15551230000>", "<sip:x@evil.example>", "<sip:alice@callward.local.>")
    ):
        out = _invite(h, net, "sip:+19005551234@callward.local", from_=from_, src=ATTACKER,
                      call_id=f"from-{i}")  # fmt: skip
        assert _final(out).status == 407
        assert not h.requests(out, "INVITE")


def test_authenticated_subscriber_may_call_out_but_not_premium(h) -> None:
    _, net = _core(h)
    out = _authed_invite(h, net, "sip:+12125550100@carrier.example", call_id="ok-1")
    assert h.requests(out, "INVITE"), "an authenticated local subscriber is relayed"
    out = _authed_invite(h, net, "sip:+19005551234@callward.local", call_id="prem-1")
    resp = _final(out)
    assert resp.status == 403 and "Premium" in resp.reason
    assert not h.requests(out, "INVITE")
    out = _authed_invite(h, net, "sip:+442079460000@carrier.example", call_id="intl-1")
    assert _final(out).status == 403


def test_no_user_enumeration(h) -> None:
    """Registered bob and unknown carol get the same answer to an unauthenticated INVITE."""
    _, net = _core(h)
    net.location.save(
        Binding(aor="bob@callward.local", contact="<sip:bob@127.0.0.1:5092>", key="k1",
                expires_at=net.now + 600, call_id="r", cseq=1, source="udp:127.0.0.1:5092")
    )  # fmt: skip
    assert net.location.lookup("bob@callward.local", net.now)
    answers = []
    for user in ("bob", "carol"):
        out = _invite(h, net, f"sip:{user}@callward.local", from_="<sip:x@evil.example>",
                      src=ATTACKER, call_id=f"enum-{user}")  # fmt: skip
        r = _final(out)
        answers.append((r.status, r.reason, sorted(n for n, _ in r.headers)))
    assert answers[0] == answers[1]


def test_brute_force_is_locked_out_and_the_right_password_learns_nothing(h) -> None:
    core, net = _core(h)
    policy = core.security.admission.policy
    uri = "sip:+12125550100@carrier.example"
    statuses = []
    for i in range(policy.account_failures + 2):
        r407 = _final(_invite(h, net, uri, src=ATTACKER, call_id=f"bf{i}"))
        cred = _digest(r407.headers.get("Proxy-Authenticate") or "", "alice", f"guess{i}",
                       uri, "INVITE")  # fmt: skip
        out = _invite(h, net, uri, src=ATTACKER, call_id=f"bf{i}", cseq=2,
                      extra=(("Proxy-Authorization", cred),))  # fmt: skip
        statuses.append(_final(out).status)
    assert set(statuses) == {403}
    # the attacker now guesses right: same answer as a wrong guess, nothing forwarded
    r407 = _final(_invite(h, net, uri, src=ATTACKER, call_id="bf-right"))
    cred = _digest(r407.headers.get("Proxy-Authenticate") or "", "alice", "secret-a", uri,
                   "INVITE")  # fmt: skip
    out = _invite(h, net, uri, src=ATTACKER, call_id="bf-right", cseq=2,
                  extra=(("Proxy-Authorization", cred),))  # fmt: skip
    wrong = _final(out)
    assert wrong.status == 403 and not h.requests(out, "INVITE")
    rules = {e.rule for e in net.events if isinstance(e, SecurityAlert)}
    assert "account-lockout" in rules
    text = core.metrics.registry.get_sample_value(
        "callward_edge_security_alerts_total", {"rule": "account-lockout"}
    )
    assert text and text >= 1


def test_scanner_user_agent_is_dropped_and_alerted(h) -> None:
    _, net = _core(h)
    out = net.send(
        h.build("OPTIONS", "sip:100@callward.local", src=ATTACKER,
                extra=(("User-Agent", "friendly-scanner"),)),
        ATTACKER,
    )  # fmt: skip
    assert out == []
    (alert,) = [e for e in net.events if isinstance(e, SecurityAlert)]
    assert alert.rule == "scanner-user-agent"
    # and the source stays blocked
    assert net.send(h.build("OPTIONS", "sip:callward.local", src=ATTACKER), ATTACKER) == []


def test_untrusted_identity_headers_are_stripped(h) -> None:
    _, net = _core(h)
    extra = (
        ("P-Preferred-Identity", "<sip:+15550000001@callward.local>"),
        ("Remote-Party-ID", "<sip:+15550000002@callward.local>;party=calling"),
        ("P-Access-Network-Info", "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=2620100000000001"),
    )
    uri = "sip:+12125550100@carrier.example"
    r407 = _final(_invite(h, net, uri, call_id="strip", extra=extra))
    cred = _digest(r407.headers.get("Proxy-Authenticate") or "", "alice", "secret-a", uri,
                   "INVITE")  # fmt: skip
    out = _invite(h, net, uri, call_id="strip", cseq=2,
                  extra=(*extra, ("Proxy-Authorization", cred)))  # fmt: skip
    ((_, fwd),) = h.requests(out, "INVITE")
    for name in ("P-Preferred-Identity", "Remote-Party-ID", "P-Access-Network-Info"):
        assert name not in fwd.headers, name
    assert "alice" in (fwd.headers.get("P-Asserted-Identity") or "")


def test_unauthenticated_invites_are_challenged_statelessly(h) -> None:
    """A flood of challenged INVITEs holds no transaction (no 32 s of memory per request)."""
    core, net = _core(h)
    for i in range(200):
        out = _invite(h, net, "sip:bob@callward.local", src=ATTACKER, call_id=f"fl{i}",
                      from_="<sip:x@evil.example>")  # fmt: skip
        resp = _final(out)
        assert resp.status == 407 and resp.headers.get("Proxy-Authenticate")
    assert core.active_transactions == 0
    # the ACK of a stateless 407 is absorbed, and nothing was forwarded
    assert not [m for _, m in net.log if getattr(m, "method", "") == "INVITE"]


def test_trusted_entry_with_tls_prefix_trusts_only_over_tls(h) -> None:
    """``tls:HOST`` trusts a peer only over TLS (mTLS when client certificates are required);
    the same address over UDP is an untrusted source that must authenticate."""
    core, _ = _core(h, trusted=("tls:198.51.100.66",))
    topo = core.topology
    assert topo.is_trusted(Peer("tls", "198.51.100.66", 5061, "c1"))
    assert not topo.is_trusted(Peer("udp", "198.51.100.66", 5070))
    net = h.Net(core)
    out = _invite(h, net, "sip:+12125550100@carrier.example", src=ATTACKER, call_id="tr-udp")
    assert _final(out).status == 407 and not h.requests(out, "INVITE")


def test_forged_in_dialog_requests_are_not_forwarded(h) -> None:
    """A To tag is no credential: a "re-INVITE" for a call the edge never set up gets 481."""
    _, net = _core(h, routes=(("bob", "sip:bob@127.0.0.1:5080"),))
    out = net.send(
        h.build("INVITE", "sip:bob@callward.local", to_tag="made-up", call_id="nope",
                src=ATTACKER),
        ATTACKER,
    )  # fmt: skip
    assert _final(out).status == 481 and not h.requests(out, "INVITE")
    out = net.send(h.build("OPTIONS", "sip:bob@callward.local", src=ATTACKER, call_id="o"),
                   ATTACKER)  # fmt: skip
    assert _final(out).status == 407  # an OPTIONS to a user would reveal who is online
    out = net.send(h.build("OPTIONS", "sip:callward.local", src=ATTACKER, call_id="o2"),
                   ATTACKER)  # fmt: skip
    assert _final(out).status == 200  # to the edge itself: keep-alive, no credentials
