"""STUN Binding codec: round trips, RFC 5769 test vector, hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import RemoteProtocolError
from callward.nat.stun import binding_request, binding_success, is_stun, parse_binding_response

# RFC 5769 §2.2: sample IPv4 response; XOR-MAPPED-ADDRESS is 192.0.2.1:32853.
RFC5769_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
RFC5769_TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")


def test_rfc5769_sample_response() -> None:
    assert parse_binding_response(RFC5769_RESPONSE, RFC5769_TID) == ("192.0.2.1", 32853)


def test_request_response_round_trip() -> None:
    req = binding_request()
    assert is_stun(req.data) and len(req.data) == 28  # header + FINGERPRINT
    resp = binding_success(req.data, ("198.51.100.7", 40001))
    assert resp is not None and is_stun(resp)
    assert parse_binding_response(resp, req.transaction_id) == ("198.51.100.7", 40001)
    with pytest.raises(RemoteProtocolError, match="another transaction"):
        parse_binding_response(resp, b"\x00" * 12)
    assert binding_success(resp, ("198.51.100.7", 1)) is None, "a response is not answered"


def test_ipv6_mapped_address() -> None:
    req = binding_request()
    resp = binding_success(req.data, ("2001:db8::1", 5060))
    assert resp is not None
    assert parse_binding_response(resp, req.transaction_id) == ("2001:db8::1", 5060)


def test_sip_and_rtp_are_not_stun() -> None:
    assert not is_stun(b"REGISTER sip:x SIP/2.0\r\n\r\n")
    assert not is_stun(b"\x80\x00" + b"\x00" * 30)  # RTP version 2
    assert not is_stun(b"\r\n\r\n")


@given(st.binary(max_size=200))
@settings(max_examples=400, deadline=None)
def test_hostile_bytes_give_a_precise_error_or_nothing(data: bytes) -> None:
    try:
        parse_binding_response(data, data[8:20])
    except RemoteProtocolError:
        pass
    reply = binding_success(data, ("127.0.0.1", 1))
    assert reply is None or is_stun(reply)


@given(st.binary(min_size=1, max_size=60), st.integers(20, 27))
@settings(max_examples=200, deadline=None)
def test_mutated_valid_requests_never_crash(tail: bytes, cut: int) -> None:
    req = binding_request().data
    mutated = req[:cut] + tail
    mutated = mutated[:2] + (len(mutated) - 20).to_bytes(2, "big") + mutated[4:]
    reply = binding_success(mutated, ("127.0.0.1", 9))
    assert reply is None or is_stun(reply)
    with pytest.raises(RemoteProtocolError):
        parse_binding_response(mutated, b"x" * 12)
