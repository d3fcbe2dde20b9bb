"""STIR/SHAKEN (sip/passport.py, sip/stir_shaken.py): RFC vectors, our own STI-CA chain, an
independent JWS implementation (joserfc) as the cross-check, and fuzzing of the verifier."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callward.sip import parse_message
from callward.sip.message import Request
from callward.sip.passport import (
    PassportError,
    b64url_decode,
    b64url_encode,
    canonical_json,
    decode_passport,
    sign_passport,
)
from callward.sip.stir_shaken import (
    Attestation,
    ShakenSigner,
    ShakenVerifier,
    Verstat,
    attestation_for,
    mark_verstat,
    parse_identity,
)

NOW = 1_767_000_000.0  # 2025-12-29
X5U = "https://cert.example.org/passport.pem"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    days: tuple[float, float] = (-30, 365),
) -> x509.Certificate:
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    base = dt.datetime.fromtimestamp(NOW, dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(base + dt.timedelta(days=days[0]))
        .not_valid_after(base + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


class Pki:
    def __init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = make_cert("STI-CA Root", self.root_key, None, ca=True)
        self.inter_key = ec.generate_private_key(ec.SECP256R1())
        self.inter = make_cert(
            "STI-CA Intermediate", self.inter_key, ("STI-CA Root", self.root_key), ca=True
        )
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf = make_cert(
            "SP Callward", self.leaf_key, ("STI-CA Intermediate", self.inter_key), ca=False
        )

    def bundle(self, *certs: x509.Certificate) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


INVITE = (
    b"INVITE sip:+12125551213@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKs1\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:+1-215-555-1212@example.com;user=phone>;tag=a1\r\n'
    b"To: <tel:+12125551213>\r\n"
    b"Call-ID: stir-1@example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def invite() -> Request:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    return msg


def verifier(pki: Pki, bundle: bytes | None = None) -> ShakenVerifier:
    data = pki.bundle(pki.leaf, pki.inter) if bundle is None else bundle
    return ShakenVerifier([pki.root], lambda url: {X5U: data}[url])


def signed(pki: Pki, req: Request | None = None, now: float = NOW) -> Request:
    signer = ShakenSigner(pki.leaf_key, X5U)
    return signer.sign(req or invite(), attest=Attestation.FULL, now=now, origid="o-1")


# ---------------------------------------------------------------- RFC vectors
def test_rfc8225_appendix_a_serialization() -> None:
    """RFC 8225 Appendix A: the canonical header and payload encode to the RFC's strings."""
    header = {"alg": "ES256", "typ": "passport", "x5u": "https://cert.example.org/passport.cer"}
    claims = {"dest": {"uri": ["sip:alice@example.com"]}, "iat": 1471375418,
              "orig": {"tn": "12155551212"}}  # fmt: skip
    assert b64url_encode(canonical_json(header)) == (
        "eyJhbGciOiJFUzI1NiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0LmV4YW1wbGUub3JnL3Bhc3Nwb3J0LmNlciJ9"
    )
    assert b64url_encode(canonical_json(claims)) == (
        "eyJkZXN0Ijp7InVyaSI6WyJzaXA6YWxpY2VAZXhhbXBsZS5jb20iXX0sImlhdCI6MTQ3MTM3NTQxOCwib3JpZyI6eyJ0biI6IjEyMTU1NTUxMjEyIn19"
    )


def test_rfc8588_shaken_claims_layout(pki: Pki) -> None:
    """RFC 8588 §6 example claims, byte for byte in canonical form."""
    token = sign_passport(pki.leaf_key, x5u="https://cert.example.org/passport.cer",
                          orig_tn="12155551212", dest_tns=["12125551213"], iat=1443208345,
                          attest="A", origid="123e4567-e89b-12d3-a456-426655440000")  # fmt: skip
    h, c, _ = token.split(".")
    assert b64url_decode(c) == (
        b'{"attest":"A","dest":{"tn":["12125551213"]},"iat":1443208345,'
        b'"orig":{"tn":"12155551212"},"origid":"123e4567-e89b-12d3-a456-426655440000"}'
    )
    assert json.loads(b64url_decode(h)) == {
        "alg": "ES256", "ppt": "shaken", "typ": "passport",
        "x5u": "https://cert.example.org/passport.cer",
    }  # fmt: skip


def test_independent_jws_library_verifies_our_signature(pki: Pki) -> None:
    joserfc = pytest.importorskip("joserfc", reason="why: joserfc (independent JWS) missing")
    from joserfc import jws
    from joserfc.jwk import ECKey
    from joserfc.registry import HeaderParameter

    token = sign_passport(pki.leaf_key, x5u=X5U, orig_tn="1", dest_tns=["2"], iat=1,
                          attest="B", origid="x")  # fmt: skip
    pem = pki.leaf.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    registry = jws.JWSRegistry({"ppt": HeaderParameter("PASSporT extension", "str")})
    obj = jws.deserialize_compact(
        token, ECKey.import_key(pem), algorithms=["ES256"], registry=registry
    )
    assert json.loads(obj.payload)["attest"] == "B"
    assert joserfc is not None


# ---------------------------------------------------------------- sign + verify
def test_round_trip_passes_and_marks_verstat(pki: Pki) -> None:
    req = signed(pki)
    ident = parse_identity(req.headers.get("Identity") or "")
    assert ident.info == X5U and ident.alg == "ES256" and ident.ppt == "shaken"
    result = verifier(pki).verify(req, NOW + 5)
    assert result.verstat is Verstat.PASSED and result.attest == "A"
    marked = mark_verstat(req, result.verstat)
    assert marked.from_.sip_uri.param("verstat") == "TN-Validation-Passed"
    assert parse_message(bytes(marked)).from_.tag == "a1"


def test_no_identity_is_no_validation(pki: Pki) -> None:
    assert verifier(pki).verify(invite(), NOW).verstat is Verstat.NONE


def test_verstat_from_upstream_is_replaced(pki: Pki) -> None:
    req = invite()
    req = req.replace(headers=req.headers.set(
        "From", '<sip:+12155551212@example.com;verstat=TN-Validation-Passed>;tag=a1'))  # fmt: skip
    marked = mark_verstat(req, Verstat.FAILED)
    assert str(marked.from_.uri).count("verstat") == 1
    assert marked.from_.sip_uri.param("verstat") == "TN-Validation-Failed"


def _failure(pki: Pki, req: Request, now: float = NOW, **kw: object) -> tuple[int, str]:
    result = verifier(pki, **kw).verify(req, now)  # type: ignore[arg-type]
    assert result.verstat is Verstat.FAILED
    return result.status, result.reason


def test_stale_iat_is_refused(pki: Pki) -> None:
    assert _failure(pki, signed(pki), NOW + 61)[0] == 403
    assert _failure(pki, signed(pki), NOW - 61)[0] == 403


def test_orig_and_dest_must_match_after_normalisation(pki: Pki) -> None:
    req = signed(pki)
    spoofed = req.replace(headers=req.headers.set("From", "<sip:+12155550000@example.com>;tag=x"))
    assert "orig" in _failure(pki, spoofed)[1]
    other = req.replace(headers=req.headers.set("To", "<tel:+12125550000>"))
    assert "dest" in _failure(pki, other)[1]
    # the same numbers written differently still match
    same = req.replace(headers=req.headers.set("From", "<tel:+1.215.555.1212>;tag=a1"))
    assert verifier(pki).verify(same, NOW).verstat is Verstat.PASSED


def test_tampered_token_is_refused(pki: Pki) -> None:
    req = signed(pki)
    token = parse_identity(req.headers.get("Identity") or "").token
    h, c, s = token.split(".")
    claims = json.loads(b64url_decode(c))
    claims["attest"] = "A" if claims["attest"] != "A" else "B"
    forged = f"{h}.{b64url_encode(canonical_json(claims))}.{s};info=<{X5U}>;alg=ES256;ppt=shaken"
    bad = req.replace(headers=req.headers.set("Identity", forged))
    assert "signature" in _failure(pki, bad)[1]


@pytest.mark.parametrize("case", ["expired", "not-yet", "self-signed", "wrong-ca", "no-inter"])
def test_certificate_chain_problems_are_refused(pki: Pki, case: str) -> None:
    if case in ("expired", "not-yet"):
        days = (-400.0, -1.0) if case == "expired" else (1.0, 400.0)
        leaf = make_cert("SP", pki.leaf_key, ("STI-CA Intermediate", pki.inter_key), ca=False,
                         days=days)  # fmt: skip
        bundle = pki.bundle(leaf, pki.inter)
    elif case == "self-signed":
        bundle = pki.bundle(make_cert("SP", pki.leaf_key, None, ca=True))
    elif case == "wrong-ca":
        other_key = ec.generate_private_key(ec.SECP256R1())
        fake_inter = make_cert("STI-CA Intermediate", other_key, None, ca=True)
        leaf = make_cert("SP", pki.leaf_key, ("STI-CA Intermediate", other_key), ca=False)
        bundle = pki.bundle(leaf, fake_inter)
    else:
        bundle = pki.bundle(pki.leaf)
    status, _ = _failure(pki, signed(pki), bundle=bundle)
    assert status == 437


def test_leaf_that_is_not_a_ca_cannot_issue(pki: Pki) -> None:
    """A leaf (CA:false) used as an 'intermediate' for another key does not chain."""
    key = ec.generate_private_key(ec.SECP256R1())
    rogue = make_cert("Rogue", key, ("SP Callward", pki.leaf_key), ca=False)
    signer = ShakenSigner(key, X5U)
    req = signer.sign(invite(), attest=Attestation.FULL, now=NOW, origid="r")
    status, _ = _failure(pki, req, bundle=pki.bundle(rogue, pki.leaf, pki.inter))
    assert status == 437


def test_x5u_must_equal_info_and_be_https(pki: Pki) -> None:
    req = signed(pki)
    token = parse_identity(req.headers.get("Identity") or "").token
    moved = req.replace(headers=req.headers.set(
        "Identity", f"{token};info=<https://evil.example/x.pem>;alg=ES256;ppt=shaken"))  # fmt: skip
    assert _failure(pki, moved)[0] == 436


def test_unsupported_algorithms_are_refused(pki: Pki) -> None:
    header = b64url_encode(canonical_json({"alg": "none", "ppt": "shaken", "typ": "passport",
                                           "x5u": X5U}))  # fmt: skip
    token = f"{header}.{b64url_encode(b'{}')}.{b64url_encode(bytes(64))}"
    with pytest.raises(PassportError) as info:
        decode_passport(token)
    assert info.value.status == 437
    req = invite()
    bad = req.replace(headers=req.headers.append("Identity", f"{token};info=<{X5U}>;alg=none"))
    assert _failure(pki, bad)[0] == 437


def test_attestation_rules() -> None:
    a = attestation_for(authenticated=True, owns_number=True, from_trunk=False)
    assert a is Attestation.FULL
    assert attestation_for(authenticated=True, owns_number=False, from_trunk=False).value == "B"
    assert attestation_for(authenticated=True, owns_number=True, from_trunk=True).value == "C"
    assert attestation_for(authenticated=False, owns_number=True, from_trunk=False).value == "C"
    capped = attestation_for(authenticated=True, owns_number=True, from_trunk=False,
                             tenant_max="B")  # fmt: skip
    assert capped.value == "B"


# ---------------------------------------------------------------- fuzz
_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300))
def test_arbitrary_identity_values_never_pass_or_crash(pki: Pki, value: str) -> None:
    req = invite()
    req = req.replace(headers=req.headers.append("Identity", value))
    result = verifier(pki).verify(req, NOW)
    assert result.verstat is Verstat.FAILED and result.status in (403, 428, 436, 437, 438)


@_FUZZ
@given(st.data())
def test_mutated_valid_tokens_fail_cleanly(pki: Pki, data: st.DataObject) -> None:
    req = signed(pki)
    value = req.headers.get("Identity") or ""
    token = parse_identity(value).token
    pos = data.draw(st.integers(0, len(token) - 1))
    ch = data.draw(st.sampled_from("AZaz09-_.=+/ "))
    mutated = token[:pos] + ch + token[pos + 1 :]
    bad = req.replace(headers=req.headers.set("Identity", f"{mutated};info=<{X5U}>;ppt=shaken"))
    result = verifier(pki).verify(bad, NOW)
    if mutated == token:
        assert result.verstat is Verstat.PASSED
    else:
        # base64url has slack bits in the last character: a flip there may decode the same
        h, c, s = mutated.split(".") if mutated.count(".") == 2 else ("", "", "")
        same = False
        try:
            same = [b64url_decode(x) for x in (h, c, s)] == [
                b64url_decode(x) for x in token.split(".")
            ] and (h, c) == tuple(token.split(".")[:2])
        except PassportError:
            same = False
        assert (result.verstat is Verstat.PASSED) == same
