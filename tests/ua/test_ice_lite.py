"""ICE-lite responder (RFC 8445 §2.5): a check with our ufrag and MESSAGE-INTEGRITY keyed with
our ice-pwd gets a Binding success (XOR-MAPPED-ADDRESS = where it came from, integrity and
fingerprint, checked with aioice's full agent code); anything else is dropped, and hostile
bytes never raise."""

from __future__ import annotations

from aioice import stun
from hypothesis import given
from hypothesis import strategies as st

from callward.ua.ice_lite import IceLite

SOURCE = ("192.0.2.7", 40000)


def _check(lite: IceLite, *, username: str, key: bytes, nominate: bool = False) -> bytes:
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    msg.attributes["USERNAME"] = username
    msg.attributes["PRIORITY"] = 1853824767
    msg.attributes["ICE-CONTROLLING"] = 1
    if nominate:
        msg.attributes["USE-CANDIDATE"] = None
    msg.add_message_integrity(key)
    msg.add_fingerprint()
    return bytes(msg)


def test_valid_check_answered_and_nomination_seen() -> None:
    lite = IceLite()
    req = _check(lite, username=f"{lite.ufrag}:peer", key=lite.pwd.encode(), nominate=True)
    reply = lite.answer(req, SOURCE)
    assert reply is not None
    resp = stun.parse_message(reply)
    assert resp.message_class == stun.Class.RESPONSE
    assert resp.attributes["XOR-MAPPED-ADDRESS"] == SOURCE
    assert resp.check_message_integrity(lite.pwd.encode())
    assert lite.checks == 1 and lite.nominated == SOURCE
    lines = lite.media_lines("192.0.2.1", 5004)
    assert f"a=ice-pwd:{lite.pwd}" in lines and len(lite.pwd) >= 22
    assert any(ln.startswith("a=candidate:1 1 udp ") and "192.0.2.1 5004 typ host" in ln
               for ln in lines)  # fmt: skip


def test_wrong_credentials_dropped() -> None:
    lite = IceLite()
    assert lite.answer(_check(lite, username="other:peer", key=lite.pwd.encode()), SOURCE) is None
    bad_key = _check(lite, username=f"{lite.ufrag}:peer", key=b"not-our-password-at-all")
    assert lite.answer(bad_key, SOURCE) is None
    assert lite.rejected == 2 and lite.checks == 0 and lite.nominated is None


@given(st.binary(max_size=200))
def test_hostile_bytes_never_raise(data: bytes) -> None:
    assert IceLite().answer(data, SOURCE) is None
