"""The asyncio phone over real loopback sockets. Peers are either another Phone or a raw socket
speaking hand-written SIP, and retransmission counts are compared with RFC 3261 §17 arithmetic."""

from __future__ import annotations

import asyncio
import itertools
import socket

import pytest

from callward.events import CallAnswered, CallEnded, CallStarted, Event, InProcessBus
from callward.sip import Request, Response, parse_message
from callward.sip.timers import TimerConfig
from callward.ua.call import CallState
from callward.ua.phone import Phone

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("transport", ["udp", "tcp", "ws"])
async def test_phone_to_phone_call(transport: str) -> None:
    bus = InProcessBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)
    bob = await Phone.start("bob", transport=transport, auto_answer=True, bus=bus, node="b")
    alice = await Phone.start("alice", transport=transport, bus=bus, node="a")
    try:
        call = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        assert call.status == 200 and call.state is CallState.CONFIRMED
        assert call.setup_time is not None and call.setup_time < 5
        (incoming,) = bob.calls.values()
        await incoming.wait_confirmed(5)
        assert incoming.leg.remote_sdp == call.leg.local_sdp  # the offer arrived intact
        assert call.leg.remote_sdp == incoming.leg.local_sdp
        assert await call.hangup() == 200
        assert await incoming.wait_ended(5) == "bye"
        assert incoming.state is CallState.TERMINATED
    finally:
        await alice.close()
        await bob.close()
    await asyncio.sleep(0)
    kinds = [type(e) for e in seen]
    assert kinds.count(CallStarted) == 2 and kinds.count(CallAnswered) == 2
    assert kinds.count(CallEnded) == 2


async def test_reject_and_reasons() -> None:
    bob = await Phone.start("bob")
    alice = await Phone.start("alice")
    try:

        async def refuse() -> None:
            incoming = await bob.next_call(5)
            await incoming.ring()
            await incoming.reject(486)

        task = asyncio.create_task(refuse())
        call = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        await task
        assert call.status == 486 and call.state is CallState.TERMINATED
        assert call.leg.history == [CallState.CALLING, CallState.EARLY]  # 180 was seen
        assert await call.wait_ended(1) == "rejected:486"
    finally:
        await alice.close()
        await bob.close()


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


async def test_invite_retransmits_per_timer_a_then_times_out() -> None:
    # §17.1.1.2: Timer A starts at T1 and doubles; Timer B fires at 64*T1. On an idle machine the
    # transmissions happen at 0, T1, 3T1, 7T1, 15T1, 31T1, 63T1 (< 64T1): 7, computed by hand.
    # Timers may fire late on a loaded machine (never early), so the checks are the RFC's
    # bounds on send times (taken in a transport tap): gap k is at least T1*2^k, at most 7
    # transmissions, 408 not before 64*T1; the raw socket confirms what arrived.
    t1 = 0.05
    expected = 1 + sum(1 for k in range(1, 10) if (2**k - 1) * t1 < 64 * t1)
    assert expected == 7
    hole = udp_socket()
    loop = asyncio.get_running_loop()
    alice = await Phone.start("alice", timers=TimerConfig(t1=t1, t2=4 * t1))
    sent: list[float] = []
    alice.transport.add_tap(lambda e: sent.append(loop.time()) if e.direction == "out" else None)
    try:
        start = loop.time()
        call = await alice.call(f"sip:nobody@127.0.0.1:{hole.getsockname()[1]}")
        assert call.status == 408 and call.end_reason == "timeout"
        assert loop.time() - start >= 64 * t1
        gaps = [b - a for a, b in itertools.pairwise(sent)]
        assert 4 <= len(sent) <= expected, gaps
        for k, gap in enumerate(gaps):
            assert gap >= t1 * 2**k - 0.002, (k, gaps)  # never early
        got: list[bytes] = []
        while True:
            try:
                got.append(hole.recv(65535))
            except BlockingIOError:
                break
        assert len(got) == len(sent) and len(set(got)) == 1  # identical retransmissions
        assert got[0].startswith(b"INVITE sip:nobody@")
    finally:
        hole.close()
        await alice.close()


def invite_from(sock: socket.socket, target: tuple[str, int], branch: str = "z9hG4bKraw1") -> bytes:
    host, port = sock.getsockname()
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    body += b"m=audio 4000 RTP/AVP 0\r\n"
    return (
        f"INVITE sip:bob@{target[0]}:{target[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch={branch}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:raw@127.0.0.1>;tag=r1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: raw-{branch}\r\nCSeq: 1 INVITE\r\nContact: <sip:raw@{host}:{port}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def recv_until(sock: socket.socket, pred: object, timeout: float = 5.0) -> list[bytes]:
    loop = asyncio.get_running_loop()
    out: list[bytes] = []
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), deadline - loop.time())
        except TimeoutError:
            break
        out.append(data)
        if callable(pred) and pred(out):
            break
    return out


async def test_uas_retransmits_2xx_until_ack_then_bye_from_raw_peer() -> None:
    t1 = 0.05
    bob = await Phone.start("bob", auto_answer=True, timers=TimerConfig(t1=t1, t2=0.2))
    raw = udp_socket()
    try:
        raw.sendto(invite_from(raw, bob.local_addr), bob.local_addr)
        # 100, 180, then the 200 at least three times (§13.3.1.4) because we do not ACK.
        got = await recv_until(raw, lambda o: sum(m.startswith(b"SIP/2.0 200") for m in o) >= 3)
        oks = [m for m in got if m.startswith(b"SIP/2.0 200")]
        assert [m.split(b" ")[1] for m in got[:2]] == [b"100", b"180"]
        assert len(oks) >= 3 and len(set(oks)) == 1
        ok = parse_message(oks[0])
        assert isinstance(ok, Response) and ok.to.tag
        ack = (
            f"ACK sip:bob@127.0.0.1:{bob.local_addr[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{raw.getsockname()[1]};branch=z9hG4bKack\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:raw@127.0.0.1>;tag=r1\r\n"
            f"To: {ok.headers.get('To')}\r\nCall-ID: raw-z9hG4bKraw1\r\nCSeq: 1 ACK\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        raw.sendto(ack, bob.local_addr)
        (call,) = bob.calls.values()
        await call.wait_confirmed(5)
        bye = ack.replace(b"ACK sip", b"BYE sip").replace(b"1 ACK", b"2 BYE")
        bye = bye.replace(b"z9hG4bKack", b"z9hG4bKbye")
        # §12.2.2: a CSeq lower than the last one seen (the INVITE's 1) is out of order → 500
        stale = bye.replace(b"2 BYE", b"0 BYE").replace(b"z9hG4bKbye", b"z9hG4bKold")
        raw.sendto(stale, bob.local_addr)
        got = await recv_until(raw, lambda o: any(b"CSeq: 0 BYE" in m for m in o))
        assert any(m.startswith(b"SIP/2.0 500") and b"CSeq: 0 BYE" in m for m in got)
        assert call.state is CallState.CONFIRMED
        raw.sendto(bye, bob.local_addr)
        got = await recv_until(raw, lambda o: any(b"CSeq: 2 BYE" in m for m in o))
        assert any(m.startswith(b"SIP/2.0 200") and b"CSeq: 2 BYE" in m for m in got)
        assert await call.wait_ended(5) == "bye"
    finally:
        raw.close()
        await bob.close()


async def test_cancel_options_unknown_dialog_and_methods() -> None:
    bob = await Phone.start("bob")
    raw = udp_socket()
    port = raw.getsockname()[1]
    try:
        raw.sendto(invite_from(raw, bob.local_addr, "z9hG4bKc1"), bob.local_addr)
        incoming = await bob.next_call(5)
        cancel = (
            f"CANCEL sip:bob@127.0.0.1:{bob.local_addr[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKc1\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:raw@127.0.0.1>;tag=r1\r\nTo: <sip:bob@127.0.0.1>\r\n"
            "Call-ID: raw-z9hG4bKc1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        raw.sendto(cancel, bob.local_addr)
        got = await recv_until(raw, lambda o: any(m.startswith(b"SIP/2.0 487") for m in o))
        statuses = [m.split(b" ")[1] for m in got]
        assert b"487" in statuses and b"200" in statuses  # §9.2: 200 to CANCEL, 487 to INVITE
        assert any(b"CSeq: 1 CANCEL" in m for m in got if m.startswith(b"SIP/2.0 200"))
        assert await incoming.wait_ended(2) == "cancel"

        def req(method: str, branch: str, to_tag: str = "") -> bytes:
            tag = f";tag={to_tag}" if to_tag else ""
            return (
                f"{method} sip:bob@127.0.0.1:{bob.local_addr[1]} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:raw@127.0.0.1>;tag=r9\r\n"
                f"To: <sip:bob@127.0.0.1>{tag}\r\nCall-ID: {branch}\r\nCSeq: 5 {method}\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()

        for method, to_tag, status in [
            ("OPTIONS", "", b"200"),
            ("BYE", "nope", b"481"),  # §15.1.2: no such dialog
            ("SUBSCRIBE", "", b"405"),
            ("FROB", "", b"501"),
        ]:
            raw.sendto(req(method, f"z9hG4bK{method}", to_tag), bob.local_addr)
            (reply,) = await recv_until(raw, lambda o: True)
            assert reply.split(b" ")[1] == status, (method, reply[:60])
            if status in (b"405", b"501", b"200"):
                assert b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS" in reply
    finally:
        raw.close()
        await bob.close()


async def test_register_against_raw_registrar() -> None:
    raw = udp_socket()
    alice = await Phone.start("alice")
    loop = asyncio.get_running_loop()
    try:

        async def registrar() -> list[Request]:
            seen: list[Request] = []
            for _ in range(2):
                data, addr = await loop.sock_recvfrom(raw, 65535)
                req = parse_message(data)
                assert isinstance(req, Request)
                seen.append(req)
                lines = [f"Via: {v}" for v in req.headers.values("Via")]
                reply = "SIP/2.0 200 OK\r\n" + "\r\n".join(lines) + "\r\n"
                reply += f"From: {req.headers.get('From')}\r\nTo: {req.headers.get('To')};tag=x\r\n"
                reply += f"Call-ID: {req.call_id}\r\nCSeq: {req.cseq}\r\n"
                reply += f"Contact: {req.headers.get('Contact')}\r\nContent-Length: 0\r\n\r\n"
                await loop.sock_sendto(raw, reply.encode(), addr)
            return seen

        task = asyncio.create_task(registrar())
        r1 = await alice.register(raw.getsockname(), expires=120, domain="example.com")
        r2 = await alice.register(raw.getsockname(), expires=0, domain="example.com")
        seen = await task
        assert r1.status == 200 and r2.status == 200
        first, second = seen
        # §10.2: Request-URI is the domain, To = From = AOR, Contact carries expires.
        assert str(first.uri) == "sip:example.com" and first.method == "REGISTER"
        assert str(first.to.uri) == str(first.from_.uri) == "sip:alice@example.com"
        assert first.contacts[0].param("expires") == "120"
        # §10.2.4: refreshes keep the Call-ID and increase CSeq.
        assert second.call_id == first.call_id and second.cseq.seq == first.cseq.seq + 1
        assert second.contacts[0].param("expires") == "0"
    finally:
        raw.close()
        await alice.close()


def _digest_ok(auth: str, method: str, password: str) -> bool:
    """RFC 2617 §3.2.2.1 response computed by hand with hashlib (not with sip/auth.py)."""
    import hashlib
    import re

    p = dict(re.findall(r'(\w+)="?([^",]*)"?', auth))

    def md5(x: str) -> str:
        return hashlib.md5(x.encode()).hexdigest()

    ha1 = md5(f"{p['username']}:{p['realm']}:{password}")
    ha2 = md5(f"{method}:{p['uri']}")
    expect = md5(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:{p['qop']}:{ha2}")
    return p["response"] == expect and p["nonce"] == "n0nce" and p["realm"] == "example.com"


@pytest.mark.parametrize("kind", ["REGISTER", "INVITE"])
async def test_digest_challenge_is_answered(kind: str) -> None:
    raw = udp_socket()
    alice = await Phone.start("alice", password="s3cret", auth_user="alice")
    loop = asyncio.get_running_loop()
    challenge = 'Digest realm="example.com", nonce="n0nce", algorithm=MD5, qop="auth"'
    hname, aname = (
        ("WWW-Authenticate", "Authorization")
        if kind == "REGISTER"
        else ("Proxy-Authenticate", "Proxy-Authorization")
    )
    status = 401 if kind == "REGISTER" else 407

    def reply_to(req: Request, code: int, extra: str = "") -> bytes:
        vias = "".join(f"Via: {v}\r\n" for v in req.headers.values("Via"))
        return (
            f"SIP/2.0 {code} X\r\n{vias}From: {req.headers.get('From')}\r\n"
            f"To: {req.headers.get('To')};tag=srv\r\nCall-ID: {req.call_id}\r\n"
            f"CSeq: {req.cseq}\r\n{extra}Content-Length: 0\r\n\r\n"
        ).encode()

    async def server() -> list[Request]:
        seen: list[Request] = []
        while len(seen) < 2:
            data, addr = await loop.sock_recvfrom(raw, 65535)
            req = parse_message(data)
            assert isinstance(req, Request)
            if req.method == "ACK":
                continue
            seen.append(req)
            if len(seen) == 1:
                await loop.sock_sendto(
                    raw, reply_to(req, status, f"{hname}: {challenge}\r\n"), addr
                )
            else:
                ok = _digest_ok(req.headers.get(aname) or "", kind, "s3cret")
                await loop.sock_sendto(raw, reply_to(req, 200 if ok else 403), addr)
        return seen

    task = asyncio.create_task(server())
    try:
        if kind == "REGISTER":
            final = (await alice.register(raw.getsockname(), domain="example.com")).status
        else:
            port = raw.getsockname()[1]
            final = (await alice.call(f"sip:bob@127.0.0.1:{port}")).status
        first, second = await asyncio.wait_for(task, 10)
        assert final == 200  # the server's hand-computed digest check passed
        # §8.1.3.5 / §22.2: a new transaction (new branch) with CSeq + 1, same Call-ID and tag
        assert second.cseq.seq == first.cseq.seq + 1
        assert second.top_via.branch != first.top_via.branch
        assert second.call_id == first.call_id and second.from_.tag == first.from_.tag
        assert aname not in first.headers
    finally:
        task.cancel()
        raw.close()
        await alice.close()


async def test_invite_without_contact_gets_400() -> None:
    bob = await Phone.start("bob", auto_answer=True)
    raw = udp_socket()
    try:
        invite = invite_from(raw, bob.local_addr, "z9hG4bKnc")
        invite = b"\r\n".join(ln for ln in invite.split(b"\r\n") if not ln.startswith(b"Contact"))
        raw.sendto(invite, bob.local_addr)
        got = await recv_until(raw, lambda o: any(not m.startswith(b"SIP/2.0 100") for m in o))
        final = [m for m in got if not m.startswith(b"SIP/2.0 100")]
        assert final and final[0].startswith(b"SIP/2.0 400")  # §12.1.1 needs a Contact
        assert not bob.calls
    finally:
        raw.close()
        await bob.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_caller_cancels_a_ringing_call(transport: str) -> None:
    bob = await Phone.start("bob", transport=transport)
    alice = await Phone.start("alice", transport=transport)
    try:
        call = alice.dial(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        incoming = await bob.next_call(5)
        await incoming.ring()
        # §9.1: CANCEL → 200 (CANCEL) and 487 (INVITE); both sides end with reason "cancel".
        assert await call.cancel() == 487
        assert call.state is CallState.TERMINATED and call.end_reason == "cancel"
        assert await incoming.wait_ended(5) == "cancel"
        assert incoming.status == 487
    finally:
        await alice.close()
        await bob.close()


async def test_ended_calls_are_forgotten_after_64_t1() -> None:
    t1 = 0.02
    bob = await Phone.start("bob", auto_answer=True, timers=TimerConfig(t1=t1, t2=0.08))
    alice = await Phone.start("alice", timers=TimerConfig(t1=t1, t2=0.08))
    try:
        call = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        (incoming,) = bob.calls.values()
        await incoming.wait_confirmed(5)
        assert await call.hangup() == 200
        assert call.call_id in alice.calls  # still there for late retransmissions
        for _ in range(100):  # 64*T1 = 1.28 s; allow a loaded machine to be late
            if not alice.calls and not bob.calls:
                break
            await asyncio.sleep(0.05)
        assert not alice.calls and not bob.calls
    finally:
        await alice.close()
        await bob.close()


async def test_uac_re_acks_every_retransmitted_2xx() -> None:
    """§13.2.2.4: the UAC core answers each 2xx retransmission with the same ACK."""
    raw = udp_socket()
    alice = await Phone.start("alice")
    loop = asyncio.get_running_loop()
    try:
        task = asyncio.create_task(alice.call(f"sip:bob@127.0.0.1:{raw.getsockname()[1]}"))
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(raw, 65535), 5)
        invite = parse_message(data)
        assert isinstance(invite, Request)
        vias = "".join(f"Via: {v}\r\n" for v in invite.headers.values("Via"))
        ok = (
            f"SIP/2.0 200 OK\r\n{vias}From: {invite.headers.get('From')}\r\n"
            f"To: {invite.headers.get('To')};tag=uas\r\nCall-ID: {invite.call_id}\r\n"
            f"CSeq: {invite.cseq}\r\nContact: <sip:bob@127.0.0.1:{raw.getsockname()[1]}>\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        acks = []
        for _ in range(3):  # the 2xx and two retransmissions (as if our ACKs were lost)
            await loop.sock_sendto(raw, ok, addr)
            got, _ = await asyncio.wait_for(loop.sock_recvfrom(raw, 65535), 5)
            acks.append(got)
        call = await task
        assert call.status == 200
        assert all(a.startswith(b"ACK sip:bob@127.0.0.1") for a in acks)
        assert len(set(acks)) == 1  # byte-identical ACKs (same branch: one ACK "transaction")
    finally:
        raw.close()
        await alice.close()


async def test_cancel_racing_auto_answer_is_clean() -> None:
    """Found by the fuzz test: a CANCEL landing before the auto-answer task runs must end the
    call with 487, and the late ring/answer must not blow up in a background task."""
    errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _l, c: errors.append(c))
    bob = await Phone.start("bob", auto_answer=True)
    raw = udp_socket()
    port = raw.getsockname()[1]
    try:
        cancel = (
            f"CANCEL sip:bob@127.0.0.1:{bob.local_addr[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKrace\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:raw@127.0.0.1>;tag=r1\r\nTo: <sip:bob@127.0.0.1>\r\n"
            "Call-ID: raw-z9hG4bKrace\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        raw.sendto(invite_from(raw, bob.local_addr, "z9hG4bKrace") + b"", bob.local_addr)
        raw.sendto(cancel, bob.local_addr)
        got = await recv_until(raw, lambda o: any(m.startswith(b"SIP/2.0 487") for m in o))
        assert any(m.startswith(b"SIP/2.0 487") for m in got)
        await asyncio.sleep(0.2)
        (call,) = bob.calls.values()
        assert call.end_reason == "cancel"
    finally:
        raw.close()
        await bob.close()
    assert not errors, errors


async def test_srtp_phones_cross_sdes_keys_and_refuse_plain_offers() -> None:
    """RFC 4568 §6.1: each side's a=crypto keys what that side sends, so the caller's sending
    key is the callee's receiving key. A phone that requires SRTP answers a plain offer 488."""
    bob = await Phone.start("bob", auto_answer=True)
    bob.media_security = "srtp"
    alice = await Phone.start("alice")
    try:
        alice.media_security = "srtp"
        call = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        assert call.status == 200 and b"RTP/SAVP" in call.leg.local_sdp
        (incoming,) = bob.calls.values()
        await incoming.wait_confirmed(5)
        mine, theirs = call.negotiated(), incoming.negotiated()
        assert mine is not None and theirs is not None
        assert mine.local_crypto is not None and mine.remote_crypto is not None
        assert mine.local_crypto == theirs.remote_crypto
        assert mine.remote_crypto == theirs.local_crypto
        assert mine.local_crypto.master_key != mine.remote_crypto.master_key
        assert await call.hangup() == 200
        alice.media_security = "rtp"
        plain = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        assert plain.status == 488 and plain.negotiated() is None
    finally:
        await alice.close()
        await bob.close()
