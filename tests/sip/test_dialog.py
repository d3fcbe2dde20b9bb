"""Dialogs (RFC 3261 §12): creation, route sets, CSeq rules, loose/strict routing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import LocalProtocolError, RemoteProtocolError
from callward.sip import Request, Response, make_response, parse_message, parse_uri
from callward.sip.dialog import Dialog, DialogId, DialogState

VIA = "SIP/2.0/UDP 192.0.2.10:5060"


def invite(record_route: tuple[str, ...] = (), cseq: int = 314159) -> Request:
    rr = "".join(f"Record-Route: {r}\r\n" for r in record_route)
    raw = (
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n"
        "Max-Forwards: 70\r\nTo: Bob <sip:bob@biloxi.example.com>\r\n"
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        f"Call-ID: a84b4c76e66710\r\nCSeq: {cseq} INVITE\r\n{rr}"
        "Contact: <sip:alice@pc33.atlanta.example.com>\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    return msg


def answer(req: Request, status: int, tag: str | None = "a6c85cf", contact: str = "") -> Response:
    extra = [("Contact", contact)] if contact else []
    return make_response(req, status, to_tag=tag, extra=extra)


RR = ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")


def test_uac_early_then_confirmed_route_set_reversed() -> None:
    req = invite(RR)
    ringing = answer(req, 180, contact="<sip:bob@192.0.2.4>")
    d = Dialog.uac(req, ringing)
    assert d.state is DialogState.EARLY
    assert d.id == DialogId("a84b4c76e66710", "1928301774", "a6c85cf")
    assert d.id == DialogId.for_uac(ringing)
    # §12.1.2: route set = Record-Route of the response in reverse order.
    assert [str(r.uri) for r in d.route_set] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert str(d.remote_target) == "sip:bob@192.0.2.4"
    assert d.local_seq == 314159 and d.remote_seq is None
    # The 2xx recomputes the route set (§13.2.2.4) and refreshes the target.
    ok = answer(req, 200, contact="<sip:bob@192.0.2.5>")
    ok = ok.replace(headers=ok.headers.remove("Record-Route").append("Record-Route", RR[0]))
    d.receive_response(req, ok)
    assert d.state is DialogState.CONFIRMED
    assert [str(r.uri) for r in d.route_set] == ["sip:p1.example.com;lr"]
    assert str(d.remote_target) == "sip:bob@192.0.2.5"


def test_uac_creation_errors_and_early_failure() -> None:
    req = invite()
    with pytest.raises(RemoteProtocolError):
        Dialog.uac(req, answer(req, 180, tag=None))
    with pytest.raises(RemoteProtocolError):
        Dialog.uac(req, answer(req, 200))  # 2xx without Contact
    with pytest.raises(RemoteProtocolError):
        Dialog.uac(req, answer(req, 486))
    d = Dialog.uac(req, answer(req, 183, contact="<sip:bob@h>"))
    d.receive_response(req, answer(req, 180, contact="<sip:bob@h2>"))
    assert str(d.remote_target) == "sip:bob@h2"
    d.receive_response(req, answer(req, 100, tag=None))  # ignored
    d.receive_response(req, answer(req, 486))
    assert d.state is DialogState.TERMINATED  # §12.3: failure ends an early dialog
    d.receive_response(req, answer(req, 200, contact="<sip:x@y>"))  # ignored after the end
    assert d.terminated


def test_uas_dialog_route_set_in_order_and_cseq_rules() -> None:
    req = invite(RR)
    d = Dialog.uas(req, "uas-tag", local_target=parse_uri("sip:bob@192.0.2.4"))
    assert d.id == DialogId("a84b4c76e66710", "uas-tag", "1928301774")
    assert [str(r.uri) for r in d.route_set] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert d.remote_seq == 314159 and d.local_seq is None
    assert str(d.remote_target) == "sip:alice@pc33.atlanta.example.com"

    def in_dialog(method: str, seq: int, contact: str | None = None) -> Request:
        r = invite(cseq=seq)
        h = r.headers.set("To", "Bob <sip:bob@biloxi.example.com>;tag=uas-tag")
        h = h.set("CSeq", f"{seq} {method}")
        h = h.set("Contact", contact) if contact else h.remove("Contact")
        return r.replace(headers=h, method=method)

    d.receive_request(in_dialog("ACK", 314159))
    with pytest.raises(RemoteProtocolError) as err:
        d.receive_request(in_dialog("INFO", 314158))
    assert err.value.status_hint == 500  # §12.2.2: lower CSeq is out of order
    d.receive_request(in_dialog("INVITE", 314160, "<sip:alice@new.example.com>"))
    assert str(d.remote_target) == "sip:alice@new.example.com"  # target refresh
    d.receive_request(in_dialog("INFO", 314161, "<sip:ignored@x>"))
    assert str(d.remote_target) == "sip:alice@new.example.com"  # INFO is no refresh
    d.receive_request(in_dialog("BYE", 314162))
    assert d.terminated
    with pytest.raises(RemoteProtocolError) as gone:
        d.receive_request(in_dialog("INFO", 314163))
    assert gone.value.status_hint == 481
    with pytest.raises(LocalProtocolError):
        d.create_request("INFO", via=VIA)


def test_uas_errors_and_confirm() -> None:
    req = invite()
    no_contact = req.replace(headers=req.headers.remove("Contact"))
    with pytest.raises(RemoteProtocolError):
        Dialog.uas(no_contact, "t")
    d = Dialog.uas(req, "t", early=True)
    assert d.state is DialogState.EARLY
    d.confirm()
    assert d.state is DialogState.CONFIRMED
    with pytest.raises(RemoteProtocolError) as err:
        d.receive_request(invite())  # To tag missing: not this dialog
    assert err.value.status_hint == 481


def test_loose_routing_request() -> None:
    req = invite(RR)
    d = Dialog.uac(req, answer(req, 200, contact="<sip:bob@192.0.2.4>"))
    bye = d.create_request("BYE", via=VIA, branch="z9hG4bKbye")
    again = parse_message(bytes(bye))
    assert isinstance(again, Request)
    assert str(again.uri) == "sip:bob@192.0.2.4"
    assert again.headers.values("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert (again.cseq.seq, again.cseq.method) == (314160, "BYE")
    assert again.from_.tag == "1928301774" and again.to.tag == "a6c85cf"
    assert again.top_via.branch == "z9hG4bKbye"
    assert "Contact" not in again.headers
    reinvite = d.create_request("INVITE", via=VIA)
    assert reinvite.cseq.seq == 314161 and reinvite.contacts[0].uri == req.contacts[0].uri
    assert reinvite.top_via.branch is not None and reinvite.top_via.branch.startswith("z9hG4bK")
    ack = d.create_ack(reinvite, via=VIA)
    assert (ack.cseq.seq, ack.cseq.method) == (314161, "ACK")
    assert ack.top_via.branch != reinvite.top_via.branch  # a 2xx ACK is its own transaction
    with pytest.raises(LocalProtocolError):
        d.create_request("CANCEL", via=VIA)


def test_strict_routing_example_of_section_12_2_1_1() -> None:
    """The RFC's own example: route set <sip:proxy1>, <sip:proxy2>, <sip:proxy3;lr>,
    <sip:proxy4>, remote target <sip:user@remoteua> gives Request-URI sip:proxy1 and
    Route <sip:proxy2>, <sip:proxy3;lr>, <sip:proxy4>, <sip:user@remoteua>."""
    req = invite(("<sip:proxy4>", "<sip:proxy3;lr>", "<sip:proxy2>", "<sip:proxy1;method=INVITE>"))
    d = Dialog.uac(req, answer(req, 200, contact="<sip:user@remoteua>"))
    info = d.create_request("INFO", via=VIA)
    assert str(info.uri) == "sip:proxy1"  # ;method is not allowed in a Request-URI (§19.1.1)
    assert info.headers.values("Route") == [
        "<sip:proxy2>",
        "<sip:proxy3;lr>",
        "<sip:proxy4>",
        "<sip:user@remoteua>",
    ]
    assert isinstance(parse_message(bytes(info)), Request)


def test_no_route_set_and_local_cseq_start() -> None:
    req = invite()
    d = Dialog.uas(req, "t")
    notify = d.create_request("NOTIFY", via=VIA, body=b"x", extra=[("Event", "dialog")])
    assert notify.cseq.seq == 1  # empty local sequence starts at 1 (§12.2.1.1)
    assert "Route" not in notify.headers and notify.headers.get("Event") == "dialog"
    assert str(notify.uri) == "sip:alice@pc33.atlanta.example.com"
    assert notify.to.tag == "1928301774" and notify.from_.tag == "t"


def test_responses_to_in_dialog_requests() -> None:
    req = invite()
    d = Dialog.uac(req, answer(req, 200, contact="<sip:bob@h>"))
    reinvite = d.create_request("INVITE", via=VIA)
    d.receive_response(reinvite, answer(reinvite, 488))
    assert d.state is DialogState.CONFIRMED  # a failed re-INVITE keeps the dialog
    d.receive_response(reinvite, answer(reinvite, 200, contact="<sip:bob@moved>"))
    assert str(d.remote_target) == "sip:bob@moved"
    info = d.create_request("INFO", via=VIA)
    d.receive_response(info, answer(info, 481))
    assert d.terminated  # §12.2.1.2
    d2 = Dialog.uac(req, answer(req, 200, contact="<sip:bob@h>"))
    bye = d2.create_request("BYE", via=VIA)
    d2.receive_response(bye, answer(bye, 200))
    assert d2.terminated


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**31 - 1), max_size=30))
def test_cseq_acceptance_matches_the_rule(seqs: list[int]) -> None:
    """Model check of §12.2.2: accepted iff not lower than the highest accepted so far."""
    req = invite(cseq=100)
    d = Dialog.uas(req, "t")
    highest = 100
    for seq in seqs:
        r = req.replace(
            headers=req.headers.set("To", "<sip:bob@biloxi.example.com>;tag=t").set(
                "CSeq", f"{seq} INFO"
            ),
            method="INFO",
        )
        if seq < highest:
            with pytest.raises(RemoteProtocolError):
                d.receive_request(r)
        else:
            d.receive_request(r)
            highest = seq
        assert d.remote_seq == highest
