"""Redaction processor: identifiers produced by independent references (phonenumbers example
numbers, the ipaddress module) must never survive, whatever text surrounds them."""

from __future__ import annotations

import ipaddress
import json

import phonenumbers
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.privacy.pseudonym import Pseudonymizer
from callward.privacy.redact import RedactProcessor, redact_text

REGIONS = ["DE", "US", "GB", "FR", "IN", "BR", "JP", "NG", "AU", "ZA"]
E164 = [
    phonenumbers.format_number(
        phonenumbers.example_number_for_type(r, phonenumbers.PhoneNumberType.MOBILE),
        phonenumbers.PhoneNumberFormat.E164,
    )
    for r in REGIONS
]
INTL = [
    phonenumbers.format_number(
        phonenumbers.example_number_for_type(r, phonenumbers.PhoneNumberType.MOBILE),
        phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    )
    for r in REGIONS
]
filler = st.text(alphabet="abcdefghij XYZ=,:;()[]{}-_/\t", max_size=20)


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


@settings(max_examples=200, deadline=None)
@given(filler, st.sampled_from(E164 + INTL), filler)
def test_numbers_never_survive(pre: str, number: str, post: str) -> None:
    out = redact_text(f"{pre} {number} {post}")
    assert _digits(number)[-7:] not in _digits(out)


@settings(max_examples=200, deadline=None)
@given(filler, st.ip_addresses(), filler, st.integers(1, 65535))
def test_ip_addresses_never_survive(pre: str, ip, post: str, port: int) -> None:
    text = str(ip)
    literal = f"[{text}]:{port}" if ip.version == 6 else f"{text}:{port}"
    out = redact_text(f"{pre} {literal} {post}")
    assert text not in out
    if ip.version == 6:
        assert ip.exploded not in out


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(E164), st.sampled_from(["sip", "sips", "tel"]))
def test_uris_never_survive(number: str, scheme: str) -> None:
    uri = f"{scheme}:{number}@10.1.2.3;user=phone" if scheme != "tel" else f"tel:{number}"
    out = redact_text(f'To: <{uri}>;tag=1 From: "Bob" <sip:bob@example.com>')
    assert number not in out and "bob@example.com" not in out


def test_times_and_versions_survive() -> None:
    text = "at 12:30:45 took 125 ms version 1.2.3 port 5060 status 486"
    assert redact_text(text) == text


def test_imsi_and_processor_on_nested_values() -> None:
    proc = RedactProcessor()
    ev = proc(
        None,
        "info",
        {
            "event": "reg from imsi 262011234567890 at 192.0.2.1",
            "caller": "sip:+4915112345678@x",
            "extra": {"peers": ["2001:db8::1", "198.51.100.7"], "n": 3},
        },
    )
    blob = json.dumps(ev)
    for secret in ("262011234567890", "192.0.2.1", "4915112345678", "2001:db8::1", "198.51.100"):
        assert secret not in blob
    assert ev["extra"]["n"] == 3


def test_structlog_pipeline_with_pseudonyms_is_linkable() -> None:
    lines: list[str] = []

    class Sink:
        def msg(self, line: str) -> None:
            lines.append(line)

        info = msg

    log = structlog.wrap_logger(
        Sink(),
        processors=[RedactProcessor(Pseudonymizer(b"k" * 32)), structlog.processors.JSONRenderer()],
    )
    log.info("call", caller="sip:+4915112345678@a.example")
    log.info("call", caller="tel:+49-151-12345678")
    one, two = (json.loads(x)["caller"] for x in lines)
    assert one == two and "4915112345678" not in lines[0]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000))
def test_never_crashes(text: str) -> None:
    out = redact_text(text)
    assert isinstance(out, str)
    for tok in out.split():
        try:
            ip = ipaddress.ip_address(tok.strip("[](),;"))
        except ValueError:
            continue
        assert ip is None, f"address {ip} survived"
