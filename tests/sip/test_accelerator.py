"""The C accelerator (src/callward/sip/_speedups.c) against the pure parser, its reference.

Differential: for every input, the accelerator must either return a message equal to the pure
parser's (same start line, headers, body, typed Via/From/To/CSeq/Contact values, same cache), or
return None so that the pure parser decides; it must never accept what the pure parser rejects.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callward.errors import SipParseError
from callward.sip import ParseLimits, parse_message, parser

from .test_fuzz import mutated, valid_request
from .torture_cases import INVALID, VALID

ROOT = Path(__file__).resolve().parents[2]


def _load_mix() -> list[bytes]:
    """The benchmark's message mix, loaded by path (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "callward_bench_sip_messages", ROOT / "benchmarks" / "sip_messages.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.MIX)


MIX = _load_mix()

pytestmark = pytest.mark.skipif(
    not parser.ACCELERATED,
    reason="why: C accelerator not built (needs a C compiler and python3-dev) "
    "or CALLWARD_PURE_PYTHON is set",
)

LIMITS = parser.DEFAULT_LIMITS
TIGHT = ParseLimits(max_message_bytes=600, max_headers=8, max_header_bytes=80, max_body_bytes=50)


def _snapshot(msg: object) -> tuple[object, ...]:
    """Everything observable: equality, bytes, repr of fields, typed views and their cache."""
    cache = dict(msg._cache)  # type: ignore[attr-defined]
    return (
        type(msg),
        msg,
        bytes(msg),  # type: ignore[call-overload]
        repr(msg),
        msg.headers._index,  # type: ignore[attr-defined]
        sorted(cache),
        [repr(cache[k]) for k in sorted(cache)],
    )


def check(data: bytes, limits: ParseLimits = LIMITS) -> bool:
    """Compare both implementations on one input; True when the accelerator answered."""
    assert parser._accelerated_parse is not None
    fast = parser._accelerated_parse(data, limits)
    try:
        ref = parser._parse_pure(data, True, limits)
    except SipParseError as exc:
        assert fast is None, f"accelerator accepted what the reference rejects: {exc.rule}"
        with pytest.raises(SipParseError) as info:
            parse_message(data, limits=limits)
        assert (info.value.rule, info.value.status_hint, info.value.line) == (
            exc.rule,
            exc.status_hint,
            exc.line,
        )
        return False
    if fast is None:
        return False
    assert _snapshot(fast) == _snapshot(ref)
    # typed views read through the public properties agree as well
    for attr in ("vias", "from_", "to", "cseq", "call_id", "contacts", "max_forwards"):
        assert getattr(fast, attr) == getattr(ref, attr), attr
    # lenient mode also takes the accelerator's answer: it must read the message the same way
    lenient = parser._parse_pure(data, False, limits)
    assert _snapshot(lenient)[:5] == _snapshot(fast)[:5]
    for attr in ("vias", "from_", "to", "cseq", "call_id", "contacts", "max_forwards"):
        assert getattr(lenient, attr) == getattr(fast, attr), attr
    return True


def test_benchmark_mix_takes_the_fast_path() -> None:
    """The figures in docs/benchmarks.md measure the compiled path, not the fallback."""
    assert all(check(data) for data in MIX)


@pytest.mark.parametrize(("name", "data"), VALID, ids=[c[0] for c in VALID])
def test_valid_torture_messages_agree(name: str, data: bytes) -> None:
    check(data)
    check(data, TIGHT)


@pytest.mark.parametrize(("name", "data", "status"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_torture_messages_agree(name: str, data: bytes, status: int) -> None:
    check(data)


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(valid_request())
def test_generated_requests_agree(data: bytes) -> None:
    check(data)


@_FUZZ
@given(mutated())
def test_mutated_messages_agree(data: bytes) -> None:
    check(data)
    check(data, TIGHT)


@_FUZZ
@given(st.sampled_from(MIX), st.data())
def test_mutated_mix_agrees(seed: bytes, data: st.DataObject) -> None:
    """Byte-level mutations of the realistic mix, which sits inside the fast subset."""
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            buf[pos] = data.draw(st.sampled_from(b' \t\r\n:;,<>"@%=?&[]\\/.-_*!0aZ\x00\x7f\xc3'))
        elif op == "insert":
            buf[pos:pos] = data.draw(
                st.sampled_from(
                    [b" ", b";", b";x", b"=", b"%4", b"%41", b":", b"@", b"..", b"\r\n"]
                )
            )
        else:
            del buf[pos : pos + data.draw(st.integers(1, 3))]
    check(bytes(buf))


# Pieces chosen around the grammar's edges: usually a valid form, sometimes a character or form
# that the grammar (or the accelerator's subset) just misses, so both answers get exercised.
def mostly(good: list[str] | st.SearchStrategy[str], bad: list[str]) -> st.SearchStrategy[str]:
    good_s = st.sampled_from(good) if isinstance(good, list) else good
    edge = st.one_of(
        st.sampled_from(bad), st.text(alphabet="aZ09-_.!~*'()&=+$,;?/%:@[]<> \"\\", max_size=8)
    )
    return st.sampled_from(range(8)).flatmap(lambda i: edge if i == 7 else good_s)


_USER = mostly(st.from_regex(r"[a-zA-Z0-9+_.!~*'()&=$,;?/-]{1,8}(%4[0-9A-F])?", fullmatch=True),
               ["", "a%4", "a%zz", "a@b", "a:b:c", "a b", "a\tb"])  # fmt: skip
_HOST = mostly(
    st.from_regex(r"[a-z0-9]([a-z0-9_-]{0,4}[a-z0-9])?(\.[a-z0-9]{1,5}){0,3}\.?", fullmatch=True)
    | st.sampled_from(["[2001:db8::1]", "192.0.2.1", "a_b.example"]),
    ["[::1", "[]", "-a", "a-", "a..b", ".a", "a b", "[::1]x", ""],
)
_PORT = mostly(["", ":5060", ":0", ":65535", ":00001"], [":65536", ":123456", ":", ": 5060", ":x"])
_PARAM = mostly(
    [";lr", ";transport=udp", ";tag=a1", ";maddr=[::1]", ";a=%41", ";ob", ";user=phone"],
    [";x=", ";=x", ";;", "; tag=1", ';x="q"', ";a=%4", ";x=[::1", ";", ";a b"],
)
_PARAMS = st.lists(_PARAM, max_size=3).map("".join)
_DISPLAY = mostly(
    ["", '"Alice" ', '"A \\"q\\" B" ', "Bob Smith ", "Bob", '""'],
    ['"x', "<", '"a\\', "a:b ", '"a"b '],
)


_CALL_ID = mostly(["abc@h", "x"], ["a b", "", "a\tb"])


@st.composite
def edge_request(draw: st.DrawFn) -> bytes:
    user = draw(_USER)
    host = draw(_HOST)
    scheme = draw(mostly(["sip", "sips"], ["SIP", "tel", "sip:", ""]))
    uri = f"{scheme}:{user}@{host}{draw(_PORT)}{draw(_PARAMS)}"
    if draw(st.booleans()):
        uri = f"{scheme}:{host}{draw(_PORT)}{draw(_PARAMS)}"
    if draw(st.sampled_from(range(10))) == 9:
        uri += draw(st.sampled_from(["?subject=x", "?a=b&c=", "?", "?x"]))
    method = draw(mostly(["INVITE", "REGISTER", "OPTIONS", "X-Y"], ["INV ITE", "", "A:B"]))
    via_sep = draw(mostly([" "], ["  ", " / ", "\t", "", " :"]))
    vias = f"SIP/2.0/{draw(mostly(['UDP', 'tcp', 'TLS'], ['', 'U/D']))}{via_sep}{draw(_HOST)}"
    vias += draw(_PORT) + ";branch=z9hG4bK" + draw(mostly(["1", "a.b"], ["", " x", "="]))
    vias += draw(_PARAMS)
    if draw(st.booleans()):
        vias += draw(mostly([", SIP/2.0/TCP h2", ",SIP/2.0/UDP h3:1;rport"], [",", ", ", ",x"]))
    contact = f"{draw(_DISPLAY)}<{uri}>{draw(_PARAMS)}"
    if draw(st.sampled_from(range(4))) == 3:
        contact = f"{uri}{draw(_PARAMS)}"  # addr-spec: the URI's parameters are the header's
    if draw(st.booleans()):
        contact += draw(mostly([f", <sip:{draw(_HOST)}>", ",<sip:x@y>;q=1"], [", *", ",", ", x"]))
    cseq = draw(mostly(["1", "0009", "2147483647"], ["2147483648", "12345678901", " 1", "1x"]))
    clen_ok = draw(st.sampled_from(range(8))) != 7
    body = draw(st.sampled_from([b"", b"v=0\r\n"]))
    lines = [
        f"{method} {uri} SIP/2.0",
        f"{draw(st.sampled_from(['Via', 'v', 'VIA']))}: {vias}",
        f"From: {draw(_DISPLAY)}<sip:{draw(_USER)}@{draw(_HOST)}>{draw(_PARAMS)}",
        f"t: <{uri}>",
        f"Call-ID: {draw(_CALL_ID)}",
        f"CSeq: {cseq} {draw(mostly([method], ['ACK', '']))}",
        f"Max-Forwards: {draw(mostly(['70', '0', '255', '00070'], ['256', 'x', '']))}",
        f"{draw(st.sampled_from(['Contact', 'm']))}: {contact}",
        f"l: {len(body) if clen_ok else draw(st.sampled_from(['99', '', '1 ', 'x']))}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@_FUZZ
@given(edge_request())
def test_edge_requests_agree(data: bytes) -> None:
    check(data)


@st.composite
def edge_response(draw: st.DrawFn) -> bytes:
    status = draw(mostly(["200 OK", "100", "180 Ringing", "200  OK", "401 Un\tauthorized",
                          "200 Ökay ☎"],
                         ["099 x", "700 x", "20 OK", "200OK", "486 \x01", "2000 OK",
                          "200 a\u0085", "200 \x7f"]))  # fmt: skip
    version = draw(mostly(["SIP/2.0"], ["sip/2.0", "SIP/2.1", "SIP/2.0 ", "SIP/20"]))
    head = (
        f"{version} {status}\r\n"
        f"Via: SIP/2.0/UDP {draw(_HOST)}{draw(_PORT)};branch=z9hG4bKx{draw(_PARAMS)}\r\n"
        f"From: <sip:a@{draw(_HOST)}>;tag=1\r\nTo: {draw(_DISPLAY)}<sip:b@h>{draw(_PARAMS)}\r\n"
        f"Call-ID: c@h\r\nCSeq: 1 INVITE\r\n"
    )
    extra = draw(
        mostly(["", "X-Odd :  v  \r\n", "x-a:\r\n"], ["Content-Length: 0\r\n", "To: <sip:x@y>\r\n"])
    )
    return (head + extra + "Content-Length: 0\r\n\r\n").encode()


@_FUZZ
@given(edge_response())
def test_edge_responses_agree(data: bytes) -> None:
    check(data)


_TEMPLATE = (
    "{method} {scheme}:{user}@{host}{port}{uparams} {version}\r\n"
    "Via: SIP/2.0/{transport}{via_sep}{host}{port};branch=z9hG4bK{branch}{params}{via2}\r\n"
    "From: {display}<sip:{user}@{host}>{params}\r\n"
    "To: <sip:b@h>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {cseq_method}\r\n"
    "Max-Forwards: {max_forwards}\r\nContact: {display}<sip:c@{host}{port}{uparams}>{params}{contact2}\r\n"
    "X-Note: {note}\r\nContent-Length: {clen}\r\n\r\nv=0\r\n"
)
_GOOD = {
    "method": "INVITE", "scheme": "sip", "user": "alice", "host": "example.com", "port": ":5060",
    "uparams": ";lr", "params": ";lr", "version": "SIP/2.0", "transport": "UDP", "via_sep": " ",
    "branch": "1",
    "via2": "", "display": '"A" ', "call_id": "abc@h", "cseq": "1", "cseq_method": "INVITE",
    "max_forwards": "70", "contact2": "", "clen": "5", "note": "hi",
}  # fmt: skip
_EDGES = {
    "method": ["INV ITE", "", "A:B", "X-Y", "invite"],
    "scheme": ["SIP", "sips", "tel", "Sip", "sip:"],
    "user": ["", "a%4", "a%zz", "a%41", "a@b", "a:b:c", "a:", "a:b", "+1;x=y?z/", "a b", "a\tb"],
    "host": ["[::1", "[]", "[::1]", "-a", "a-", "a..b", ".a", "a.", "a b", "[::1]x", "", "a_b",
             "0", "a.-b"],
    "port": [":65536", ":65535", ":123456", ":", ": 5060", ":x", ":0", ":00001", ""],
    "params": [";x=", ";=x", ";;", "; tag=1", ';x="q"', ";a=%4", ";x=[::1", ";", ";a b", "",
               ";a=%41;b", ";[x]=[y]",
               ';+sip.instance="<urn:uuid:1-2>"', ';m="a;b,c"', ';x="a\\"b"', ';x="open',
               ';x="a"b', ';x=""', ';x="a\\', ';reg-id=1;+sip.instance="<u>";ob',
               ';x="ü"', ";x=ü", ";tag=1\xa0", ";ü=1", ';x="\u2028"'],
    "uparams": [";x=", ";=x", ";;", "; tag=1", ';x="q"', ";a=%4", ";x=[::1", ";", "", ";a=%41;b",
                ";[x]=[y]", ";a=b=c", ";a%3d=1", ";=", ";a:b=/"],
    "version": ["sip/2.0", "SIP/2.1", "SIP/2.0 ", "SIP/20"],
    "transport": ["", "U/D", "tcp", "WSS"],
    "via_sep": ["  ", " / ", "\t", "", " :"],
    "branch": ["", " x", "=", "a.b", "[::1]"],
    "via2": [",", ", ", ",x", ", SIP/2.0/TCP h2", ",SIP/2.0/UDP h3:1;rport", ',"a,b"'],
    "display": ['"x', "<", '"a\\', "a:b ", '"a"b ', "", "Bob Smith ", '""', '"\\"" ',
                '"a<b" ', '"a>b" ', '"a\\"b" ', '"Jürgen" ', "Jürgen ", '"\xa0x" ', '"ü\\"" ',
                "\xa0"],
    "call_id": ["a b", "", "a\tb", "x", "é@h", "\xa0x", "x\xa0"],
    "note": ["ünïcode ☎", "\xa0", "", "\x00", "a\x7fb", "\u0085", "a\u2028b"],
    "cseq": ["2147483648", "2147483647", "12345678901", "1234567890", " 1", "1x", "0009", "1  "],
    "cseq_method": ["ACK", "", "invite"],
    "max_forwards": ["256", "255", "x", "", "0", "00070", "12345678901"],
    "contact2": [", *", ",", ", x", ",<sip:x@y>;q=1", ', "a" <sip:y@z>'],
    "clen": ["99", "", "1 ", "x", "0", "4", "12345678901"],
}  # fmt: skip


@pytest.mark.parametrize("field", sorted(_EDGES))
def test_single_field_edges_agree(field: str) -> None:
    """One field at a time set to each value at the edge of its grammar, the rest valid."""
    assert check(_TEMPLATE.format(**_GOOD).encode())
    for value in _EDGES[field]:
        check(_TEMPLATE.format(**{**_GOOD, field: value}).encode())


@pytest.mark.parametrize(
    ("first", "second"), [("display", "params"), ("contact2", "params"), ("via2", "params")]
)
def test_field_pairs_agree(first: str, second: str) -> None:
    """Interactions: a quoted display or a list split next to quoted parameter values."""
    for a in _EDGES[first]:
        for b in _EDGES[second]:
            check(_TEMPLATE.format(**{**_GOOD, first: a, second: b}).encode())


@pytest.mark.parametrize("junk", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc3\xa9", b"\xe2\x82"])
def test_header_bytes_that_are_not_utf8_agree(junk: bytes) -> None:
    """RFC 3261 §25: the header section is UTF-8; invalid sequences anywhere are rejected."""
    good = _TEMPLATE.format(**_GOOD).encode()
    for marker in (b"hi", b'"A"', b"INVITE\r\n", b"<sip:b"):
        check(good.replace(marker, marker[:1] + junk + marker[1:], 1))


_ADDR_SPECS = [
    "sip:sipp@127.0.0.1:5061", "sip:h", "sips:a@[2001:db8::1]:5061;expires=60", "sip:a@h;",
    "sip:a@h;transport=tcp;q=0.5", "sip:a@h;x=\"q r\"", "sip:a@h;x=\"q", "sip:a@h ;x",
    "sip:a b@h", "sip:a@h?subject=x", "tel:+15551234567", "sip:a@h;=x", "sip:a@h;x=[::1]",
    "sip:a@h, sip:b@h2;q=1", "sip:a@h, <sip:b@h>", "Bob sip:a@h", "sip:a@h>", "sip:a%41@h",
    "sip:a:pw@h:5060", "SIP:a@h", "sip:a@h;ü=1", "sip:a@-h", ";x", "sip:a@h;;",
]  # fmt: skip


@pytest.mark.parametrize("spec", _ADDR_SPECS)
def test_addr_spec_forms_agree(spec: str) -> None:
    """RFC 3261 §20.10 addr-spec without <> (SIPp's Contact): every header parameter after the
    first ';', in Contact, From and To."""
    good = _TEMPLATE.format(**_GOOD)
    check(good.replace('Contact: "A" <sip:c@example.com:5060;lr>;lr', f"Contact: {spec}").encode())
    check(good.replace("To: <sip:b@h>", f"To: {spec}").encode())
    check(good.replace('From: "A" <sip:alice@example.com>;lr', f"From: {spec};tag=1").encode())


def test_fast_path_covers_common_forms() -> None:
    """Forms a proxy sees all day must not fall back (which would only cost speed)."""
    base = (
        "{start}\r\nVia: SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bK1;received=192.0.2.1;rport"
        "=5060, SIP/2.0/UDP p.example.net;branch=z9hG4bK2\r\nv: SIP/2.0/WSS h.invalid;branch="
        'z9hG4bK3\r\nFrom: Bob <sips:bob%40x@example.com;user=phone>;tag=1\r\nt: "A\\"B" '
        "<sip:+15551234567;phone-context=x@gw.example.com:5060;user=phone>\r\ni: abc\r\n"
        "CSeq: 7 {method}\r\nm: <sip:b@[::1]:5070;ob>;expires=60, <sip:c@h>;q=0.5\r\n"
        'Contact: <sip:d@192.0.2.4;transport=tcp>;reg-id=1;+sip.instance="<urn:uuid:0-1>"\r\n'
        'Record-Route: "a<b" <sip:p.example.net;lr>\r\n'
        "X-Custom-Header:  spaced value  \r\nl: 2\r\n\r\nok"
    )
    for start, method in (
        ("OPTIONS sip:alice:secret@example.com;maddr=[::1] SIP/2.0", "OPTIONS"),
        ("SIP/2.0 486 Busy Here", "INVITE"),
        ("SIP/2.0 200", "BYE"),
    ):
        assert check(base.format(start=start, method=method).encode()), start
    # SIPp's built-in scenarios: a bare addr-spec Contact (RFC 3261 §20.10)
    sipp = base.replace("m: <sip:b@[::1]:5070;ob>;expires=60, <sip:c@h>;q=0.5", "m: sip:s@h:5061")
    assert check(sipp.format(start="ACK sip:service@h:5060 SIP/2.0", method="ACK").encode())


def test_pure_python_is_forced_by_environment() -> None:
    """CALLWARD_PURE_PYTHON=1 at import keeps the accelerator out (and parses the same)."""
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); from sip_messages import MIX\n"
        "from callward.sip import parser\n"
        "print(parser.ACCELERATED, [repr(parser.parse_message(d)) for d in MIX] == "
        "[repr(parser._parse_pure(d, True, parser.DEFAULT_LIMITS)) for d in MIX])"
    )
    env = {**os.environ, "CALLWARD_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
    assert parser._accelerated_parse is not None
    assert Path(parser.__file__).with_name("_speedups.c").exists()


def test_limits_are_read_per_call_unless_frozen() -> None:
    """Only a (frozen) ParseLimits is cached by identity; another limits object may change."""

    class Mutable:
        max_message_bytes = 65535
        max_headers = 256
        max_header_bytes = 8192
        max_body_bytes = 60000

    limits = Mutable()
    assert check(MIX[0], limits)  # type: ignore[arg-type]
    limits.max_headers = 3
    assert not check(MIX[0], limits)  # type: ignore[arg-type]
    with pytest.raises(SipParseError) as info:
        parse_message(MIX[0], limits=limits)  # type: ignore[arg-type]
    assert info.value.rule == "limit max_headers"
