"""A structlog processor that masks personal data in every log event.

Why a processor and not care at each call site: a single forgotten ``log.info(..., uri=uri)`` in
a proxy would leak subscriber identities into log storage that has neither retention nor access
control fit for personal data. Masking happens after all other processors have produced the event
dict and before rendering, so it sees every value.

Masked: SIP/SIPS/TEL/mailto URIs (RFC 3261 §19.1, RFC 3966) and e-mail addresses, E.164 numbers
(ITU-T E.164: ``+`` and up to 15 digits), national-format numbers (7-15 digits in groups with
spaces, dashes, dots, slashes or parentheses: ``(0)30 1234567``, ``(212) 555-0123``,
``06 12 34 56 78``; dates and times excluded), IMSIs (3GPP TS 23.003 §2.2), IMEIs/IMEISVs
(§6.2, plain or dashed), other long digit runs, IPv4 and IPv6 addresses (validated with
:mod:`ipaddress`, so times like 12:30:45 survive), SIP display names (``"Alice Smith"
<sip:...>`` and unquoted ``Alice Smith <sip:...>``, RFC 3261 §25.1 name-addr), digest
usernames (``username="..."``, RFC 7616), bearer tokens and JWTs, PEM private keys, long
hex/base64 secrets, and the values of labelled fields in text (``name=``, ``password:``,
``conference id``, ``PIN`` ...). Values of keys known to hold personal data are replaced whole.

Names are caught where they are *labelled* (a SIP display name, a known key or label) and, in
free text ("call Alice Smith tomorrow"), by :mod:`callward.privacy.names` (a census-name
gazetteer plus capitalisation patterns; measured recall/precision in docs/privacy.md).
With a pseudonymizer, URIs and numbers become a stable keyed pseudonym so support can still
correlate lines of one subject.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from callward.privacy.names import redact_names
from callward.privacy.pseudonym import Pseudonymizer

__all__ = ["PERSONAL_KEYS", "RedactProcessor", "install_stdlib_redaction", "redact_text"]

PERSONAL_KEYS: frozenset[str] = frozenset(
    {
        "aor", "caller", "callee", "source", "msisdn", "imsi", "imei", "ip", "addr", "address",
        "uri", "contact", "from", "to", "subject", "remote_addr", "peer",
        # names, accounts and secrets (known-field redaction)
        "name", "display_name", "displayname", "first_name", "last_name", "full_name",
        "given_name", "family_name", "caller_name", "username", "user", "email", "e_mail",
        "password", "passwd", "secret", "token", "access_token", "refresh_token", "id_token",
        "api_key", "apikey", "authorization", "private_key", "pin", "passcode", "imeisv",
        "conference_id", "conference", "meeting_id", "bridge_id", "room", "access_code",
    }
)  # fmt: skip
_LABELS = (
    r"name|display[ _-]?name|first[ _-]?name|last[ _-]?name|full[ _-]?name|user(?:name)?|"
    r"password|passwd|secret|(?:access[ _-]|refresh[ _-]|id[ _-]|api[ _-]?)?token|api[ _-]?key|"
    r"conf(?:erence)?[ _-]?(?:id|number|no\.?|code)?|meeting[ _-]?(?:id|number)|"
    r"bridge[ _-]?(?:id|number)|room|pin|passcode|access[ _-]?code|participant[ _-]?code|"
    r"imei(?:sv)?|msisdn|imsi|email"
)
# label [=:] value  (value quoted, or a run up to a separator); also "conference ID 123 456"
_LABELLED = re.compile(
    rf"(?i)(?<![\w-])({_LABELS})([\"']?\s*[=:]\s*|\s+(?:is\s+|id\s+|#\s*)?(?=[\d\"']))"
    r"(\"[^\"]*\"|'[^']*'|[\d][\d \-#]*\d#?|[^\s,;&\"'<>}\]]+)"
)
_DISPLAY_QUOTED = re.compile(r'"((?:[^"\\\r\n]|\\.){1,200})"(\s*<(?:sips?|tel):)', re.I)
_DISPLAY_BARE = re.compile(
    r"(?im)((?:^|[\r\n]|:\s*|,\s*)(?:From|To|Contact|P-Asserted-Identity|P-Preferred-Identity|"
    r"Remote-Party-ID|Referred-By|Refer-To|f|t|m)\s*:\s*)([^\s<\"][^<\r\n\"]{0,120}?)(\s*<)"
)
_DIGEST_USER = re.compile(r'(?i)\b(username\s*=\s*)("[^"]*"|[^\s,]+)')
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
                  re.S)  # fmt: skip
_SECRET = re.compile(
    r"(?<![\w/+=-])(?=[A-Za-z0-9+/_-]{0,256}?\d)(?=[A-Za-z0-9+/_-]{0,256}?[A-Za-z])"
    r"(?:[A-Fa-f0-9]{32,}|[A-Za-z0-9+/_-]{32,}={0,2})(?![\w/+=-])"
)
_AWS = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_EMAIL = re.compile(r"(?i)(?<![\w.+-])[a-z0-9._%+-]{1,64}@[a-z0-9-]+(?:\.[a-z0-9-]+)+\b")
_IMEI_DASHED = re.compile(r"(?<![\w-])\d{2}-\d{6}-\d{6}-\d{1,2}(?![\w-])")
# national formats: 7-15 digits in groups separated by space - . / ( )
_NATIONAL = re.compile(
    r"(?<![\w.:/+-])(?:\+|00)?\(?\d{1,6}\)?(?:[ \-./]{1,2}\(?\d{1,8}\)?){1,6}(?![\w]|[.:-]\d)"
)
_DATEISH = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$|^\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$")

_URI = re.compile(r"(?i)\b(sips?|tel|mailto):[^\s<>\"',;]+")
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


def _national(match: re.Match[str], pseudo: Pseudonymizer | None) -> str:
    cand = match.group(0)
    digits = sum(c.isdigit() for c in cand)
    if digits < 7 or digits > 15 or _DATEISH.match(cand.strip()):
        return cand
    if re.fullmatch(r"\d+\.\d+", cand):  # a decimal number, not a phone number
        return cand
    return _tag("number", cand, pseudo)


def _labelled(match: re.Match[str]) -> str:
    label, sep, value = match.group(1), match.group(2), match.group(3)
    if value.startswith("[") or (value.startswith("<") and value.endswith(">")):
        return match.group(0)
    return f"{label}{sep}[{re.sub(r'[^a-z]+', '_', label.lower()).strip('_')}]"


_CALL_ID = re.compile(r"(?im)((?:^|[\r\n])(?:Call-ID|i)\s*:\s*)([^\s@]{1,200})(@[^\s;,]+)?")


def redact_text(text: str, pseudo: Pseudonymizer | None = None) -> str:
    """Mask every personal identifier found in ``text``."""
    if len(text) > _MAX_TEXT:  # bound work on hostile input; never log a huge blob in clear
        return "[redacted: oversized value]"
    # Call-ID: the random part stays (it correlates lines of one call); an @host part may name a
    # host or address and is masked
    kept: list[str] = []

    def _keep_call_id(m: re.Match[str]) -> str:
        kept.append(_redact(m.group(2), pseudo))
        return f"{m.group(1)}\x00{len(kept) - 1}\x00{'@[host]' if m.group(3) else ''}"

    text = _CALL_ID.sub(_keep_call_id, text.replace("\x00", "\ufffd"))
    text = _redact(text, pseudo)
    if kept:
        text = re.sub("\x00(\\d+)\x00", lambda m: kept[int(m.group(1))], text)
    return text


def _redact(text: str, pseudo: Pseudonymizer | None) -> str:
    text = _PEM.sub("[private-key]", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}[token]", text)
    text = _JWT.sub("[token]", text)
    text = _AWS.sub("[key]", text)
    text = _DIGEST_USER.sub(lambda m: f"{m.group(1)}[user]", text)
    text = _DISPLAY_QUOTED.sub(lambda m: f'"[name]"{m.group(2)}', text)
    text = _DISPLAY_BARE.sub(lambda m: f"{m.group(1)}[name]{m.group(3)}", text)
    text = _URI.sub(lambda m: f"{m.group(1).lower()}:{_tag('uri', m.group(0), pseudo)}", text)
    text = _EMAIL.sub(lambda m: _tag("email", m.group(0), pseudo), text)
    text = _IMSI_CTX.sub(lambda m: f"{m.group(1)}{m.group(2)}[imsi]", text)
    text = _LABELLED.sub(_labelled, text)
    text = redact_names(text)  # free-text names (gazetteer + patterns, privacy/names.py)
    text = _IPV6.sub(lambda m: _ipv6(m, pseudo), text)
    text = _IPV4.sub(_ipv4, text)
    text = _IMEI_DASHED.sub("[imei]", text)
    text = _E164.sub(lambda m: _tag("msisdn", m.group(0), pseudo), text)
    text = _NATIONAL.sub(lambda m: _national(m, pseudo), text)
    text = _DIGITS.sub(lambda m: _tag("number", m.group(0), pseudo), text)
    text = _SECRET.sub("[secret]", text)
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


_INSTALLED: list[bool] = []


def install_stdlib_redaction(pseudo: Pseudonymizer | None = None) -> None:
    """Redact records of the standard :mod:`logging` module too (libraries and modules that do
    not use structlog): the record factory formats ``msg % args`` once and masks the result,
    so every handler sees the redacted text. Idempotent."""
    import logging

    if _INSTALLED:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the template only
            message = str(record.msg)
        record.msg = redact_text(message, pseudo)
        record.args = None
        return record

    logging.setLogRecordFactory(factory)
    _INSTALLED.append(True)
