"""IMSI / IMEI / MSISDN exposure at a trust boundary: pure functions over SIP header fields.

Inside an operator's IMS, signalling legitimately carries subscriber identities: the IMSI in a
private identity (``<IMSI>@ims.mncXXX.mccYYY.3gppnetwork.org``, 3GPP TS 23.003 §13.3), the IMEI
in ``+sip.instance="<urn:gsma:imei:...>"`` (RFC 7254), the MSISDN in P-Asserted-Identity
(RFC 3325) and From/Contact user parts, the cell in P-Access-Network-Info (RFC 7315 §5.4).
Toward an untrusted peer (another network, an enterprise trunk, the Internet) each of these is an
exposure: RFC 3325 §5 says PAI must not leave the trust domain, and TS 24.229 §5.2.6.3 removes
P-Access-Network-Info at the boundary.

:func:`find_exposures` reports what a message would expose; :func:`strip_exposures` returns the
header list with those fields removed or their identifiers replaced (``anonymous`` user parts,
RFC 3323 §4.1.1.3) or, with a ``pseudonym`` function, a keyed pseudonym the peer can correlate
but not reverse. The edge applies them through its boundary hook
(:class:`callward.privacy.boundary_filter.TrustBoundaryFilter`) to every request it forwards to
and every response it relays to a peer in ``edge.untrusted``. Headers that carry the dialog and
transaction state (Via, Call-ID, CSeq, Route, Record-Route, To, Content-*) are never rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["Exposure", "find_exposures", "strip_exposures"]

# headers dropped whole toward untrusted peers (trust-domain-only by their RFCs)
_DROP = frozenset(
    {"p-access-network-info", "p-asserted-identity", "p-preferred-identity",
     "p-visited-network-id", "p-charging-vector", "p-charging-function-addresses"}
)  # fmt: skip
# headers whose URIs carry identities we anonymize instead of dropping
_ANON = frozenset({"from", "f", "contact", "m", "remote-party-id", "referred-by"})
# dialog/transaction state and routing: rewriting them would break the call, so never touched
_KEEP = frozenset(
    {"via", "v", "call-id", "i", "cseq", "route", "record-route", "max-forwards", "to", "t",
     "content-length", "l", "content-type", "c", "request-uri"}
)  # fmt: skip

_IMEI_URN = re.compile(r"(?i)urn:gsma:imei:[\d-]{14,20}(?:;svn=\d{2})?")
_IMSI_DOMAIN = re.compile(r"(?i)\b(\d{14,15})@ims\.mnc\d{3}\.mcc\d{3}\.3gppnetwork\.org")
_IMSI_CTX = re.compile(r"(?i)\bimsi\s*[=:]\s*\"?(\d{14,15})")
_IMSI_BARE = re.compile(r"(?<!\d)([2-7]\d{14})(?!\d)")  # 15 digits, MCC 2xx-7xx (E.212)
_CELL = re.compile(r"(?i)(utran|e-utran|nr|cgi-3gpp|utran-cell-id-3gpp|cell-id)")
_USER = re.compile(r"(?i)((?:sips?|tel):)([^@;>\s]+)(@|;|>|\s|$)")
_URI = re.compile(r"(?i)(sips?:|tel:)([^;>\s,\"]+)")
_E164 = re.compile(r"(?<![\w])\+\d{7,15}(?!\d)")
_PHONE = re.compile(r"^\+?[\d\-.()]{7,24}$")


@dataclass(frozen=True, slots=True)
class Exposure:
    header: str  # header name as seen (lower-case)
    kind: str  # "imsi" | "imei" | "msisdn" | "location" | "identity"


def _is_phone(user: str) -> bool:
    digits = sum(c.isdigit() for c in user)
    return bool(_PHONE.match(user)) and 7 <= digits <= 15


def _kinds(name: str, value: str) -> list[str]:
    kinds: list[str] = []
    if _IMEI_URN.search(value):
        kinds.append("imei")
    if _IMSI_DOMAIN.search(value) or _IMSI_CTX.search(value) or _IMSI_BARE.search(value):
        kinds.append("imsi")
    if name == "p-access-network-info" and _CELL.search(value):
        kinds.append("location")
    for m in _USER.finditer(value):
        user = m.group(2).split(":", 1)[0]
        if _is_phone(user) or m.group(1).lower() == "tel:":
            kinds.append("msisdn")
            break
    else:
        if _E164.search(value):  # a number in any other form (an http URL parameter, text)
            kinds.append("msisdn")
    if name in ("p-asserted-identity", "p-preferred-identity") and not kinds:
        kinds.append("identity")
    return kinds


def find_exposures(headers: Iterable[tuple[str, str]]) -> list[Exposure]:
    """Every (header, kind) that would expose a subscriber identity beyond the boundary;
    X- headers are searched like any other."""
    out: list[Exposure] = []
    for name, value in headers:
        n = name.strip().lower()
        for kind in _kinds(n, value):
            out.append(Exposure(n, kind))
    return out


Pseudonym = Callable[[str], str]  # identifier -> a token safe to show the peer


def _anonymize(value: str, pseudonym: Pseudonym | None = None) -> str:
    value = _IMEI_URN.sub("urn:uuid:00000000-0000-0000-0000-000000000000", value)
    value = _IMSI_DOMAIN.sub("anonymous@anonymous.invalid", value)

    def uri(m: re.Match[str]) -> str:
        scheme, rest = m.group(1).lower(), m.group(2)
        user = rest.split("@", 1)[0].split(":", 1)[0] if "@" in rest or scheme == "tel:" else ""
        if _IMSI_BARE.search(user) or not (scheme == "tel:" or _is_phone(user)):
            return "sip:anonymous@anonymous.invalid" if _IMSI_BARE.search(user) else m.group(0)
        if pseudonym is not None:
            return f"sip:{pseudonym(user)}@anonymous.invalid"
        return "sip:anonymous@anonymous.invalid"  # RFC 3323 §4.1.1.3

    value = _URI.sub(uri, value)
    value = _E164.sub(lambda m: pseudonym(m.group(0)) if pseudonym else "anonymous", value)
    return _IMSI_CTX.sub(lambda m: m.group(0).replace(m.group(1), "[imsi]"), value)


def strip_exposures(
    headers: Iterable[tuple[str, str]], pseudonym: Pseudonym | None = None
) -> list[tuple[str, str]]:
    """The header list to send to an untrusted peer: trust-domain-only headers dropped, X-
    headers exposing an identity dropped, identities in From/Contact/Call-Info anonymized (or,
    with ``pseudonym``, phone numbers replaced by its token; IMSI and IMEI are always removed)."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        n = name.strip().lower()
        if n in _DROP:
            continue
        if n in _KEEP:
            out.append((name, value))  # the peer needs the destination and the dialog state
            continue
        kinds = _kinds(n, value)
        if not kinds:
            out.append((name, value))
        elif n.startswith("x-") or n == "call-info":
            continue  # optional headers: dropped rather than rewritten
        else:
            out.append((name, _anonymize(value, pseudonym)))
    return out
