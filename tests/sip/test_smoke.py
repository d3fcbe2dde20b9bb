from __future__ import annotations

from callward.sip import Request, parse_message


def test_parse_and_serialize_invite() -> None:
    raw = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n"
        b"Max-Forwards: 70\r\nt: <sip:bob@example.com>\r\nf: <sip:al@example.com>;tag=9\r\n"
        b"i: abc@x\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    assert msg.from_.tag == "9"
    again = parse_message(bytes(msg))
    assert again == msg
    assert b"Call-ID: abc@x\r\n" in bytes(msg)
