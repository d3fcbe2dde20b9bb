"""SRTP-only policy (edge/srtp_policy.py): an offer that would carry plain RTP from an untrusted
leg gets 488 with a Warning and is not forwarded; SRTP offers, trusted sources (policy
``untrusted``) and disabled streams pass; the answer to an unauthenticated INVITE is still the
challenge (the policy says nothing before authentication). Through the sans-IO core, then over
real UDP sockets with ``EdgeNode`` (ports 27030-27032, safe15's block)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.config import CallwardConfig, EdgeConfig
from callward.edge.app import EdgeNode
from callward.edge.srtp_policy import plain_rtp_streams, srtp_refusal
from callward.sip import Request, Response, parse_message

KEY = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2VtY3Rs"


def sdp(*media: str) -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0", *media]
    return ("\r\n".join(lines) + "\r\n").encode()


PLAIN = sdp("m=audio 4000 RTP/AVP 0 8", "a=rtpmap:0 PCMU/8000")
SAVP = sdp("m=audio 4000 RTP/SAVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}")
DTLS = sdp("m=audio 4000 UDP/TLS/RTP/SAVPF 111", "a=fingerprint:sha-256 AB:CD", "a=setup:actpass")
AVP_WITH_CRYPTO = sdp("m=audio 4000 RTP/AVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}")
VIDEO_OFF = sdp("m=audio 4000 RTP/SAVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}",
                "m=video 0 RTP/AVP 96")  # fmt: skip


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


def _call(h, net, body: bytes, call_id: str, *, auth: bool = True):  # type: ignore[no-untyped-def]
    uri = "sip:+12125550100@carrier.example"
    ct = (("Content-Type", "application/sdp"),)

    def invite(cseq: int, extra=()):  # type: ignore[no-untyped-def]
        return net.send(
            h.build("INVITE", uri, to=f"<{uri}>", call_id=call_id, cseq=cseq,
                    extra=ct + tuple(extra), body=body)
        )  # fmt: skip

    out = invite(1)
    if not auth:
        return out
    r407 = _final(out)
    assert r407.status == 407
    cred = _digest(r407.headers.get("Proxy-Authenticate") or "", "alice", "secret-a", uri, "INVITE")
    return invite(2, (("Proxy-Authorization", cred),))


def _core(h, **kw):  # type: ignore[no-untyped-def]
    defaults = dict(auth=True, algorithms=("MD5",), upstreams=("sip:127.0.0.1:7101",),
                    srtp_policy="untrusted")  # fmt: skip
    defaults.update(kw)
    core, _, _ = h.make_core(**defaults)
    return h.Net(core)


def test_plain_rtp_offer_from_untrusted_leg_gets_488_with_warning(h) -> None:
    net = _core(h)
    out = _call(h, net, PLAIN, "p1")
    resp = _final(out)
    assert resp.status == 488 and resp.reason == "Not Acceptable Here"
    warning = resp.headers.get("Warning") or ""
    assert warning.startswith("399 ") and "SRTP required" in warning
    assert not h.requests(out, "INVITE"), "nothing forwarded"
    # RTP/AVP with a=crypto is still plain RTP on the wire (best-effort SRTP is not SRTP-only)
    assert _final(_call(h, net, AVP_WITH_CRYPTO, "p2")).status == 488


@pytest.mark.parametrize("body", [SAVP, DTLS, VIDEO_OFF, b""], ids=["sdes", "dtls", "off", "none"])
def test_secure_or_no_offer_is_forwarded(h, body: bytes) -> None:
    net = _core(h)
    assert h.requests(_call(h, net, body, "s1"), "INVITE")


def test_unauthenticated_plain_offer_is_challenged_first(h) -> None:
    net = _core(h)
    assert _final(_call(h, net, PLAIN, "u1", auth=False)).status == 407


def test_trusted_source_passes_untrusted_policy_but_not_always(h) -> None:
    trusted = (f"{h.ALICE.host}:{h.ALICE.port}",)
    net = _core(h, trusted=trusted)
    uri = "sip:+12125550100@carrier.example"
    ct = (("Content-Type", "application/sdp"),)
    out = net.send(h.build("INVITE", uri, to=f"<{uri}>", call_id="t1", extra=ct, body=PLAIN))
    assert h.requests(out, "INVITE")
    net = _core(h, trusted=trusted, srtp_policy="always")
    out = net.send(h.build("INVITE", uri, to=f"<{uri}>", call_id="t2", extra=ct, body=PLAIN))
    assert _final(out).status == 488


def test_optional_policy_forwards_plain_rtp(h) -> None:
    net = _core(h, srtp_policy="optional")
    assert h.requests(_call(h, net, PLAIN, "o1"), "INVITE")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_hostile_bodies_never_raise(body: bytes) -> None:
    req = parse_message(
        b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: f\r\nCSeq: 1 INVITE\r\n"
        b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        strict=False,
    )
    assert isinstance(req, Request)
    assert plain_rtp_streams(body) >= -1
    out = srtp_refusal(req, policy="always", trusted=False, host="edge-1")
    assert out is None or out[0] == 488


# ---------------------------------------------------------------------------------------------
# Over real sockets: `callward edge` with srtp_policy: untrusted, a UDP caller and callee
# ---------------------------------------------------------------------------------------------

EDGE_PORT, UAS_PORT = 27030, 27031


async def _recv(sock: socket.socket, timeout: float = 5.0) -> Request | Response:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        return parse_message(await loop.sock_recv(sock, 65536))


def _udp(port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.setblocking(False)
    return s


async def test_edge_over_udp_refuses_plain_rtp_and_forwards_srtp() -> None:
    cfg = CallwardConfig(
        edge=EdgeConfig(
            listen=[f"udp:127.0.0.1:{EDGE_PORT}"],
            auth=False,
            srtp_policy="untrusted",
            routes={"bob": f"sip:bob@127.0.0.1:{UAS_PORT}"},
        )
    )
    node = EdgeNode(cfg)
    await node.start()
    caller, uas = _udp(), _udp(UAS_PORT)
    loop = asyncio.get_running_loop()
    try:
        port = caller.getsockname()[1]
        for body, call_id in ((PLAIN, "real-plain"), (SAVP, "real-srtp")):
            invite = (
                "INVITE sip:bob@callward.local SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:alice@callward.local>;tag=a\r\n"
                f"To: <sip:bob@callward.local>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:alice@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            await loop.sock_sendto(caller, invite, ("127.0.0.1", EDGE_PORT))
            if body is PLAIN:
                final = None
                while final is None:
                    msg = await _recv(caller)
                    if isinstance(msg, Response) and msg.status >= 200:
                        final = msg
                assert final.status == 488 and "SRTP required" in (
                    final.headers.get("Warning") or ""
                )
            else:
                fwd = await _recv(uas)
                assert isinstance(fwd, Request) and fwd.call_id == "real-srtp"
                assert b"RTP/SAVP" in fwd.body
        assert node.metrics.rejected.labels("srtp-required")._value.get() == 1
    finally:
        caller.close()
        uas.close()
        await node.stop()
