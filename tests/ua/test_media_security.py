"""Two phones call each other with DTLS-SRTP: fingerprints in SDP, a real DTLS handshake on
the media ports, exported keys in libsrtp, audio both ways as SRTP; the security choice
follows sdp/policy.py and a phone that requires SRTP never falls back to plain RTP."""

from __future__ import annotations

import asyncio

import pytest

from callward.errors import MediaError
from callward.rtp.packet import parse_rtp
from callward.sdp import SecurityMode
from callward.ua.media import RtpEndpoint
from callward.ua.media_security import secure_media
from callward.ua.phone import Phone

pytestmark = pytest.mark.timeout(60)


async def _phone(user: str, mode: str, **kw: object) -> tuple[Phone, RtpEndpoint]:
    phone = await Phone.start(user, **kw)  # type: ignore[arg-type]
    phone.media_security = mode
    rtp = await RtpEndpoint.open(phone.media_host)
    phone.media_port = rtp.local_addr[1]
    return phone, rtp


async def test_dtls_srtp_call_between_two_phones_both_ways() -> None:
    alice, a_rtp = await _phone("alice", "dtls")
    bob, b_rtp = await _phone("bob", "dtls")
    wire: list[bytes] = []
    try:
        dial = alice.dial(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        incoming = await bob.next_call(5)
        answering = asyncio.create_task(incoming.answer())
        assert await dial.wait_final(5) == 200
        await answering
        offer = dial.leg.local_sdp.decode()
        assert "UDP/TLS/RTP/SAVP" in offer and "a=setup:actpass" in offer
        assert "a=fingerprint:sha-256 " in offer
        mine, theirs = dial.negotiated(), incoming.negotiated()
        assert mine is not None and theirs is not None
        assert mine.security is SecurityMode.DTLS_SRTP is theirs.security
        # RFC 5763 §5: the answerer of actpass picks active, so bob is the DTLS client.
        tasks = [
            secure_media(a_rtp, mine, alice.dtls_certificate, allow_plain=False),
            secure_media(b_rtp, theirs, bob.dtls_certificate, allow_plain=False),
        ]
        dtls_a, dtls_b = await asyncio.gather(*tasks)
        assert dtls_a is not None and dtls_b is not None
        assert dtls_b.client and not dtls_a.client
        assert a_rtp.secured and b_rtp.secured
        # Tap what alice really puts on the wire toward bob.
        original = b_rtp.demux

        def tap(data: bytes, addr: tuple[str, int]) -> bool:
            wire.append(data)
            return original(data, addr) if original else False

        b_rtp.demux = tap
        await asyncio.gather(
            a_rtp.send_audio((mine.remote_address, mine.remote_port), 25),
            b_rtp.send_audio((theirs.remote_address, theirs.remote_port), 25),
        )
        await asyncio.sleep(0.2)
        assert b_rtp.counters.packets_received >= 24 and a_rtp.counters.packets_received >= 24
        assert a_rtp.counters.invalid == 0 and b_rtp.counters.invalid == 0
        srtp = [d for d in wire if d[0] >> 6 == 2]
        assert srtp, "RTP-version packets on the wire"
        assert all(b"\xff" * 40 not in d for d in srtp), "payload is encrypted"
        assert all(len(d) == 12 + 160 + 10 for d in srtp), "HMAC-SHA1-80 tag on every packet"
        parse_rtp(srtp[0])  # the header stays RTP (RFC 3711 §3.1)
        assert await dial.hangup() == 200
        dtls_a.close()
        dtls_b.close()
    finally:
        a_rtp.close()
        b_rtp.close()
        await alice.close()
        await bob.close()


async def test_security_choice_follows_policy_and_never_falls_back_to_plain() -> None:
    # A DTLS phone answering an SDES offer keys SDES (policy: DTLS, then SDES)...
    alice, a_rtp = await _phone("alice", "srtp")
    bob, b_rtp = await _phone("bob", "dtls", auto_answer=True)
    try:
        call = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        assert call.status == 200
        stream = call.negotiated()
        assert stream is not None and stream.security is SecurityMode.SDES_SRTP
        assert await secure_media(a_rtp, stream, alice.dtls_certificate, allow_plain=False) is None
        assert a_rtp.secured
        await call.hangup()
        # ...and refuses a plain offer with 488 (no silent downgrade).
        alice.media_security = "rtp"
        plain = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        assert plain.status == 488
        # A plain stream is refused by secure_media unless plain was explicitly allowed.
        bob.media_security = "rtp"
        ok = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        stream = ok.negotiated()
        assert stream is not None and stream.security is SecurityMode.PLAIN
        with pytest.raises(MediaError, match="no plain RTP fallback"):
            await secure_media(a_rtp, stream, alice.dtls_certificate, allow_plain=False)
        assert await secure_media(a_rtp, stream, alice.dtls_certificate, allow_plain=True) is None
        await ok.hangup()
    finally:
        a_rtp.close()
        b_rtp.close()
        await alice.close()
        await bob.close()
