"""A structlog processor that masks personal data in every log event.

Why a processor and not care at each call site: a single forgotten ``log.info(..., uri=uri)`` in
a proxy would leak subscriber identities into log storage that has neither retention nor access
control fit for personal data. Masking happens after all other processors have produced the event
dict and before rendering, so it sees every value.

Masked: SIP/SIPS/TEL URIs (RFC 3261 §19.1, RFC 3966), E.164 numbers (ITU-T E.164: ``+`` and up
to 15 digits), IMSIs (3GPP TS 23.003 §2.2: 15 digits), other long digit runs that may be MSISDNs,
IPv4 and IPv6 addresses (validated with :mod:`ipaddress` to avoid masking times like 12:30:45).
Values of keys known to hold personal data are replaced whole. With a pseudonymizer, URIs and
numbers become a stable keyed pseudonym so support can still correlate lines of one subject.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from callward.privacy.pseudonym import Pseudonymizer

__all__ = ["PERSONAL_KEYS", "RedactProcessor", "redact_text"]

PERSONAL_KEYS: frozenset[str] = frozenset(
    {
        "aor", "caller", "callee", "source", "msisdn", "imsi", "imei", "ip", "addr", "address",
        "uri", "contact", "from", "to", "subject", "remote_addr", "peer",
    }
)  # fmt: skip

_URI = re.compile(r"(?i)\b(sips?|tel):[^\s<>\"',;]+")
_IMSI_CTX = re.compile(r"(?i)\b(imsi)([\s:=\-]*)(\d{14,15})\b")
_V6 = r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})(?:%[\w.]+)?"
# RFC 3986 §3.2.2 IP-literal in brackets, or a bare address not glued to other word characters.
_IPV6 = re.compile(rf"\[({_V6})\]|(?<![\w:.])({_V6})(?![\w:])")
_IPV4 = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w]|\.\d)")
_E164 = re.compile(r"(?<![\w+])\+[1-9][\d\- ().]{5,20}\d(?!\d)")
_DIGITS = re.compile(r"(?<![\w.])\d{9,15}(?![\w]|\.\d)")
_MAX_TEXT = 64 * 1024


def _tag(kind: str, value: str, pseudo: Pseudonymizer | None) -> str:
    if pseudo is None:
        return f"[{kind}]"
    try:
        return f"[{kind}:{pseudo.pseudonym(value)[:12]}]"
    except Exception:  # a value that does not normalize is still masked, just not linkable
        return f"[{kind}]"


def _ipv6(match: re.Match[str], pseudo: Pseudonymizer | None) -> str:
    candidate = (match.group(1) or match.group(2)).split("%", 1)[0]
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return match.group(0)
    return "[ipv6]"


def _ipv4(match: re.Match[str]) -> str:
    try:
        ipaddress.IPv4Address(match.group(1))
    except ValueError:
        return match.group(0)
    return "[ipv4]"


def redact_text(text: str, pseudo: Pseudonymizer | None = None) -> str:
    """Mask every personal identifier found in ``text``."""
    if len(text) > _MAX_TEXT:  # bound work on hostile input; never log a huge blob in clear
        return "[redacted: oversized value]"
    text = _URI.sub(lambda m: f"{m.group(1).lower()}:{_tag('uri', m.group(0), pseudo)}", text)
    text = _IMSI_CTX.sub(lambda m: f"{m.group(1)}{m.group(2)}[imsi]", text)
    text = _IPV6.sub(lambda m: _ipv6(m, pseudo), text)
    text = _IPV4.sub(_ipv4, text)
    text = _E164.sub(lambda m: _tag("msisdn", m.group(0), pseudo), text)
    text = _DIGITS.sub(lambda m: _tag("number", m.group(0), pseudo), text)
    return text


@dataclass
class RedactProcessor:
    """structlog processor: ``structlog.configure(processors=[..., RedactProcessor(), renderer])``.

    ``allow`` names keys that policy allows in clear (e.g. for a lawful-intercept log)."""

    pseudonymizer: Pseudonymizer | None = None
    allow: frozenset[str] = field(default_factory=frozenset)

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key in self.allow:
                continue
            event_dict[key] = self._value(key, event_dict[key], 0)
        return event_dict

    def _value(self, key: str, value: Any, depth: int) -> Any:
        if depth > 8:
            return "[redacted: too deep]"
        if key.lower() in PERSONAL_KEYS and value not in (None, ""):
            if isinstance(value, str) and self.pseudonymizer is not None:
                return _tag(key.lower(), value, self.pseudonymizer)
            return f"[{key.lower()}]"
        if isinstance(value, str):
            return redact_text(value, self.pseudonymizer)
        if isinstance(value, Mapping):
            return {k: self._value(str(k), v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._value("", v, depth + 1) for v in value]
        if isinstance(value, bytes | bytearray):
            return "[bytes]"
        return value
