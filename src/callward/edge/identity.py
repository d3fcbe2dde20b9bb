"""Caller identity at the edge: E.164 normalization and the trust-domain rules of
RFC 3325 (P-Asserted-Identity) and RFC 3323 (Privacy).

- A number a subscriber dials or presents in national form (``0612345678`` in FR) becomes
  ``+33612345678`` using the tenant's default region (phonenumbers, i.e. libphonenumber's data).
- P-Asserted-Identity is only believed from trusted peers; from anyone else it is removed and,
  for an authenticated subscriber, replaced by the identity we assert (RFC 3325 §9.1).
- Toward an untrusted peer, ``Privacy: id`` (or ``header``/``user``) means the asserted identity
  is withheld (RFC 3325 §9.3) and the From display/user are anonymized (RFC 3323 §5.1).
"""

from __future__ import annotations

from callward.sip.e164 import to_e164
from callward.sip.headers import parse_name_addr
from callward.sip.message import Request

__all__ = ["apply_privacy", "assert_identity", "normalize_number", "privacy_values"]


def normalize_number(user: str, region: str) -> str | None:
    """E.164 (``+CC...``) for a dialable user part, None when it is not a valid number of
    ``region`` (a name like ``alice`` or a short code stays as it is): the validating mode of
    the one normaliser, :func:`callward.sip.e164.to_e164`."""
    return to_e164(user, region, validate=True)


def privacy_values(req: Request) -> set[str]:
    out: set[str] = set()
    for line in req.headers.get_lines("Privacy"):
        for part in line.replace(",", ";").split(";"):
            if part.strip():
                out.add(part.strip().lower())
    return out


def assert_identity(
    req: Request, *, trusted_source: bool, authenticated_aor: str | None, region: str
) -> Request:
    """Entering the trust domain: keep PAI from trusted peers, drop it from others, and assert
    the authenticated subscriber's identity (normalized) when we know it."""
    headers = req.headers
    if trusted_source and "P-Asserted-Identity" in headers:
        return req
    if "P-Asserted-Identity" in headers:
        headers = headers.remove("P-Asserted-Identity")
    if authenticated_aor is not None:
        user, _, host = authenticated_aor.partition("@")
        e164 = normalize_number(user, region)
        value = f"<sip:{e164}@{host};user=phone>" if e164 else f"<sip:{user}@{host}>"
        headers = headers.append("P-Asserted-Identity", value)
        if "P-Preferred-Identity" in headers:
            headers = headers.remove("P-Preferred-Identity")  # consumed (RFC 3325 §9.2)
    return req if headers is req.headers else req.replace(headers=headers)


def apply_privacy(req: Request) -> Request:
    """Leaving the trust domain toward an untrusted peer (RFC 3325 §9.3, RFC 3323 §5)."""
    privacy = privacy_values(req)
    headers = req.headers
    if "id" in privacy or "header" in privacy:
        headers = headers.remove("P-Asserted-Identity")
    if "user" in privacy or "id" in privacy:
        try:
            frm = parse_name_addr(headers.get("From") or "")
        except Exception:  # malformed From was rejected by the parser already
            frm = None
        if frm is not None and frm.tag is not None:
            # RFC 3323 §4.1.1.3: anonymous From, keeping the tag for dialog matching.
            headers = headers.set(
                "From", f'"Anonymous" <sip:anonymous@anonymous.invalid>;tag={frm.tag}'
            )
    if "header" in privacy:
        headers = headers.remove("Call-Info").remove("User-Agent").remove("Organization")
    if "critical" not in privacy and "none" in privacy:
        return req
    return req if headers is req.headers else req.replace(headers=headers)
