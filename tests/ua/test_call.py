"""Sans-IO call leg: the requests it builds are checked against RFC 3261 rules by reading the
bytes back with the strict parser; the responses it consumes are written by hand."""

from __future__ import annotations

import pytest

from callward.errors import LocalProtocolError
from callward.sip import Request, Response, parse_message
from callward.sip.uri import parse_uri
from callward.ua.call import CallLeg, CallState, LocalEndpoint, next_hop

ALICE = LocalEndpoint("alice", "example.com", "127.0.0.1", 5062, "udp")
BOB = LocalEndpoint("bob", "example.com", "127.0.0.1", 5064, "tcp")


def wire(msg: Request | Response) -> Request | Response:
    """Serialize and re-parse strictly: what we build must be valid on the wire."""
    return parse_message(bytes(msg))


def response_to(invite: Request, status: int, extra: str = "", body: bytes = b"") -> Response:
    lines = [f"SIP/2.0 {status} Whatever"]
    lines += [f"Via: {v}" for v in invite.headers.values("Via")]
    lines += [
        f"From: {invite.headers.get('From')}",
        f"To: {invite.headers.get('To')};tag=callee-7",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {invite.cseq}",
    ]
    text = "\r\n".join(lines) + "\r\n" + extra + f"Content-Length: {len(body)}\r\n\r\n"
    msg = parse_message(text.encode() + body)
    assert isinstance(msg, Response)
    return msg


def test_outgoing_invite_is_a_valid_rfc3261_request() -> None:
    leg = CallLeg.outgoing_invite(ALICE, "sip:bob@127.0.0.1:5064", b"v=0\r\n")
    assert leg.invite is not None
    inv = wire(leg.invite)
    assert isinstance(inv, Request) and inv.method == "INVITE"
    # §8.1.1: To, From (with tag), CSeq, Call-ID, Max-Forwards, Via with magic-cookie branch
    assert inv.from_.tag == leg.local_tag and inv.to.tag is None
    assert inv.top_via.branch is not None and inv.top_via.branch.startswith("z9hG4bK")
    assert inv.top_via.rport == "" and inv.max_forwards == 70
    assert inv.cseq.method == "INVITE" and inv.contacts[0].uri == parse_uri(
        "sip:alice@127.0.0.1:5062"
    )
    assert inv.content_type == "application/sdp" and inv.body == b"v=0\r\n"
    assert leg.next_hop() == ("127.0.0.1", 5064)


def test_uac_dialog_from_2xx_ack_and_bye() -> None:
    leg = CallLeg.outgoing_invite(ALICE, "sip:bob@example.com", b"")
    assert leg.invite is not None
    assert leg.on_response(response_to(leg.invite, 100)) is CallState.CALLING
    ringing = response_to(leg.invite, 180)
    assert leg.on_response(ringing) is CallState.EARLY
    ok = response_to(
        leg.invite,
        200,
        "Contact: <sip:bob@192.0.2.4:5070>\r\n"
        "Record-Route: <sip:p2.example.com;lr>\r\nRecord-Route: <sip:p1.example.com;lr>\r\n",
        b"v=0\r\n",
    )
    assert leg.on_response(ok) is CallState.CONFIRMED
    assert leg.remote_sdp == b"v=0\r\n" and leg.status == 200
    ack = wire(leg.make_ack())
    assert isinstance(ack, Request)
    # §13.2.2.4 + §12.2.1.1: ACK goes to the remote target with the reversed Record-Route set,
    # same CSeq number as the INVITE, a new branch, and the To tag of the 2xx.
    assert str(ack.uri) == "sip:bob@192.0.2.4:5070"
    assert ack.headers.values("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert ack.cseq.seq == leg.invite.cseq.seq and ack.cseq.method == "ACK"
    assert ack.top_via.branch != leg.invite.top_via.branch
    assert ack.to.tag == "callee-7" and ack.call_id == leg.invite.call_id
    assert leg.next_hop() == ("p1.example.com", 5060)  # first Route
    # a retransmitted 2xx does not change the state (the UA re-sends the same ACK)
    assert leg.on_response(ok) is CallState.CONFIRMED
    bye = wire(leg.make_bye())
    assert isinstance(bye, Request)
    assert bye.cseq.seq == leg.invite.cseq.seq + 1 and bye.method == "BYE"  # §12.2.1.1
    assert bye.from_.tag == leg.local_tag and bye.to.tag == "callee-7"


def test_uac_rejected_and_illegal_transitions() -> None:
    leg = CallLeg.outgoing_invite(ALICE, "sip:bob@example.com", b"")
    assert leg.invite is not None
    assert leg.on_response(response_to(leg.invite, 486)) is CallState.TERMINATED
    assert leg.status == 486 and leg.end_reason == "rejected:486"
    with pytest.raises(LocalProtocolError):  # no 1xx after a final response
        leg.on_response(response_to(leg.invite, 180))
    with pytest.raises(LocalProtocolError):  # no dialog, no ACK from the UA core
        leg.make_ack()
    with pytest.raises(LocalProtocolError):  # a UAC never receives an ACK before answering
        CallLeg.outgoing_invite(ALICE, "sip:bob@example.com", b"").on_ack()


INCOMING = (
    b"INVITE sip:bob@127.0.0.1:5064;transport=tcp SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKproxy1\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.9:5062;branch=z9hG4bKcaller;rport=5062\r\n"
    b"Record-Route: <sip:edge.example.com;lr>\r\n"
    b"Max-Forwards: 69\r\n"
    b'From: "Carol" <sip:carol@example.com>;tag=c-1\r\n'
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: in-1@192.0.2.9\r\n"
    b"CSeq: 314 INVITE\r\n"
    b"Contact: <sip:carol@192.0.2.9:5062>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 5\r\n\r\nv=0\r\n"
)


def test_uas_responses_and_bye_follow_section_12_1_1() -> None:
    invite = parse_message(INCOMING)
    assert isinstance(invite, Request)
    leg = CallLeg.incoming_invite(BOB, invite)
    assert leg.state is CallState.INCOMING and leg.remote_sdp == b"v=0\r\n"
    ringing = wire(leg.make_response(180))
    assert isinstance(ringing, Response)
    assert leg.state is CallState.RINGING
    assert ringing.to.tag == leg.local_tag and ringing.contacts  # §12.1.1: Contact in 1xx/2xx
    assert ringing.headers.values("Via") == invite.headers.values("Via")  # all Vias, in order
    assert ringing.headers.values("Record-Route") == ["<sip:edge.example.com;lr>"]
    ok = wire(leg.make_response(200, b"v=0\r\n"))
    assert isinstance(ok, Response) and ok.status == 200
    assert leg.state is CallState.ANSWERED
    assert leg.on_ack() is CallState.CONFIRMED
    bye = wire(leg.make_bye())
    assert isinstance(bye, Request)
    # UAS route set keeps Record-Route order; Request-URI is the caller's Contact.
    assert str(bye.uri) == "sip:carol@192.0.2.9:5062"
    assert bye.headers.values("Route") == ["<sip:edge.example.com;lr>"]
    assert bye.to.tag == "c-1" and bye.from_.tag == leg.local_tag
    assert str(bye.from_.uri) == "sip:bob@example.com"  # local URI = the INVITE's To
    assert bye.top_via.transport == "TCP"
    assert leg.next_hop() == ("edge.example.com", 5060)
    assert leg.bye_matches(
        parse_message(  # type: ignore[arg-type]
            INCOMING.replace(b"INVITE sip", b"BYE sip")
            .replace(b"314 INVITE", b"315 BYE")
            .replace(
                b"To: <sip:bob@example.com>",
                f"To: <sip:bob@example.com>;tag={leg.local_tag}".encode(),
            )
        )
    )


def test_uas_cancel_and_reject() -> None:
    invite = parse_message(INCOMING)
    assert isinstance(invite, Request)
    leg = CallLeg.incoming_invite(BOB, invite)
    assert leg.on_cancel() is CallState.TERMINATED and leg.status == 487
    leg2 = CallLeg.incoming_invite(BOB, invite)
    resp = leg2.make_response(603)
    assert resp.status == 603 and leg2.state is CallState.TERMINATED


def test_next_hop_defaults() -> None:
    assert next_hop(parse_uri("sip:a@192.0.2.1")) == ("192.0.2.1", 5060)
    assert next_hop(parse_uri("sips:a@192.0.2.1")) == ("192.0.2.1", 5061)
    assert next_hop(parse_uri("sip:a@[2001:db8::1]:5080")) == ("2001:db8::1", 5080)
    assert next_hop(parse_uri("sip:a@h;maddr=192.0.2.7")) == ("192.0.2.7", 5060)
    with pytest.raises(LocalProtocolError):
        next_hop(parse_uri("tel:+15551234567"))
