"""Who may read ``/metrics`` (web and edge): a bearer token, or a management address.

Metrics carry no personal data, but they do describe traffic, load and security events: an
attacker reading them learns when an alert fires. With ``security.metrics_token`` set, every
scrape must send ``Authorization: Bearer <token>`` (the configured value may be the token or
``sha256:<hex>`` of it); without a token, only clients inside ``security.metrics_allow``
(loopback by default: the management address) are answered.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence

__all__ = ["MetricsAccess"]


class MetricsAccess:
    def __init__(self, token: str | None, allow: Sequence[str]) -> None:
        self._digest: bytes | None = None
        if token:
            if token.startswith("sha256:"):
                self._digest = bytes.fromhex(token[7:])
            else:
                self._digest = hashlib.sha256(token.encode()).digest()
        self._nets = [ipaddress.ip_network(n, strict=False) for n in allow]

    def check(self, authorization: str | None, client_ip: str | None) -> int:
        """0 when allowed, else the HTTP status to answer (401 bad/missing token, 403 address)."""
        if self._digest is not None:
            scheme, _, value = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not value:
                return 401
            given = hashlib.sha256(value.strip().encode("utf-8", "replace")).digest()
            return 0 if hmac.compare_digest(given, self._digest) else 401
        try:
            ip = ipaddress.ip_address((client_ip or "").strip("[]"))
        except ValueError:
            return 403
        return 0 if any(ip in n for n in self._nets) else 403
