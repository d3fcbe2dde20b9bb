"""Strict header hygiene: control characters (RFC 3261 §25.1 TEXT-UTF8), single-instance
headers, display names, and the header-injection guard on serialization.

Every rejection must be the same with and without the C accelerator (the pure parser is the
reference; ``test_accelerator.check`` compares both)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callward.errors import LocalProtocolError, SipParseError
from callward.sip import parse_message, parser
from callward.sip.headers import parse_name_addr
from callward.sip.message import Headers

from .torture_cases import req

FORBIDDEN = [c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)] + [0x7F]
BASE = req("OPTIONS sip:u@example.com SIP/2.0", "Subject: hello\nX-Note: a\n")


def _both(data: bytes) -> tuple[str, int, int]:
    """Reject through both implementations; return (rule, line, status) once they agree."""
    with pytest.raises(SipParseError) as pure:
        parser._parse_pure(data, True, parser.DEFAULT_LIMITS)
    if parser._accelerated_parse is not None:
        assert parser._accelerated_parse(data, parser.DEFAULT_LIMITS) is None
    with pytest.raises(SipParseError) as public:
        parse_message(data)
    a, b = pure.value, public.value
    assert (a.rule, a.line, a.status_hint, str(a)) == (b.rule, b.line, b.status_hint, str(b))
    return a.rule, a.line, a.status_hint


@pytest.mark.parametrize("code", FORBIDDEN, ids=[f"0x{c:02x}" for c in FORBIDDEN])
def test_control_character_in_value_is_refused_with_line_and_rule(code: int) -> None:
    data = BASE.replace(b"Subject: hello", b"Subject: he" + bytes([code]) + b"llo")
    rule, line, status = _both(data)
    assert status == 400
    subject_line = data.split(b"\r\n").index(b"Subject: he" + bytes([code]) + b"llo") + 1
    assert line == subject_line
    assert rule == "RFC 3261 §25.1 TEXT-UTF8"


def test_htab_and_utf8_remain_valid() -> None:
    data = BASE.replace(b"Subject: hello", b"Subject: he\tllo \xc3\xa9t\xc3\xa9")
    msg = parse_message(data)
    assert msg.headers.get("Subject") == "he\tllo été"


@pytest.mark.parametrize("name", parser._SINGLE)
def test_duplicated_single_instance_header_is_refused(name: str) -> None:
    values = {
        "Call-ID": "x@y",
        "CSeq": "1 OPTIONS",
        "From": "<sip:a@b>;tag=1",
        "To": "<sip:u@example.com>",
        "Max-Forwards": "70",
        "Content-Length": "0",
    }
    value = values.get(name, "1")
    data = BASE.replace(b"X-Note: a\r\n", f"{name}: {value}\r\n{name}: {value}\r\n".encode())
    rule, _, status = _both(data)
    assert status == 400 and rule in ("RFC 3261 §7.3.1", "RFC 3261 §20.14")


def test_single_instance_once_is_fine() -> None:
    for name in parser._SINGLE:
        if name.lower() in ("call-id", "cseq", "from", "to", "max-forwards", "content-length"):
            continue
        if name == "Subject":
            continue  # BASE already has one
        data = BASE.replace(b"X-Note: a\r\n", f"{name}: 1\r\n".encode())
        assert parse_message(data).headers.get(name) == "1"


@pytest.mark.parametrize(
    "display",
    ['"a" "b"', "bank@evil", "a;b", 'x"y', "<x>", '"\\', "a,b"],
)
def test_malformed_display_names_are_refused(display: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_name_addr(f"{display} <sip:a@example.com>")
    assert info.value.rule.startswith("RFC 3261 §25.1")


@pytest.mark.parametrize(
    ("display", "expected"),
    [
        ('"J. \\"Bob\\" User"', '"J. \\"Bob\\" User"'),
        ("Jörg Müller", "Jörg Müller"),
        ("token1~` token2'+_", "token1~` token2'+_"),
        ('"tab\tinside"', '"tab\tinside"'),
    ],
)
def test_wellformed_display_names_are_kept(display: str, expected: str) -> None:
    assert parse_name_addr(f"{display} <sip:a@example.com>").display == expected


def test_lenient_mode_still_reads_control_characters() -> None:
    """Analysis tools see what was sent; only strict (edge) mode refuses."""
    data = BASE.replace(b"Subject: hello", b"Subject: a\x00b")
    assert parse_message(data, strict=False).headers.get("Subject") == "a\x00b"


@pytest.mark.parametrize("bad", ["x\r\nVia: SIP/2.0/UDP evil", "x\nX-Evil: 1", "x\r"])
def test_serialization_refuses_header_injection(bad: str) -> None:
    msg = parse_message(BASE)
    evil = msg.replace(headers=msg.headers.append("Subject", bad))
    with pytest.raises(LocalProtocolError, match="Subject"):
        bytes(evil)


def test_serialization_refuses_injected_reason_phrase() -> None:
    from callward.sip.message import make_response

    msg = parse_message(BASE)
    resp = make_response(msg, 400, "Bad\r\nX-Evil: 1")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="start line"):
        bytes(resp)


def test_injection_guard_accepts_ordinary_messages() -> None:
    msg = parse_message(BASE)
    h = Headers([("Subject", "ok"), ("X-A", "b\tc")])
    assert bytes(msg.replace(headers=h)).count(b"\r\n") == 5


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(
    st.text(alphabet=st.characters(max_codepoint=0x10FFFF, exclude_categories=["Cs"]), max_size=40)
)
def test_any_value_is_refused_iff_it_holds_a_forbidden_control(value: str) -> None:
    value = value.replace("\r", "").replace("\n", "")
    data = BASE.replace(b"Subject: hello", b"Subject: " + value.encode())
    bad = any(ord(ch) in FORBIDDEN for ch in value)
    if bad:
        rule, _, _ = _both(data)
        assert rule == "RFC 3261 §25.1 TEXT-UTF8"
    else:
        msg = parse_message(data)
        assert msg.headers.get("Subject") == value.strip(" \t")


@_FUZZ
@given(
    st.sampled_from(["From", "To"]),
    st.text(alphabet=st.sampled_from('ab \t"\\<>;@,\x00\x1b\x07é'), max_size=16),
)
def test_display_names_parse_or_fail_cleanly_and_agree(where: str, display: str) -> None:
    field = b"From: <sip:caller@example.net>;tag=8814" if where == "From" else b"To: <sip:callee"
    new = (
        f"From: {display} <sip:caller@example.net>;tag=8814"
        if where == "From"
        else f"To: {display} <sip:callee"
    )
    data = BASE.replace(field, new.encode())
    try:
        ref = parser._parse_pure(data, True, parser.DEFAULT_LIMITS)
    except SipParseError:
        _both(data)
        return
    msg = parse_message(data)
    assert msg == ref
    shown = (msg.from_ if where == "From" else msg.to).display or ""
    assert not any(ord(ch) in FORBIDDEN for ch in shown)
