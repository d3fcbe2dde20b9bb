"""The edge's trust-boundary hook (:class:`callward.edge.hooks.BoundaryFilter`): every request
the edge forwards to, and every response it relays to, a peer listed in ``edge.untrusted``
passes through :func:`~callward.privacy.trust_boundary.strip_exposures` first.

``privacy.boundary`` picks the policy:

* ``strip`` (default): trust-domain-only headers (P-Asserted-Identity, P-Access-Network-Info,
  P-Charging-*...) are removed, X- and Call-Info headers naming a subscriber are removed, and
  phone numbers, IMSIs and IMEIs in From/Contact/Referred-By/other headers become
  ``sip:anonymous@anonymous.invalid`` (RFC 3323 §4.1.1.3).
* ``pseudonymise``: the same, except that phone numbers become a keyed pseudonym
  (``pn<base32>``, HMAC-SHA-256 under a key derived from the edge secret), so the peer can
  tell two calls of one subscriber apart without learning the number. IMSI and IMEI are
  always removed.
* ``off``: nothing is rewritten (a deployment whose "untrusted" peers are only there for
  topology hiding and which must deliver caller ID).

The destination (Request-URI, To) and the dialog state (Via, Call-ID, CSeq, tags) are never
rewritten, so calls keep working. Counters per exposure kind are kept for metrics; the values
themselves are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import Counter
from dataclasses import dataclass, field

from callward.errors import ConfigError
from callward.privacy.trust_boundary import find_exposures, strip_exposures
from callward.sip.message import Headers, Request, Response

__all__ = ["BOUNDARY_MODES", "TrustBoundaryFilter"]

BOUNDARY_MODES = ("strip", "pseudonymise", "off")


@dataclass
class TrustBoundaryFilter:
    mode: str = "strip"
    key: bytes = b""  # pseudonymise: the edge secret the pseudonym key is derived from
    exposures: Counter[str] = field(default_factory=Counter)  # kind -> headers rewritten
    messages: int = 0  # messages changed

    def __post_init__(self) -> None:
        if self.mode not in BOUNDARY_MODES:
            raise ConfigError(
                f"privacy.boundary {self.mode!r}: expected one of {', '.join(BOUNDARY_MODES)}"
            )
        if self.mode == "pseudonymise":
            if len(self.key) < 16:
                raise ConfigError("privacy.boundary pseudonymise: needs the edge secret")
            self.key = hmac.new(self.key, b"callward trust-boundary pseudonym", "sha256").digest()

    def _pseudonym(self, identifier: str) -> str:
        digits = "".join(c for c in identifier if c.isdigit())
        mac = hmac.new(self.key, digits.encode(), hashlib.sha256).digest()[:10]
        return "pn" + base64.b32encode(mac).decode().lower()

    def _filter(self, headers: Headers) -> Headers | None:
        if self.mode == "off":
            return None
        found = find_exposures(headers)
        if not found:
            return None
        pseudo = self._pseudonym if self.mode == "pseudonymise" else None
        out = strip_exposures(headers, pseudo)
        if out == list(headers):
            return None
        self.messages += 1
        self.exposures.update(e.kind for e in found)
        return Headers._trusted(out)

    def request(self, request: Request) -> Request:
        headers = self._filter(request.headers)
        return request if headers is None else request.replace(headers=headers)

    def response(self, response: Response) -> Response:
        headers = self._filter(response.headers)
        return response if headers is None else response.replace(headers=headers)
