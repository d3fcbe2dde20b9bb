"""A realistic SIP message mix shared by the parser benchmark and tests.

INVITE with SDP, 100, 180, 200 with SDP, ACK, BYE, 200 to BYE, REGISTER with Authorization, 401:
the messages one basic authenticated call and registration puts on the wire.
"""

from __future__ import annotations

_SDP = (
    "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\nm=audio 49170 RTP/SAVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    "a=sendrecv\r\n"
)

_COMMON = (
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9;rport\r\n"
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n'
    "To: <sip:bob@biloxi.example.com>{totag}\r\n"
    "Call-ID: 3848276298220188511@atlanta.example.com\r\n"
)


def _msg(start: str, cseq: str, extra: str = "", body: str = "", totag: str = "") -> bytes:
    head = start + "\r\n" + _COMMON.format(totag=totag) + f"CSeq: {cseq}\r\n" + extra
    if body:
        head += "Content-Type: application/sdp\r\n"
    head += f"Content-Length: {len(body.encode())}\r\n\r\n"
    return (head + body).encode()


MIX: list[bytes] = [
    _msg(
        "INVITE sip:bob@biloxi.example.com SIP/2.0",
        "1 INVITE",
        "Max-Forwards: 70\r\nContact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n"
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n"
        "Supported: replaces, timer\r\nUser-Agent: callward-bench/1.0\r\n",
        _SDP,
    ),
    _msg("SIP/2.0 100 Trying", "1 INVITE"),
    _msg(
        "SIP/2.0 180 Ringing",
        "1 INVITE",
        "Contact: <sip:bob@192.0.2.20:5060>\r\n",
        totag=";tag=8321234356",
    ),
    _msg(
        "SIP/2.0 200 OK",
        "1 INVITE",
        "Contact: <sip:bob@192.0.2.20:5060>\r\nRecord-Route: <sip:edge.example.com;lr>\r\n",
        _SDP.replace("alice", "bob").replace("192.0.2.10", "192.0.2.20"),
        totag=";tag=8321234356",
    ),
    _msg(
        "ACK sip:bob@192.0.2.20:5060 SIP/2.0",
        "1 ACK",
        "Max-Forwards: 70\r\nRoute: <sip:edge.example.com;lr>\r\n",
        totag=";tag=8321234356",
    ),
    _msg(
        "BYE sip:bob@192.0.2.20:5060 SIP/2.0",
        "2 BYE",
        "Max-Forwards: 70\r\nRoute: <sip:edge.example.com;lr>\r\n",
        totag=";tag=8321234356",
    ),
    _msg("SIP/2.0 200 OK", "2 BYE", totag=";tag=8321234356"),
    _msg(
        "REGISTER sip:atlanta.example.com SIP/2.0",
        "2 REGISTER",
        "Max-Forwards: 70\r\nContact: <sip:alice@192.0.2.10:5060>;expires=3600\r\n"
        'Authorization: Digest username="alice", realm="atlanta.example.com", '
        'nonce="ea9c8e88df84f1cec4341ae6cbe5a359", uri="sip:atlanta.example.com", '
        'response="dfe56131d1958046689d83306477ecc", algorithm=MD5, qop=auth, nc=00000001, '
        'cnonce="0a4f113b"\r\n',
    ),
    _msg(
        "SIP/2.0 401 Unauthorized",
        "1 REGISTER",
        'WWW-Authenticate: Digest realm="atlanta.example.com", qop="auth", '
        'nonce="ea9c8e88df84f1cec4341ae6cbe5a359", opaque="", stale=FALSE, algorithm=MD5\r\n',
        totag=";tag=1410948204",
    ),
]
