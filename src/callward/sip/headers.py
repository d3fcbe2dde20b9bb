"""Header names and typed header values (RFC 3261 §7.3, §20, §25.1).

Raw header values stay strings inside :class:`~callward.sip.message.Headers`; these types are
parsed on demand (and cached by the message) so a proxy that only touches Via and Route does
not pay for parsing everything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from callward.errors import SipParseError
from callward.sip.uri import URI, Params, SipURI, format_params, parse_uri

__all__ = [
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "AuthHeader",
    "CSeq",
    "NameAddr",
    "Via",
    "canonical_name",
    "parse_auth",
    "parse_cseq",
    "parse_name_addr",
    "parse_via",
    "split_list",
]

# RFC 3261 §7.3.3 and later RFCs (3265 o/u, 3515 r, 3892 b, 4028 x, 3841 a/j/d, 8224 y).
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "y": "Identity",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
}

_KNOWN = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "Flow-Timer", "From",
    "Identity", "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version",
    "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Server",
    "Service-Route", "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
    "Warning", "WWW-Authenticate",
]  # fmt: skip
_CANONICAL: dict[str, str] = {name.lower(): name for name in _KNOWN}
_CANONICAL.update(COMPACT_FORMS)

# Headers whose ABNF is a comma-separated list, so several values may share one line (§7.3.1).
# Authorization-style headers and Date are deliberately absent: commas are part of one value.
LIST_HEADERS: frozenset[str] = frozenset(
    {
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language",
        "Error-Info", "In-Reply-To", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
        "Privacy", "Proxy-Require", "Reason", "Record-Route", "Reject-Contact",
        "Request-Disposition", "Require", "Route", "Service-Route", "Supported", "Unsupported",
        "Via", "Warning",
    }
)  # fmt: skip


def canonical_name(name: str) -> str:
    """Canonical spelling of a header name (compact forms expanded); unknown names unchanged."""
    return _CANONICAL.get(name.lower(), name)


def split_list(value: str) -> list[str]:
    """Split a list header on commas that are outside quotes and ``<...>`` (§7.3.1)."""
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            item = value[start:i].strip()
            if item:
                out.append(item)
            start = i + 1
    item = value[start:].strip()
    if item:
        out.append(item)
    return out


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")


_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
# Fast path for a run of generic-params without quotes: ``;a=b;c;d=[::1]`` (§25.1 generic-param).
_PARAMS_FAST_RE = re.compile(
    r"(?:[ \t]*" + _TOKEN + r"(?:[ \t]*=[ \t]*(?:" + _TOKEN + r"|\[[0-9A-Fa-f:.]+\]))?[ \t]*)"
    r"(?:;[ \t]*" + _TOKEN + r"(?:[ \t]*=[ \t]*(?:" + _TOKEN + r"|\[[0-9A-Fa-f:.]+\]))?[ \t]*)*\Z"
)


def _parse_header_params(text: str, rule: str) -> Params:
    """``;name=value`` generic-params after a header value; quoted values keep their quotes."""
    if not text:
        return ()
    if _PARAMS_FAST_RE.match(text):
        if " " in text or "\t" in text:
            return tuple(
                (n.strip(), v.strip() if eq else None)
                for n, eq, v in (item.partition("=") for item in text.split(";"))
            )
        return tuple(
            (n, v if eq else None) for n, eq, v in (i.partition("=") for i in text.split(";"))
        )
    out: list[tuple[str, str | None]] = []
    for item in _split_semicolons(text):
        item = item.strip()
        if not item:
            raise SipParseError("empty header parameter", rule=rule)
        name, eq, value = item.partition("=")
        name = name.strip()
        if not _TOKEN_RE.match(name):
            raise SipParseError(f"invalid parameter name {name[:30]!r}", rule=rule)
        out.append((name, value.strip() if eq else None))
    return tuple(out)


def _split_semicolons(text: str) -> list[str]:
    if '"' not in text:
        return text.split(";")
    out: list[str] = []
    quoted = False
    start = 0
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            out.append(text[start:i])
            start = i + 1
    if quoted:
        raise SipParseError(
            "unterminated quoted string in parameters", rule="RFC 3261 §25.1 quoted-string"
        )
    out.append(text[start:])
    return out


def _param(params: Params, name: str) -> str | None:
    lname = name.lower()
    for k, v in params:  # the usual spelling matches without a lower() per parameter
        if k == name or k.lower() == lname:
            return "" if v is None else v
    return None


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;received=...;rport``."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    def __str__(self) -> str:
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"{self.protocol}/{self.transport} {hp}{format_params(self.params)}"

    def param(self, name: str) -> str | None:
        return _param(self.params, name)

    @property
    def branch(self) -> str | None:
        return _param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return _param(self.params, "received")

    @property
    def rport(self) -> str | None:
        """``""`` when the client asked for rport (RFC 3581), the port once filled in."""
        return _param(self.params, "rport")

    @property
    def maddr(self) -> str | None:
        return _param(self.params, "maddr")

    def with_params(self, params: Params) -> Via:
        return Via(self.transport, self.host, self.port, params, self.protocol)


_VIA_RE = re.compile(
    r"\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([0-9.]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?:\s*:\s*([0-9]{1,5}))?\s*(?:;(.*))?\Z",
    re.S,
)


def parse_via(value: str) -> Via:
    m = _VIA_RE.match(value)
    if m is None:
        raise SipParseError(f"malformed Via {value[:60]!r}", rule="RFC 3261 §25.1 via-parm")
    name, version, transport, host, port_text, ptext = m.groups()
    port = int(port_text) if port_text else None
    if port is not None and port > 65535:
        raise SipParseError(f"Via port {port} out of range", rule="RFC 3261 §25.1 sent-by")
    params = _parse_header_params(ptext, "RFC 3261 §25.1 via-params") if ptext else ()
    return Via(transport.upper(), host, port, params, f"{name.upper()}/{version}")


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From/To/Contact/Route/Record-Route value: optional display name, URI, header params.

    ``angle`` records whether the URI was in ``<>``: an addr-spec without brackets cannot carry
    URI parameters, which changes how ``;tag`` is read (§20.10)."""

    uri: URI
    display: str | None = None
    params: Params = ()
    angle: bool = True

    def __str__(self) -> str:
        p = format_params(self.params)
        if not self.angle and self.display is None:
            return f"{self.uri}{p}"
        if self.display is not None:
            return f"{self.display} <{self.uri}>{p}"
        return f"<{self.uri}>{p}"

    def param(self, name: str) -> str | None:
        return _param(self.params, name)

    @property
    def tag(self) -> str | None:
        return _param(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        params = (*(p for p in self.params if p[0].lower() != "tag"), ("tag", tag))
        return NameAddr(self.uri, self.display, params, True)

    @property
    def sip_uri(self) -> SipURI:
        if not isinstance(self.uri, SipURI):
            raise SipParseError(f"expected a SIP URI, got {self.uri}", rule="RFC 3261 §19.1")
        return self.uri


# display-name = *(token LWS) / quoted-string (§25.1); a quoted-string is one qdtext/quoted-pair
# run between two quotes. Unquoted names may also hold UTF-8 letters (common in the wild), but
# never the separators that would let a name smuggle a second URI, parameter or quote.
_DISPLAY_QUOTED_RE = re.compile(
    r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*"\Z'
)
_DISPLAY_TOKENS_RE = re.compile(
    r"[A-Za-z0-9\-.!%*_+`'~\u0080-\U0010ffff]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~\u0080-\U0010ffff]+)*\Z"
)


def _parse_display(text: str, strict: bool = True) -> str | None:
    text = text.strip()
    if not text:
        return None
    if text[0] == '"':
        unterminated = text.endswith('\\"') and not text.endswith('\\\\"')
        if len(text) < 2 or text[-1] != '"' or unterminated:
            raise SipParseError(
                "unterminated quoted display name", rule="RFC 3261 §25.1 display-name"
            )
        if strict and _DISPLAY_QUOTED_RE.match(text) is None:
            raise SipParseError("malformed quoted display name", rule="RFC 3261 §25.1 display-name")
        return text
    if strict and _DISPLAY_TOKENS_RE.match(text) is None:
        raise SipParseError(
            f"display name {text[:30]!r} is neither tokens nor a quoted string",
            rule="RFC 3261 §25.1 display-name",
        )
    return text


_NAME_ADDR_FAST_RE = re.compile(
    r'[ \t]*(?:("(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*")|((?:'
    + _TOKEN
    + r"[ \t]+)*"
    + _TOKEN
    + r"))?"
    r"[ \t]*<([^<>\s\"]+)>[ \t]*(?:;([^\"]*))?\Z"
)


def parse_name_addr(value: str, *, strict: bool = True) -> NameAddr:
    """Parse ``name-addr`` or ``addr-spec`` followed by header parameters."""
    m = _NAME_ADDR_FAST_RE.match(value)
    if m is not None:
        quoted, token_name, uri_text, ptext = m.groups()
        params = _parse_header_params(ptext, "RFC 3261 §25.1 generic-param") if ptext else ()
        return NameAddr(parse_uri(uri_text, strict=strict), quoted or token_name, params, True)
    value = value.strip()
    lt = value.find("<")
    if lt >= 0 and (value.find('"') < 0 or _outside_quotes(value, lt)):
        gt = value.find(">", lt)
        if gt < 0:
            raise SipParseError("missing '>' in name-addr", rule="RFC 3261 §25.1 name-addr")
        display = _parse_display(value[:lt], strict)
        uri = parse_uri(value[lt + 1 : gt].strip(), strict=strict)
        rest = value[gt + 1 :].strip()
        if rest and rest[0] != ";":
            raise SipParseError(f"junk after '>': {rest[:30]!r}", rule="RFC 3261 §25.1 name-addr")
        params = _parse_header_params(rest[1:], "RFC 3261 §25.1 generic-param") if rest else ()
        return NameAddr(uri, display, params, True)
    if value.startswith('"'):
        raise SipParseError("display name without <URI>", rule="RFC 3261 §25.1 name-addr")
    # addr-spec: everything after the first ';' is a header parameter (§20.10).
    uri_text, semi, ptext = value.partition(";")
    if " " in uri_text.strip():
        raise SipParseError(
            f"whitespace in addr-spec {uri_text[:40]!r}", rule="RFC 3261 §25.1 addr-spec"
        )
    uri = parse_uri(uri_text.strip(), strict=strict)
    params = _parse_header_params(ptext, "RFC 3261 §25.1 generic-param") if semi else ()
    return NameAddr(uri, None, params, False)


def _outside_quotes(text: str, pos: int) -> bool:
    quoted = False
    escaped = False
    for ch in text[:pos]:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
    return not quoted


@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    def __post_init__(self) -> None:
        if not 0 <= self.seq < 2**31:
            raise ValueError(f"CSeq number {self.seq} outside 0..2**31-1 (RFC 3261 §8.1.1.5)")

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


_CSEQ_RE = re.compile(r"\s*([0-9]{1,10})\s+([A-Za-z0-9\-.!%*_+`'~]+)\s*\Z")


def parse_cseq(value: str) -> CSeq:
    m = _CSEQ_RE.match(value)
    if m is None:
        raise SipParseError(f"malformed CSeq {value[:40]!r}", rule="RFC 3261 §25.1 CSeq")
    seq = int(m.group(1))
    if seq >= 2**31:
        raise SipParseError(f"CSeq number {seq} too large", rule="RFC 3261 §8.1.1.5")
    return CSeq(seq, m.group(2))


@dataclass(frozen=True, slots=True)
class AuthHeader:
    """WWW-/Proxy-Authenticate challenge or (Proxy-)Authorization credentials (§25.1, RFC 7616).

    ``params`` maps lower-cased names to *unquoted* values; ``quoted`` remembers which were
    quoted so serialization reproduces the peer's form."""

    scheme: str
    params: tuple[tuple[str, str], ...]
    quoted: frozenset[str] = frozenset()

    def get(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.params:
            if k == lname:
                return v
        return None

    def __str__(self) -> str:
        items = []
        for k, v in self.params:
            if k in self.quoted:
                escaped = v.replace("\\", "\\\\").replace('"', '\\"')
                items.append(f'{k}="{escaped}"')
            else:
                items.append(f"{k}={v}")
        return f"{self.scheme} " + ", ".join(items)


_AUTH_PARAM_RE = re.compile(
    r"\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|([^\s,\"]+))\s*(,|\Z)", re.S
)


def parse_auth(value: str) -> AuthHeader:
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if not scheme or not _TOKEN_RE.match(scheme):
        raise SipParseError("missing auth scheme", rule="RFC 3261 §25.1 challenge")
    params: list[tuple[str, str]] = []
    quoted: set[str] = set()
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _AUTH_PARAM_RE.match(rest, pos)
        if m is None:
            raise SipParseError(
                f"malformed auth-param near {rest[pos : pos + 30]!r}",
                rule="RFC 3261 §25.1 auth-param",
            )
        name = m.group(1).lower()
        if m.group(2) is not None:
            params.append((name, re.sub(r"\\(.)", r"\1", m.group(2))))
            quoted.add(name)
        else:
            params.append((name, m.group(3)))
        pos = m.end()
    return AuthHeader(scheme, tuple(params), frozenset(quoted))


def header_params(value: str) -> Params:
    """Generic parameters after the first ';' of a simple header value (e.g. Session-Expires)."""
    _, semi, rest = value.partition(";")
    return _parse_header_params(rest, "RFC 3261 §25.1 generic-param") if semi else ()
