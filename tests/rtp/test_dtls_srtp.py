"""DTLS-SRTP sans-IO: a real OpenSSL handshake between two sessions, keys exported per RFC 5764
§4.2 and usable by libsrtp both ways, fingerprint mismatch refused, lost flights retransmitted
on the timer, hostile datagrams ignored."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import MediaError
from callward.rtp.dtls_srtp import (
    DtlsCertificate,
    DtlsError,
    DtlsSrtpSession,
    DtlsState,
    HandshakeComplete,
    HandshakeFailed,
    is_dtls,
)
from callward.rtp.packet import RtpPacket
from callward.rtp.srtp import SrtpContext, SrtpProfile

A, B = DtlsCertificate.generate(), DtlsCertificate.generate()


def _pair(
    client_fp: bytes | None = None, server_fp: bytes | None = None
) -> tuple[DtlsSrtpSession, DtlsSrtpSession]:
    c = DtlsSrtpSession(
        A, client=True, remote_fingerprints=(("sha-256", client_fp or B.fingerprint()),)
    )
    s = DtlsSrtpSession(
        B, client=False, remote_fingerprints=(("sha-256", server_fp or A.fingerprint()),)
    )
    return c, s


def _run(c: DtlsSrtpSession, s: DtlsSrtpSession, drop: set[int] | None = None) -> int:
    """Shuttle flights until quiet; ``drop`` lists flight numbers lost on the way."""
    n = 0
    for _ in range(20):
        moved = False
        for src, dst in ((c, s), (s, c)):
            for d in src.datagrams_to_send():
                n += 1
                moved = True
                if drop and n in drop:
                    continue
                dst.receive_datagram(d, time.monotonic())
        if not moved:
            break
    return n


def test_handshake_exports_crossed_keys_that_protect_rtp_both_ways() -> None:
    c, s = _pair()
    c.start(0.0)
    s.start(0.0)
    _run(c, s)
    ev_c, ev_s = c.next_event(), s.next_event()
    assert isinstance(ev_c, HandshakeComplete) and isinstance(ev_s, HandshakeComplete)
    assert ev_c.profile is SrtpProfile.AES_CM_128_HMAC_SHA1_80
    assert ev_c.send == ev_s.receive and ev_c.receive == ev_s.send
    assert ev_c.send != ev_c.receive, "client and server write keys differ (RFC 5764 §4.2)"
    rtp = bytes(RtpPacket(0, 1, 160, 0x1234, b"\xff" * 160))
    wire = SrtpContext(ev_c.send, inbound=False).protect(rtp)
    assert rtp[12:] not in wire
    assert SrtpContext(ev_s.receive, inbound=True).unprotect(wire) == rtp
    back = SrtpContext(ev_s.send, inbound=False).protect(rtp)
    assert SrtpContext(ev_c.receive, inbound=True).unprotect(back) == rtp
    assert c.get_timer() is None and s.state is DtlsState.CONNECTED


def test_certificate_not_matching_the_sdp_fingerprint_fails() -> None:
    c, s = _pair(client_fp=b"\x00" * 32)  # the client expects another server certificate
    c.start(0.0)
    _run(c, s)
    ev = c.next_event()
    assert isinstance(ev, HandshakeFailed) and "fingerprint" in ev.reason
    assert c.state is DtlsState.FAILED and c.keys is None
    with pytest.raises(DtlsError):
        DtlsSrtpSession(A, client=True, remote_fingerprints=())
    with pytest.raises(MediaError):
        A.fingerprint("md5")


def test_a_lost_flight_is_retransmitted_on_the_timer() -> None:
    c, s = _pair()
    c.start(time.monotonic())
    lost = c.datagrams_to_send()  # the ClientHello is lost
    assert lost and all(is_dtls(d) for d in lost)
    deadline = c.get_timer()
    assert deadline is not None
    time.sleep(max(0.0, deadline - time.monotonic()) + 0.05)  # OpenSSL's own clock decides
    c.handle_timer(time.monotonic())
    again = c.datagrams_to_send()
    assert again, "ClientHello sent again"
    for d in again:
        s.receive_datagram(d, time.monotonic())
    _run(c, s)
    assert isinstance(c.next_event(), HandshakeComplete)


@given(st.lists(st.binary(min_size=0, max_size=300), max_size=8))
@settings(max_examples=60, deadline=None)
def test_hostile_datagrams_never_crash(junk: list[bytes]) -> None:
    c, s = _pair()
    c.start(0.0)
    for d in junk:
        s.receive_datagram(bytes([22, 0xFE, 0xFD]) + d, 0.0)  # DTLS-looking garbage
        s.receive_datagram(d, 0.0)
    s.datagrams_to_send()
    while (ev := s.next_event()) is not None:
        assert isinstance(ev, HandshakeFailed)
