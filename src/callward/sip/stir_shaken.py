"""STIR/SHAKEN for SIP: sign and verify the Identity header (RFC 8224, RFC 8225, RFC 8588).

Sans-IO: certificates are looked up through an injected ``fetch(url) -> bytes`` (PEM bundle:
the signing certificate first, then intermediates), which the service layer backs with an HTTPS
client and a cache; the clock is the ``now`` argument.

Verification (RFC 8224 §6.2, §12 and ATIS-1000074 §5.3), in this order:

1. Identity header syntax (``token;info=<url>;alg=ES256;ppt=shaken``), 438 otherwise;
2. PASSporT decoding, ``alg``/``ppt``, ``x5u`` equal to ``info`` (436/437/438);
3. ``iat`` freshness: at most ``max_age`` (60 s, RFC 8224 §6.2.2) from ``now`` (403 Stale Date);
4. ``orig.tn`` equals the caller's number (P-Asserted-Identity, else From) and one ``dest.tn``
   equals the callee's (To, else Request-URI), both after E.164 normalisation (438);
5. the certificate chain ends at a configured STI-CA root, every certificate valid at ``now``
   and every issuer a CA (436/437);
6. the ES256 signature (438).

The outcome is marked with ``verstat`` (3GPP TS 24.229 §7.2A.20) on the From URI:
``TN-Validation-Passed``, ``TN-Validation-Failed`` or ``No-TN-Validation``.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from callward.errors import SipParseError
from callward.sip.e164 import canonical_tn
from callward.sip.headers import NameAddr, parse_name_addr
from callward.sip.message import Request
from callward.sip.passport import (
    PassportError,
    decode_passport,
    sign_passport,
    verify_signature,
)
from callward.sip.uri import SipURI, TelURI

__all__ = [
    "Attestation",
    "IdentityHeader",
    "ShakenSigner",
    "ShakenVerifier",
    "VerifyResult",
    "Verstat",
    "attestation_for",
    "callee_number",
    "caller_number",
    "mark_verstat",
    "parse_identity",
    "verify_chain",
]

MAX_CHAIN = 4
MAX_AGE = 60.0  # RFC 8224 §6.2.2: "recommended" freshness window


class Verstat(enum.Enum):
    PASSED = "TN-Validation-Passed"
    FAILED = "TN-Validation-Failed"
    NONE = "No-TN-Validation"


class Attestation(enum.Enum):
    FULL = "A"  # authenticated caller entitled to the number (RFC 8588 §4)
    PARTIAL = "B"  # authenticated caller, number not verified
    GATEWAY = "C"  # entered our network from a gateway / trunk we cannot vouch for


def attestation_for(
    *, authenticated: bool, owns_number: bool, from_trunk: bool, tenant_max: str = "A"
) -> Attestation:
    """Attestation per RFC 8588 §4, capped by the tenant's rule (e.g. a reseller tenant that
    may never claim more than ``B``)."""
    if from_trunk or not authenticated:
        level = Attestation.GATEWAY
    elif owns_number:
        level = Attestation.FULL
    else:
        level = Attestation.PARTIAL
    order = ("A", "B", "C")
    return Attestation(order[max(order.index(level.value), order.index(tenant_max))])


@dataclass(frozen=True, slots=True)
class IdentityHeader:
    token: str
    info: str
    alg: str = "ES256"
    ppt: str = "shaken"

    def __str__(self) -> str:
        return f"{self.token};info=<{self.info}>;alg={self.alg};ppt={self.ppt}"


_IDENTITY_RE = re.compile(r"\s*([A-Za-z0-9_\-.]+)\s*((?:;[^;]*)*)\Z")


def parse_identity(value: str) -> IdentityHeader:
    """RFC 8224 §4.1 ``Identity`` value; :class:`PassportError` (438) when malformed."""
    m = _IDENTITY_RE.match(value)
    if m is None or len(value) > 8192:
        raise PassportError("malformed Identity header")
    token, rest = m.groups()
    params: dict[str, str] = {}
    for item in rest.split(";")[1:]:
        name, _, v = item.partition("=")
        params[name.strip().lower()] = v.strip().strip('"')
    info = params.get("info", "")
    if not (info.startswith("<") and info.endswith(">")):
        raise PassportError("Identity header without info=<URI>", status=436)
    return IdentityHeader(token, info[1:-1], params.get("alg", "ES256"), params.get("ppt", ""))


def _tn_of(uri: object, country_code: str) -> str:
    if isinstance(uri, TelURI):
        return canonical_tn(uri.number, country_code=country_code)
    if isinstance(uri, SipURI) and uri.user:
        return canonical_tn(uri.user_unescaped or "", country_code=country_code)
    return ""


def caller_number(req: Request, country_code: str = "1") -> str:
    """The originating TN: first P-Asserted-Identity, else From (RFC 8224 §8.3)."""
    pai = req.headers.values("P-Asserted-Identity")
    for value in pai:
        tn = _tn_of(parse_name_addr(value).uri, country_code)
        if tn:
            return tn
    return _tn_of(req.from_.uri, country_code)


def callee_number(req: Request, country_code: str = "1") -> str:
    return _tn_of(req.to.uri, country_code) or _tn_of(req.uri, country_code)


def mark_verstat(req: Request, verstat: Verstat) -> Request:
    """Put ``verstat`` on the From URI (replacing any value an upstream put there: only the
    verifier that checked the PASSporT may state it)."""
    frm = req.from_
    uri = frm.uri
    new_uri: SipURI | TelURI
    if isinstance(uri, SipURI):
        kept = uri.without_param("verstat")
        new_uri = kept.with_params((*kept.params, ("verstat", verstat.value)))
    elif isinstance(uri, TelURI):
        params = tuple(p for p in uri.params if p[0].lower() != "verstat")
        new_uri = TelURI(uri.number, (*params, ("verstat", verstat.value)))
    else:
        return req
    value = str(NameAddr(new_uri, frm.display, frm.params, True))
    return req.replace(headers=req.headers.set("From", value))


def verify_chain(
    chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], now: dt.datetime
) -> x509.Certificate:
    """Walk leaf → intermediates → a configured root; return the leaf. Every certificate
    must be valid at ``now``; every issuer must be a CA; the path is at most MAX_CHAIN."""
    if not chain:
        raise PassportError("no certificate at x5u", status=436)
    pool = list(chain[1:])
    cert = chain[0]
    for _ in range(MAX_CHAIN + 1):
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise PassportError("certificate expired or not yet valid", status=437)
        for root in roots:
            if cert.issuer == root.subject and _issued_by(cert, root):
                if not root.not_valid_before_utc <= now <= root.not_valid_after_utc:
                    raise PassportError("STI-CA root expired", status=437)
                return chain[0]
        if cert in roots:
            return chain[0]
        issuer = next(
            (c for c in pool if c.subject == cert.issuer and _issued_by(cert, c) and _is_ca(c)),
            None,
        )
        if issuer is None:
            raise PassportError("certificate does not chain to a trusted STI-CA", status=437)
        pool.remove(issuer)
        cert = issuer
    raise PassportError("certificate chain too long", status=437)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return _is_ca(issuer)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca


@dataclass(frozen=True, slots=True)
class VerifyResult:
    verstat: Verstat
    status: int = 0  # SIP status to answer with when the policy rejects failed calls
    reason: str = ""
    attest: str = ""


class ShakenVerifier:
    def __init__(
        self,
        roots: Sequence[x509.Certificate],
        fetch: Callable[[str], bytes],
        *,
        max_age: float = MAX_AGE,
        country_code: str = "1",
        x5u_prefixes: tuple[str, ...] = ("https://",),
    ) -> None:
        self.roots = list(roots)
        self.fetch = fetch
        self.max_age = max_age
        self.country_code = country_code
        self.x5u_prefixes = x5u_prefixes

    def verify(self, req: Request, now: float) -> VerifyResult:
        lines = req.headers.get_lines("Identity")
        if not lines:
            return VerifyResult(Verstat.NONE)
        try:
            attest = self._verify(lines[0], req, now)
        except PassportError as exc:
            return VerifyResult(Verstat.FAILED, exc.status, str(exc))
        except SipParseError as exc:
            return VerifyResult(Verstat.FAILED, 438, f"unreadable identity: {exc.rule}")
        return VerifyResult(Verstat.PASSED, attest=attest)

    def _verify(self, value: str, req: Request, now: float) -> str:
        ident = parse_identity(value)
        if ident.alg != "ES256":
            raise PassportError(f"unsupported alg {ident.alg[:20]!r}", status=437)
        if ident.ppt != "shaken":
            raise PassportError("ppt is not shaken", status=438)
        passport = decode_passport(ident.token)
        if passport.header.get("ppt") != "shaken":
            raise PassportError("PASSporT ppt is not shaken")
        if passport.x5u != ident.info:
            raise PassportError("x5u differs from Identity info", status=436)
        if not ident.info.startswith(self.x5u_prefixes):
            raise PassportError("x5u scheme not allowed", status=436)
        if passport.attest not in ("A", "B", "C"):
            raise PassportError("attest is not A, B or C")
        if abs(now - passport.iat) > self.max_age:
            raise PassportError("PASSporT iat is stale", status=403)
        orig = canonical_tn(passport.orig_tn, country_code=self.country_code)
        if not orig or orig != caller_number(req, self.country_code):
            raise PassportError("orig does not match the caller's number")
        callee = callee_number(req, self.country_code)
        dests = {canonical_tn(t, country_code=self.country_code) for t in passport.dest_tns}
        if not callee or callee not in dests:
            raise PassportError("dest does not match the called number")
        chain = self._certificates(ident.info)
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        leaf = verify_chain(chain, self.roots, when)
        key = leaf.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise PassportError("certificate key is not EC", status=437)
        verify_signature(passport, key)
        return passport.attest

    def _certificates(self, url: str) -> list[x509.Certificate]:
        try:
            data = self.fetch(url)
        except (OSError, KeyError, LookupError):
            raise PassportError("certificate at x5u unavailable", status=436) from None
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError:
            raise PassportError("x5u is not a PEM certificate bundle", status=436) from None


class ShakenSigner:
    """Adds an Identity header to an outgoing INVITE (RFC 8224 §5)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, x5u: str, *, country_code: str = "1"):
        self.key = key
        self.x5u = x5u
        self.country_code = country_code

    def sign(self, req: Request, *, attest: Attestation, now: float, origid: str) -> Request:
        orig = caller_number(req, self.country_code)
        dest = callee_number(req, self.country_code)
        if not orig or not dest:
            raise PassportError("caller or callee is not a telephone number", status=428)
        token = sign_passport(
            self.key,
            x5u=self.x5u,
            orig_tn=orig,
            dest_tns=[dest],
            iat=int(now),
            attest=attest.value,
            origid=origid,
        )
        ident = IdentityHeader(token, self.x5u)
        return req.replace(headers=req.headers.remove("Identity").append("Identity", str(ident)))
