"""The ng control core with a fake port pool: SDP rewrite for offer/answer (topology hiding,
RTP/AVP <-> RTP/SAVP, rtcp-mux flags), the reply cache, query/delete statistics, limits and
hostile datagrams. No sockets."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callward.events import CallAnswered, CallEnded, CallStarted, MediaStats
from callward.ng import bdecode, bencode, parse_message
from callward.relay.ng_server import NgServer, NgSettings
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.srtp import SrtpContext, SrtpKeying
from callward.sdp import media_crypto, parse_sdp

KAM = ("127.0.0.1", 5070)
OFFER = (
    "v=0\r\no=alice 111 1 IN IP4 192.0.2.10\r\ns=call\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=candidate:1 1 UDP 2130706431 192.0.2.10 4000 typ host\r\na=sendrecv\r\n"
)
ANSWER = (
    "v=0\r\no=bob 222 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


_cookies = itertools.count(1)


class FakePool:
    def __init__(self, limit: int = 1000) -> None:
        self.next = itertools.count(30000, 2)
        self.bound: set[int] = set()
        self.limit = limit

    def allocate(self) -> int:
        if len(self.bound) >= self.limit:
            raise OSError("full")
        port = next(self.next)
        self.bound.add(port)
        return port

    def release(self, port: int) -> None:
        self.bound.discard(port)


def call(server: NgServer, body: dict, now: float = 0.0, cookie: str = "") -> dict:  # type: ignore[type-arg]
    cookie = cookie or f"k{next(_cookies)}"
    server.receive_datagram(cookie.encode() + b" " + bencode(body), KAM, now)
    (wire, peer), *_ = server.datagrams_to_send()
    assert peer == KAM
    msg = parse_message(wire)
    assert msg.cookie == cookie
    return msg.body


def offer(**kw: object) -> dict:  # type: ignore[type-arg]
    return {"command": "offer", "call-id": "c1", "from-tag": "A", "sdp": OFFER,
            "replace": ["origin", "session-connection"], "ICE": "remove", **kw}  # fmt: skip


def answer(**kw: object) -> dict:  # type: ignore[type-arg]
    return {
        "command": "answer",
        "call-id": "c1",
        "from-tag": "A",
        "to-tag": "B",
        "sdp": ANSWER,
        **kw,
    }


@pytest.fixture
def server() -> NgServer:
    return NgServer(NgSettings(address="203.0.113.1", stats_interval_s=5.0), FakePool())


def test_ping_and_errors(server: NgServer) -> None:
    assert call(server, {"command": "ping"}) == {"result": "pong"}
    r = call(server, {"command": "query", "call-id": "nope"})
    assert r == {"result": "error", "error-reason": "Unknown call-id"}
    r = call(server, {"command": "dance"})
    assert r["result"] == "error" and "unrecognized" in r["error-reason"]
    server.receive_datagram(b"ck1 d7:command", KAM, 0)
    ((wire, _),) = server.datagrams_to_send()
    assert wire.startswith(b"ck1 ") and b"error" in wire
    server.receive_datagram(b"\x00\x01", KAM, 0)  # no cookie: nothing to answer
    assert server.datagrams_to_send() == []


def test_offer_answer_rewrites_and_hides_topology(server: NgServer) -> None:
    r = call(server, offer())
    sdp = parse_sdp(r["sdp"])
    text = r["sdp"]
    assert "192.0.2.10" not in text and "candidate" not in text  # replace-origin, ICE=remove
    assert sdp.connection is not None and sdp.connection.address == "203.0.113.1"
    md = sdp.media[0]
    assert md.proto == "RTP/AVP" and md.formats == ("0", "101") and md.port == 30002
    assert md.attribute("rtcp") == "30003"  # no rtcp-mux offered: RFC 3605 a=rtcp
    r = call(server, answer())
    text = r["sdp"]
    a = parse_sdp(text)
    assert "198.51.100.7" not in text and a.media[0].port == 30000
    assert a.origin.address == "203.0.113.1"
    core = server.cores["c1"]
    assert core.legs[0].config.remote == ("192.0.2.10", 4000)
    assert core.legs[1].config.remote == ("198.51.100.7", 6000)
    assert set(server.routes) == {30000, 30001, 30002, 30003}
    q = call(server, {"command": "query", "call-id": "c1"})
    assert set(q["tags"]) == {"A", "B"} and q["tags"]["A"]["in dialogue with"] == "B"
    assert call(server, {"command": "list"})["calls"] == ["c1"]


def test_srtp_to_plain_bridging_and_media(server: NgServer) -> None:
    phone_key = SrtpKeying.generate()
    savp = OFFER.replace("RTP/AVP", "RTP/SAVP").replace(
        "a=sendrecv",
        f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 {phone_key.inline}\r\na=rtcp-mux\r\na=sendrecv",
    )
    r = call(server, offer(sdp=savp, **{"transport-protocol": "RTP/AVP", "rtcp-mux": ["demux"]}))
    to_b = parse_sdp(r["sdp"]).media[0]
    assert to_b.proto == "RTP/AVP" and not media_crypto(to_b) and not to_b.has("rtcp-mux")
    r = call(server, answer())
    to_a = parse_sdp(r["sdp"]).media[0]
    assert to_a.proto == "RTP/SAVP" and to_a.has("rtcp-mux")  # A offered mux; we do it
    (ours,) = media_crypto(to_a)
    assert ours.tag == 3 and ours.suite == "AES_CM_128_HMAC_SHA1_80"  # RFC 4568 §7.1.2
    relay_key = SrtpKeying.from_sdes(ours.suite, str(ours.keys[0]))
    # media through the core: SRTP from A arrives plain at B, and back
    core, leg, rtcp = server.core_for(30000)  # type: ignore[misc]
    assert (leg, rtcp) == (0, False)
    plain = bytes(RtpPacket(0, 1, 160, 0xAAAA, b"\xff" * 160))
    core.receive_datagram(
        0, SrtpContext(phone_key, inbound=False).protect(plain), ("192.0.2.10", 4000), 0.1
    )
    (out,) = core.datagrams_to_send()
    assert out.data == plain and out.dest == ("198.51.100.7", 6000)
    core.receive_datagram(1, plain, ("198.51.100.7", 6000), 0.1)
    (back,) = core.datagrams_to_send()
    assert parse_rtp(SrtpContext(relay_key, inbound=True).unprotect(back.data)).ssrc == 0xAAAA


def test_plain_to_srtp_offer_gets_relay_keys(server: NgServer) -> None:
    r = call(
        server, offer(**{"transport-protocol": "RTP/SAVP", "SDES": ["no-AES_CM_128_HMAC_SHA1_32"]})
    )
    md = parse_sdp(r["sdp"]).media[0]
    suites = [c.suite for c in media_crypto(md)]
    assert md.proto == "RTP/SAVP" and suites and "AES_CM_128_HMAC_SHA1_32" not in suites
    b_key = SrtpKeying.generate()
    ans = ANSWER.replace("RTP/AVP", "RTP/SAVP") + f"a=crypto:1 {suites[0]} {b_key.inline}\r\n"
    r = call(server, answer(sdp=ans))
    assert parse_sdp(r["sdp"]).media[0].proto == "RTP/AVP"
    core = server.cores["c1"]
    assert core.legs[1].config.srtp_rx == b_key and core.legs[0].config.srtp_rx is None
    bad = ANSWER.replace("RTP/AVP", "RTP/SAVP") + f"a=crypto:9 {suites[0]} {b_key.inline}\r\n"
    r = call(server, answer(sdp=bad), now=1)
    assert r["result"] == "error"  # crypto tag 9 was never offered
    again = ANSWER.replace("RTP/AVP", "RTP/SAVP") + f"a=crypto:1 {suites[0]} {b_key.inline}\r\n"
    assert call(server, answer(sdp=again), now=2)["result"] == "ok"  # 183 then 200


def test_retransmission_is_answered_from_cache(server: NgServer) -> None:
    r1 = call(server, offer(), cookie="same")
    r2 = call(server, offer(), cookie="same", now=1.0)
    assert r1 == r2 and server.retransmissions == 1
    assert len(server.ports.bound) == 2  # type: ignore[attr-defined]


def test_delete_reports_stats_and_frees_ports(server: NgServer) -> None:
    call(server, offer())
    call(server, answer())
    core = server.cores["c1"]
    for s in range(50):
        core.receive_datagram(
            0, bytes(RtpPacket(0, s, s * 160, 1, b"\0" * 160)), ("192.0.2.10", 4000), s * 0.02
        )
    core.datagrams_to_send()
    r = call(server, {"command": "delete", "call-id": "c1", "from-tag": "A"}, now=2.0)
    stats = r["tags"]["A"]["stats"]
    assert stats["packets"] == 50 and stats["lost"] == 0 and stats["codec"] == "PCMU"
    assert stats["MOS"]["fixed"] > 40  # x10
    assert r["tags"]["B"]["stats"]["packets out"] == 50
    assert not server.calls and not server.routes and not server.ports.bound  # type: ignore[attr-defined]
    kinds = []
    while (ev := server.next_event()) is not None:
        kinds.append(type(ev))
    assert kinds == [CallStarted, CallAnswered, MediaStats, MediaStats, CallEnded]


def test_reinvite_from_callee_updates_both_legs(server: NgServer) -> None:
    call(server, offer())
    call(server, answer())
    # B re-INVITEs with a new address and puts A on hold
    reoffer = ANSWER.replace("6000", "6100") + "a=sendonly\r\n"
    r = call(server, {"command": "offer", "call-id": "c1", "from-tag": "B", "to-tag": "A",
                      "sdp": reoffer, "replace": ["origin"]}, now=1)  # fmt: skip
    assert parse_sdp(r["sdp"]).media[0].port == 30000  # toward A: A's relay port
    reans = OFFER.replace("a=sendrecv", "a=recvonly")
    r = call(
        server,
        {"command": "answer", "call-id": "c1", "from-tag": "B", "to-tag": "A", "sdp": reans},
        now=1,
    )
    assert r["result"] == "ok" and parse_sdp(r["sdp"]).media[0].port == 30002
    core = server.cores["c1"]
    assert core.legs[1].config.remote == ("198.51.100.7", 6100) and core.on_hold


def test_unanswered_offer_times_out_and_limits() -> None:
    pool = FakePool(limit=4)
    server = NgServer(NgSettings(signal_timeout_s=10, max_calls=5), pool)
    call(server, offer())
    call(server, offer(**{"call-id": "c2"}))
    r = call(server, offer(**{"call-id": "c3"}))
    assert r == {"result": "error", "error-reason": "Ran out of ports"} and len(pool.bound) == 4
    assert server.get_timer() == 10
    server.handle_timer(10)
    assert not server.calls and not pool.bound


def test_rtp_timeout_ends_the_call() -> None:
    server = NgServer(NgSettings(rtp_timeout_s=3, stats_interval_s=100), FakePool())
    call(server, offer())
    call(server, answer(), now=1)
    assert server.get_timer() == 4
    server.handle_timer(4)
    assert "c1" not in server.calls
    evs = []
    while (ev := server.next_event()) is not None:
        evs.append(ev)
    assert isinstance(evs[-1], CallEnded) and evs[-1].reason == "rtp-timeout"


@given(st.binary(max_size=200))
def test_garbage_datagrams_never_crash(data: bytes) -> None:
    server = NgServer(NgSettings(), FakePool())
    server.receive_datagram(data, KAM, 0)
    for wire, _ in server.datagrams_to_send():
        body = bdecode(wire.split(b" ", 1)[1])
        assert isinstance(body, dict) and body["result"] in ("error", "pong", "ok")


@given(st.text(max_size=300))
def test_garbage_sdp_gives_error_reply(sdp: str) -> None:
    server = NgServer(NgSettings(), FakePool())
    r = call(server, offer(sdp=sdp))
    assert r["result"] in ("ok", "error")
    if r["result"] == "error":
        assert not server.ports.bound  # type: ignore[attr-defined]


def test_rekey_on_reinvite_switches_srtp_keys(server: NgServer) -> None:
    """RFC 4568 §7.1.4: a re-offer with a new a=crypto re-keys that leg; the old key stops
    authenticating, the new one works, and the other leg is untouched."""
    k1, k2 = SrtpKeying.generate(), SrtpKeying.generate()

    def savp(key: SrtpKeying) -> str:
        return OFFER.replace("RTP/AVP", "RTP/SAVP").replace(
            "a=sendrecv", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {key.inline}\r\na=sendrecv"
        )

    flags = {"transport-protocol": "RTP/AVP"}
    call(server, offer(sdp=savp(k1), **flags))
    call(server, answer())
    core = server.cores["c1"]
    b_before = core.legs[1].config
    call(server, offer(sdp=savp(k2), **flags), now=1)
    call(server, answer(), now=1)
    assert server.cores["c1"] is core and core.legs[0].config.srtp_rx == k2
    assert core.legs[1].config == b_before
    phone = ("192.0.2.10", 4000)
    old = SrtpContext(k1, inbound=False).protect(bytes(RtpPacket(0, 1, 160, 5, b"\0" * 160)))
    new = SrtpContext(k2, inbound=False).protect(bytes(RtpPacket(0, 2, 320, 5, b"\0" * 160)))
    core.receive_datagram(0, old, phone, 1.1)
    core.receive_datagram(0, new, phone, 1.1)
    (out,) = core.datagrams_to_send()
    assert parse_rtp(out.data).sequence_number == 2 and core.counters[0].auth_failures == 1
