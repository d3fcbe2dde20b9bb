"""edge/stir.py without sockets: only allowed x5u URLs are fetched (no SSRF), the certificate
cache is bounded, unsigned calls between non-numbers are left alone, and hostile Identity
headers plus hostile fetched bytes never raise out of the call path (hypothesis)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.edge import stir as stir_mod
from callward.edge.stir import FetchCertificate, StirPolicy, StirShaken
from callward.errors import StoreError
from callward.sip import Request, parse_message

KEY = ec.generate_private_key(ec.SECP256R1())
_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root")])
ROOT = (
    x509.CertificateBuilder().subject_name(_NAME).issuer_name(_NAME).public_key(KEY.public_key())
    .serial_number(1).not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(KEY, hashes.SHA256())
)  # fmt: skip


def _invite(identity: str | None, frm: str = "sip:+12125551000@x") -> Request:
    extra = f"Identity: {identity}\r\n" if identity is not None else ""
    msg = parse_message(
        (
            "INVITE sip:+12125550100@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            f"Max-Forwards: 70\r\nFrom: <{frm}>;tag=1\r\nTo: <sip:+12125550100@y>\r\n"
            f"Call-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        ).encode(),
        strict=False,
    )
    assert isinstance(msg, Request)
    return msg


def _run(gen, answer=lambda q: b""):  # type: ignore[no-untyped-def]
    asked = []
    try:
        q = next(gen)
        while True:
            asked.append(q)
            a = answer(q)
            q = gen.throw(a) if isinstance(a, BaseException) else gen.send(a)
    except StopIteration as stop:
        return stop.value, asked


def test_only_allowed_urls_are_fetched_and_failures_mark_failed() -> None:
    s = StirShaken(StirPolicy(roots=(ROOT,), x5u_prefixes=("https://sti.example/",)))
    out, asked = _run(s.process(_invite("abc;info=<http://169.254.169.254/latest>;alg=ES256;ppt=shaken"),
                                authenticated=False, trusted=True, tenant="t", outbound=False,
                                now=1.9e9))  # fmt: skip
    assert asked == [] and "TN-Validation-Failed" in (out.headers.get("From") or "")
    url = "https://sti.example/c.pem"
    out, asked = _run(s.process(_invite(f"a.b.c;info=<{url}>;alg=ES256;ppt=shaken"),
                                authenticated=False, trusted=True, tenant="t", outbound=False,
                                now=1.9e9), answer=lambda q: StoreError("timeout"))  # fmt: skip
    assert asked == [FetchCertificate(url)] and "TN-Validation-Failed" in out.headers.get("From")


def test_certificate_cache_is_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(stir_mod, "CACHE_SIZE", 3)
    s = StirShaken(StirPolicy(roots=(ROOT,)))
    for i in range(10):
        s._store(f"https://x/{i}", b"pem", 0.0)
    assert list(s._cache) == ["https://x/7", "https://x/8", "https://x/9"]
    assert not s._fresh("https://x/9", 3601.0)


def test_calls_between_non_numbers_are_not_signed() -> None:
    s = StirShaken(StirPolicy(signer_key=KEY, x5u="https://sti.example/c.pem"))
    req = _invite(None, frm="sip:alice@x")
    assert s.sign(req, tenant="t", from_trunk=False, now=1.9e9) is req and s.signed == 0
    signed = s.sign(_invite(None), tenant="t", from_trunk=False, now=1.9e9)
    assert signed.headers.get("Identity") and s.signed == 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.binary(max_size=300))
def test_hostile_identity_and_bytes_never_raise(identity: str, fetched: bytes) -> None:
    value = identity.replace("\r", "").replace("\n", "")
    s = StirShaken(StirPolicy(roots=(ROOT,), x5u_prefixes=("",)))  # allow every URL here
    out, _ = _run(
        s.process(_invite(value or "x"), authenticated=False, trusted=True, tenant="t",
                  outbound=False, now=1.9e9),
        answer=lambda q: fetched,
    )  # fmt: skip
    assert isinstance(out, Request)
    assert "TN-Validation-Failed" in (out.headers.get("From") or "")
