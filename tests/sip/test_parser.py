"""Parser behaviour on our RFC 4475-style torture catalogue, limits, framing and round trips."""

from __future__ import annotations

import pytest

from callward.errors import SipParseError
from callward.sip import (
    AbsoluteURI,
    ParseLimits,
    Request,
    Response,
    SipURI,
    TelURI,
    frame_stream,
    parse_message,
    serialize,
)

from .torture_cases import INVALID, VALID, m, req


@pytest.mark.parametrize(("name", "data"), VALID, ids=[c[0] for c in VALID])
def test_valid_torture_messages_parse_and_round_trip(name: str, data: bytes) -> None:
    msg = parse_message(data)
    again = parse_message(bytes(msg))
    # Semantically identical: same start line, same headers in the same order, same body;
    # only Content-Length may be added (we always frame, §20.14).
    assert semantic(again) == semantic(msg), name
    assert bytes(again) == bytes(msg)


def semantic(msg: Request | Response) -> tuple[object, ...]:
    headers = [(n, v) for n, v in msg.headers if n != "Content-Length"]
    return (msg.start_line(), headers, msg.body)


@pytest.mark.parametrize(("name", "data", "status"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_torture_messages_are_rejected(name: str, data: bytes, status: int) -> None:
    if status == 0:  # parses; the bad header fails when the typed value is read
        msg = parse_message(data)
        with pytest.raises(SipParseError):
            _ = msg.expires
        return
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    err = info.value
    assert err.status_hint == status
    assert err.rule, "every rejection names the grammar rule"
    assert "\n" not in err.reason_phrase and len(err.reason_phrase) < 200


def test_tortuous_message_values() -> None:
    msg = parse_message(dict(VALID)["tortuous-whitespace"])
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert isinstance(msg.uri, SipURI) and msg.uri.has_param("unknownparam")
    assert msg.to.tag == "1918181833n"
    assert msg.from_.tag == "98asjd8"
    assert msg.from_.display == '"J Rosenberg \\\\\\""'
    assert msg.max_forwards == 68
    assert msg.cseq.seq == 9 and msg.cseq.method == "INVITE"
    assert [v.host for v in msg.vias] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert msg.vias[0].rport == "" and msg.vias[0].branch == "390skdjuw"
    assert msg.vias[2].branch == "z9hG4bK30239"
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("Subject") == ""
    (contact,) = msg.contacts
    assert contact.param("q") == "0.33" and contact.param("secondparam") == ""


def test_wide_tokens_and_passwords() -> None:
    msg = parse_message(dict(VALID)["wide-token-method"])
    assert isinstance(msg, Request)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(msg.uri, SipURI)
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.from_.display == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.max_forwards == 255


def test_escapes_kept_verbatim_and_compared_unescaped() -> None:
    msg = parse_message(dict(VALID)["escaped-user-and-params"])
    assert isinstance(msg, Request) and isinstance(msg.uri, SipURI)
    assert msg.uri.user == "sips%3Auser%40example.com"
    assert msg.uri.user_unescaped == "sips:user@example.com"
    contact = msg.contacts[0].sip_uri
    assert contact.equivalent(
        SipURI("192.0.2.1", "caller", port=5060, params=(("lr", None), ("name", "value")))
    )
    assert b"sip:cal%6Cer@192.0.2.1" in bytes(msg)


def test_other_uri_kinds() -> None:
    opaque = parse_message(dict(VALID)["unknown-uri-scheme"])
    assert isinstance(opaque, Request) and isinstance(opaque.uri, AbsoluteURI)
    tel = parse_message(dict(VALID)["tel-request-uri"])
    assert isinstance(tel, Request) and isinstance(tel.uri, TelURI)
    assert tel.uri.is_global and tel.uri.param("phone-context") == "example.com"
    v6 = parse_message(dict(VALID)["ipv6-everywhere"])
    assert isinstance(v6, Request) and isinstance(v6.uri, SipURI)
    assert v6.uri.host == "[2001:db8::10]" and v6.uri.port == 5070
    assert v6.top_via.received == "[2001:db8::9:255]"


def test_datagram_body_truncated_to_content_length() -> None:
    msg = parse_message(dict(VALID)["extra-bytes-after-content-length"])
    assert msg.body == b"v=0"


def test_responses() -> None:
    msg = parse_message(dict(VALID)["empty-reason-phrase"])
    assert isinstance(msg, Response) and msg.status == 100 and msg.reason == ""
    uni = parse_message(dict(VALID)["unusual-reason-phrase"])
    assert isinstance(uni, Response) and uni.reason.startswith("= 2**3 * 5**2 но")


def test_multi_value_headers_split_outside_quotes() -> None:
    msg = parse_message(dict(VALID)["many-vias-and-long-values"])
    assert len(msg.vias) == 41
    contacts = msg.contacts
    assert [c.display for c in contacts] == ['"First, Last"', None]
    assert contacts[1].param("q") == "0.5"


def test_lenient_mode_accepts_common_breakage() -> None:
    bare_lf = req("OPTIONS sip:u@example.com SIP/2.0").replace(b"\r\n", b"\n")
    msg = parse_message(bare_lf, strict=False)
    assert isinstance(msg, Request) and msg.call_id == "torture.1@192.0.2.1"
    spaces = req("INVITE  sip:user@example.com  SIP/2.0", "", "1 INVITE")
    assert isinstance(parse_message(spaces, strict=False), Request)
    latin1 = req("OPTIONS sip:u@example.com SIP/2.0", "Subject: caf\xe9\n").replace(
        "é".encode(), b"\xe9"
    )
    assert parse_message(latin1, strict=False).headers.get("Subject") == "café"
    no_call_id = req("OPTIONS sip:u@example.com SIP/2.0").replace(
        b"Call-ID: torture.1@192.0.2.1\r\n", b""
    )
    assert "Call-ID" not in parse_message(no_call_id, strict=False).headers


@pytest.mark.parametrize(
    ("limits", "data", "rule"),
    [
        (
            ParseLimits(max_message_bytes=300),
            req("OPTIONS sip:u@example.com SIP/2.0", "X: " + "a" * 300 + "\n"),
            "max_message_bytes",
        ),
        (
            ParseLimits(max_headers=8),
            req("OPTIONS sip:u@example.com SIP/2.0", "X: 1\nY: 2\nZ: 3\n"),
            "max_headers",
        ),
        (
            ParseLimits(max_header_bytes=100),
            req("OPTIONS sip:u@example.com SIP/2.0", "X: " + "a" * 200 + "\n"),
            "max_header_bytes",
        ),
        (
            ParseLimits(max_body_bytes=10),
            req("MESSAGE sip:u@example.com SIP/2.0", "", "1 MESSAGE", body="x" * 50),
            "max_body_bytes",
        ),
    ],
    ids=["message", "headers", "header-bytes", "body"],
)
def test_limits_are_enforced(limits: ParseLimits, data: bytes, rule: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data, limits=limits)
    assert rule in info.value.rule
    assert info.value.status_hint in (400, 413, 513)


def test_headers_editing_and_canonical_output() -> None:
    msg = parse_message(dict(VALID)["odd-case-names"])
    out = bytes(msg)
    for name in (b"Via:", b"From:", b"To:", b"Call-ID:", b"CSeq:", b"Content-Length: 0"):
        assert name in out
    h = msg.headers.prepend("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1")
    first, rest = h.pop_first_value("v")
    assert first is not None and "proxy.example.com" in first
    assert rest == msg.headers
    compact = serialize(msg, compact=True)
    assert b"\r\nv: " in compact and b"\r\ni: casey@x" in compact
    assert semantic(parse_message(compact)) == semantic(msg)


def test_unknown_headers_keep_order() -> None:
    data = req("OPTIONS sip:u@example.com SIP/2.0", "X-B: 2\nX-A: 1\nX-B: 3\n")
    msg = parse_message(data)
    names = [n for n, _ in msg.headers]
    assert names.index("X-B") < names.index("X-A")
    assert msg.headers.get_lines("x-b") == ["2", "3"]


class TestStreamFraming:
    def test_pipelined_and_partial(self) -> None:
        one = req("OPTIONS sip:u@example.com SIP/2.0")
        two = req("MESSAGE sip:u@example.com SIP/2.0", "", "2 MESSAGE", body="hello")
        stream = b"\r\n\r\n" + one + two
        got = []
        buf = bytearray()
        for i in range(0, len(stream), 7):  # 7-byte reads: every boundary lands mid-token
            buf += stream[i : i + 7]
            while True:
                frame, used = frame_stream(buf)
                del buf[:used]
                if frame is None:
                    break
                got.append(parse_message(frame))
        assert [type(x) for x in got] == [Request, Request]
        assert got[1].body == b"hello"
        assert not buf

    def test_missing_content_length_on_stream_is_fatal(self) -> None:
        data = m("OPTIONS sip:u@example.com SIP/2.0\nCall-ID: x\n\n")
        with pytest.raises(SipParseError):
            frame_stream(data)

    def test_oversized_header_section_is_fatal(self) -> None:
        with pytest.raises(SipParseError):
            frame_stream(b"OPTIONS sip:x SIP/2.0\r\n" + b"X: y\r\n" * 20000)


def test_accelerator_is_built_where_a_toolchain_exists() -> None:
    """setup.py compiles src/callward/sip/_speedups.c when a C compiler and Python.h exist
    (Debian: python3-dev); `pip install -e .` must then put it in use. Without them the pure
    parser is used, which is correct but ~9x slower (docs/benchmarks.md)."""
    import os
    import shutil
    import sysconfig
    from pathlib import Path

    from callward.sip import parser

    if os.environ.get("CALLWARD_PURE_PYTHON", "") not in ("", "0"):
        pytest.skip("why: CALLWARD_PURE_PYTHON is set")
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if shutil.which(cc) is None or not header.exists():
        pytest.skip(f"why: no C compiler ({cc}) or no {header} (install python3-dev)")
    assert parser.ACCELERATED, (
        "a C toolchain is present but callward.sip._speedups is not in use: "
        "reinstall with `.venv/bin/pip install -e .` to build it"
    )
