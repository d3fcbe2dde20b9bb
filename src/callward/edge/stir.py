"""STIR/SHAKEN in the edge's call path (RFC 8224, RFC 8225, RFC 8588, ATIS-1000074).

The cryptography is in :mod:`callward.sip.stir_shaken`; this module decides *when*:

- **signing** (originating side): an initial INVITE from an authenticated local subscriber that
  leaves our domains (to a trunk or another carrier) gets an ``Identity`` header with an ES256
  PASSporT. Attestation per RFC 8588 §4 and ATIS-1000074 §5.2.3: ``A`` when the caller's
  number belongs to the subscriber's tenant (``security.stir_tenant_numbers`` prefixes), ``B``
  when authenticated but the number is not the tenant's, ``C`` for what entered from a trusted
  gateway; each tenant's ``security.stir_tenant_attest`` caps it (a reseller never above
  ``B``). Calls whose caller or callee is not a telephone number are not signed.
- **verification** (terminating side): every other initial INVITE is verified when STI-CA
  roots are configured. The certificate at ``x5u`` is fetched through the core's question
  mechanism (:class:`FetchCertificate`, answered off the event loop by the node), only from
  ``security.stir_x5u_prefixes`` (no fetches of arbitrary URLs: SSRF), and cached. The result
  replaces any ``verstat`` on the From URI (TS 24.229 §7.2A.20); with
  ``security.stir_reject_failed`` a failed verification is answered with the RFC 8224 §6.2.2
  status (403 Stale Date, 436 Bad Identity Info, 437 Unsupported Credential, 438 Invalid
  Identity Header) instead of being forwarded marked ``TN-Validation-Failed``.

Sans-IO: the clock is ``now``; certificates arrive as answers to questions.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import ClassVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from callward.edge.pending import Query
from callward.errors import SipParseError, StoreError
from callward.sip.message import Request
from callward.sip.passport import PassportError
from callward.sip.stir_shaken import (
    ShakenSigner,
    ShakenVerifier,
    VerifyResult,
    Verstat,
    attestation_for,
    caller_number,
    mark_verstat,
    parse_identity,
)

__all__ = ["FetchCertificate", "StirPolicy", "StirShaken"]

CACHE_SIZE = 256
CACHE_TTL = 3600.0  # seconds a fetched certificate bundle is reused


@dataclass(frozen=True, slots=True)
class FetchCertificate(Query):
    """Answer: ``bytes``, the PEM bundle at ``url`` (leaf first). Asked only for allowed URLs."""

    timeout: ClassVar[float] = 3.0
    url: str


@dataclass(frozen=True, slots=True)
class StirPolicy:
    signer_key: ec.EllipticCurvePrivateKey | None = None
    x5u: str | None = None
    roots: tuple[x509.Certificate, ...] = ()
    x5u_prefixes: tuple[str, ...] = ("https://",)
    max_age: float = 60.0
    reject_failed: bool = False
    tenant_numbers: tuple[tuple[str, tuple[str, ...]], ...] = ()  # tenant -> E.164 prefixes
    tenant_attest: tuple[tuple[str, str], ...] = ()  # tenant -> highest attestation
    country_code: str = "1"
    _numbers: dict[str, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for tenant, level in self.tenant_attest:
            if level not in ("A", "B", "C"):
                raise ValueError(f"stir tenant {tenant!r}: attestation must be A, B or C")
        object.__setattr__(self, "_numbers", {t: p for t, p in self.tenant_numbers})

    def owns(self, tenant: str, tn: str) -> bool:
        return bool(tn) and any(tn.startswith(p.lstrip("+")) for p in self._numbers.get(tenant, ()))

    def cap(self, tenant: str) -> str:
        return dict(self.tenant_attest).get(tenant, "A")


class StirShaken:
    """Plugged into the core (``EdgeCore.stir``) by the node when configured."""

    def __init__(self, policy: StirPolicy) -> None:
        self.policy = policy
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.signer = (
            ShakenSigner(policy.signer_key, policy.x5u, country_code=policy.country_code)
            if policy.signer_key is not None and policy.x5u
            else None
        )
        self.verifier = (
            ShakenVerifier(
                policy.roots,
                self._cached,
                max_age=policy.max_age,
                country_code=policy.country_code,
                x5u_prefixes=policy.x5u_prefixes,
            )
            if policy.roots
            else None
        )
        self.signed = 0
        self.verified: dict[str, int] = {v.value: 0 for v in Verstat}

    # ------------------------------------------------------------------ the call path
    def process(
        self,
        req: Request,
        *,
        authenticated: bool,
        trusted: bool,
        tenant: str,
        outbound: bool,
        now: float,
    ) -> Generator[Query, object, Request | tuple[int, str]]:
        """Sign (an authenticated subscriber's call leaving our domains) or verify (anything
        else): the request to forward, or ``(status, reason)`` to answer with."""
        if outbound and authenticated and not trusted:
            return self.sign(req, tenant=tenant, from_trunk=False, now=now)
        if self.verifier is None:
            return req
        result = yield from self.verify(req, now)
        self.verified[result.verstat.value] += 1
        if result.verstat is Verstat.FAILED and self.policy.reject_failed:
            return result.status or 438, result.reason[:80] or "Invalid Identity Header"
        return mark_verstat(req, result.verstat)

    def sign(self, req: Request, *, tenant: str, from_trunk: bool, now: float) -> Request:
        if self.signer is None:
            return req
        owns = self.policy.owns(tenant, caller_number(req, self.policy.country_code))
        attest = attestation_for(
            authenticated=True,
            owns_number=owns,
            from_trunk=from_trunk,
            tenant_max=self.policy.cap(tenant),
        )
        try:
            signed = self.signer.sign(req, attest=attest, now=now, origid=_origid(req))
        except PassportError:  # caller or callee is not a telephone number: nothing to attest
            return req
        self.signed += 1
        return signed

    def verify(self, req: Request, now: float) -> Generator[Query, object, VerifyResult]:
        assert self.verifier is not None
        lines = req.headers.get_lines("Identity")
        if lines:
            try:
                url = parse_identity(lines[0]).info
            except (PassportError, SipParseError):
                url = ""
            if url.startswith(self.policy.x5u_prefixes) and not self._fresh(url, now):
                try:
                    data = yield FetchCertificate(url)
                except StoreError:  # unreachable or timed out: the verifier says 436
                    data = None
                if isinstance(data, bytes) and len(data) <= 65536:
                    self._store(url, data, now)
        return self.verifier.verify(req, now)

    # ------------------------------------------------------------------ certificate cache
    def _fresh(self, url: str, now: float) -> bool:
        hit = self._cache.get(url)
        return hit is not None and hit[0] > now

    def _store(self, url: str, data: bytes, now: float) -> None:
        self._cache[url] = (now + CACHE_TTL, data)
        self._cache.move_to_end(url)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def _cached(self, url: str) -> bytes:
        """The verifier's ``fetch``: only what the node fetched (KeyError → 436)."""
        return self._cache[url][1]


def _origid(req: Request) -> str:
    """RFC 8588 §5 origid: an opaque UUID per origination; derived from the Call-ID so the
    same call keeps it across retransmissions, without exposing the Call-ID itself."""
    return str(uuid.UUID(bytes=hashlib.sha256(req.call_id.encode()).digest()[:16], version=4))
