"""Multi-tenant isolation (edge/security.py ``configure_tenants``, edge/security_setup.py): with
``edge.tenant_domains``, a subscriber of tenant A cannot register into, call as, or call into
tenant B's domain, even with valid credentials; unauthenticated probes cannot tell B's
registered users from unknown ones; calling rules and home countries are per tenant, computed
at configuration load. Through the sans-IO core, then over UDP with ``EdgeNode`` (port 27050)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import uuid

import pytest

from callward.config import CallwardConfig, EdgeConfig, SecurityConfig, TenantCallPolicy
from callward.edge.app import EdgeNode
from callward.edge.fraud import FraudGuard
from callward.edge.location import Binding
from callward.edge.security_setup import fraud_from_config
from callward.edge.subscribers import SqliteSubscribers, Subscriber
from callward.errors import ConfigError
from callward.events import SecurityAlert
from callward.sip import Response, parse_message
from callward.sip.peer import Peer

PHONE = Peer("udp", "127.0.0.1", 5091)
STRANGER = Peer("udp", "198.51.100.7", 5070)


def _digest(chal: str, user: str, password: str, uri: str, method: str) -> str:
    params = {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', chal)}

    def h(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = h(f"{user}:{params['realm']}:{password}")
    resp = h(f"{ha1}:{params['nonce']}:00000001:c0:auth:{h(f'{method}:{uri}')}")
    return (
        f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
        f'uri="{uri}", response="{resp}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0"'
    )


def _final(msgs):  # type: ignore[no-untyped-def]
    finals = [m for _, m in msgs if isinstance(m, Response) and m.status >= 200]
    assert len(finals) == 1, finals
    return finals[0]


def _setup(h, fraud=None):  # type: ignore[no-untyped-def]
    core, _, subs = h.make_core(
        auth=True,
        tenant_regions=(("b", "GB"),),
        algorithms=("MD5",),
        domains=("a.example", "b.example", "callward.local"),
        upstreams=("sip:127.0.0.1:7101",),
    )
    subs.put(Subscriber.from_password("ann", "callward.local", "pw-ann", tenant="a"))
    subs.put(Subscriber.from_password("carol", "callward.local", "pw-carol", tenant="b"))
    core.security.configure_tenants({"a": ["a.example"], "b": ["b.example"]}, "callward.local")
    if fraud is not None:
        core.security.fraud = FraudGuard(fraud)
    return core, h.Net(core)


def _authed(h, net, method, uri, *, user, password, frm=None, to=None, call_id, src=PHONE):  # type: ignore[no-untyped-def]
    frm = frm or f"<sip:{user}@a.example>"
    to = to or f"<{uri}>"
    proxy = method != "REGISTER"
    extra = (("Contact", f"<sip:{user}@{src.host}:{src.port}>"),)
    out = net.send(h.build(method, uri, from_=frm, to=to, call_id=call_id, extra=extra, src=src),
                   src)  # fmt: skip
    chal = _final(out)
    assert chal.status == (407 if proxy else 401), chal
    header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    cred = _digest(chal.headers.get(header) or "", user, password, uri, method)
    name = "Proxy-Authorization" if proxy else "Authorization"
    return net.send(
        h.build(method, uri, from_=frm, to=to, call_id=call_id, cseq=2,
                extra=(*extra, (name, cred)), src=src),
        src,
    )  # fmt: skip


def test_a_subscriber_cannot_register_into_another_tenant(h) -> None:
    _, net = _setup(h)
    out = _authed(h, net, "REGISTER", "sip:b.example", user="ann", password="pw-ann",
                  frm="<sip:ann@b.example>", to="<sip:ann@b.example>", call_id="r-b")  # fmt: skip
    assert _final(out).status == 403
    assert net.location.lookup("ann@b.example", net.now) == []
    out = _authed(h, net, "REGISTER", "sip:a.example", user="ann", password="pw-ann",
                  frm="<sip:ann@a.example>", to="<sip:ann@a.example>", call_id="r-a")  # fmt: skip
    assert _final(out).status == 200
    assert net.location.lookup("ann@a.example", net.now)
    assert "cross-tenant" in {e.rule for e in net.events if isinstance(e, SecurityAlert)}


def test_a_subscriber_cannot_call_into_or_as_another_tenant(h) -> None:
    _, net = _setup(h)
    net.location.save(
        Binding(aor="carol@b.example", contact="<sip:carol@127.0.0.1:5092>", key="k1",
                expires_at=net.now + 600, call_id="r", cseq=1, source="udp:127.0.0.1:5092")
    )  # fmt: skip
    out = _authed(h, net, "INVITE", "sip:carol@b.example", user="ann", password="pw-ann",
                  call_id="x-into")  # fmt: skip
    assert _final(out).status == 403 and not h.requests(out, "INVITE")
    out = _authed(h, net, "INVITE", "sip:+12125550100@carrier.example", user="ann",
                  password="pw-ann", frm="<sip:ann@b.example>", call_id="x-as")  # fmt: skip
    assert _final(out).status == 403 and not h.requests(out, "INVITE")
    # her own tenant and the outside world stay reachable
    out = _authed(h, net, "INVITE", "sip:+12125550100@carrier.example", user="ann",
                  password="pw-ann", call_id="x-out")  # fmt: skip
    assert h.requests(out, "INVITE")
    # and carol, in b, reaches b
    out = _authed(h, net, "INVITE", "sip:carol@b.example", user="carol", password="pw-carol",
                  frm="<sip:carol@b.example>", call_id="x-b")  # fmt: skip
    assert h.requests(out, "INVITE")


def test_no_enumeration_of_another_tenants_users(h) -> None:
    _, net = _setup(h)
    net.location.save(
        Binding(aor="carol@b.example", contact="<sip:carol@127.0.0.1:5092>", key="k1",
                expires_at=net.now + 600, call_id="r", cseq=1, source="udp:127.0.0.1:5092")
    )  # fmt: skip
    answers = []
    for user in ("carol", "nobody"):
        out = net.send(h.build("INVITE", f"sip:{user}@b.example", to=f"<sip:{user}@b.example>",
                               from_="<sip:ann@a.example>", call_id=f"e-{user}", src=STRANGER),
                       STRANGER)  # fmt: skip
        r = _final(out)
        answers.append((r.status, r.reason, sorted(n for n, _ in r.headers)))
    assert answers[0] == answers[1] and answers[0][0] == 407


def test_calling_rules_and_home_country_are_per_tenant(h) -> None:
    cfg = CallwardConfig(
        edge=EdgeConfig(default_region="US", tenant_regions={"b": "GB"}),
        security=SecurityConfig(
            fraud_default=TenantCallPolicy(),
            fraud_tenants={"a": TenantCallPolicy(international=True)},
        ),
    )
    policy = fraud_from_config(cfg)
    assert policy.for_tenant("a").international and policy.for_tenant("a").country_code == "1"
    assert policy.for_tenant("b").country_code == "44"  # computed at load, not per INVITE
    _, net = _setup(h, fraud=policy)
    uk, us = "sip:+442079460000@carrier.example", "sip:+12125550100@carrier.example"
    assert h.requests(_authed(h, net, "INVITE", uk, user="ann", password="pw-ann",
                              call_id="f1"), "INVITE")  # fmt: skip
    b = {"user": "carol", "password": "pw-carol", "frm": "<sip:carol@b.example>"}
    assert h.requests(_authed(h, net, "INVITE", uk, call_id="f2", **b), "INVITE")  # national
    r = _final(_authed(h, net, "INVITE", us, call_id="f3", **b))
    assert r.status == 403 and "International" in r.reason
    with pytest.raises(ConfigError):
        fraud_from_config(CallwardConfig(edge=EdgeConfig(tenant_regions={"x": "ZZ"})))


async def test_edge_refuses_cross_tenant_register_over_udp() -> None:
    subs = SqliteSubscribers(":memory:")
    subs.put(Subscriber.from_password("ann", "callward.local", "pw-ann", tenant="a"))
    port = 27050
    node = EdgeNode(
        CallwardConfig(
            edge=EdgeConfig(
                listen=[f"udp:127.0.0.1:{port}"],
                domains=["a.example", "b.example"],
                tenant_domains={"a": ["a.example"], "b": ["b.example"]},
            )
        ),
        subscribers=subs,
    )
    await node.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    me = sock.getsockname()[1]

    def register(domain: str, cseq: int, auth: str = "") -> bytes:
        return (
            f"REGISTER sip:{domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:ann@{domain}>;tag=t\r\nTo: <sip:ann@{domain}>\r\n"
            f"Call-ID: reg-{domain}\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:ann@127.0.0.1:{me}>\r\n{auth}Content-Length: 0\r\n\r\n"
        ).encode()

    async def final() -> Response:
        async with asyncio.timeout(5):
            while True:
                m = parse_message(await loop.sock_recv(sock, 65536))
                if isinstance(m, Response) and m.status >= 200:
                    return m

    try:
        results = {}
        for domain in ("b.example", "a.example"):
            await loop.sock_sendto(sock, register(domain, 1), ("127.0.0.1", port))
            chal = await final()
            cred = _digest(chal.headers.get("WWW-Authenticate") or "", "ann", "pw-ann",
                           f"sip:{domain}", "REGISTER")  # fmt: skip
            await loop.sock_sendto(sock, register(domain, 2, f"Authorization: {cred}\r\n"),
                                   ("127.0.0.1", port))  # fmt: skip
            results[domain] = (await final()).status
        assert results == {"b.example": 403, "a.example": 200}
        assert node.location.count() == 1
    finally:
        sock.close()
        await node.stop()
