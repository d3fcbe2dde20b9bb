"""SIP, SIPS and TEL URIs (RFC 3261 §19.1, §25.1; RFC 3966).

URIs keep the text they were parsed from in their fields (escapes included) so that a proxy
forwards exactly what it received; :meth:`SipURI.equivalent` implements the comparison rules
of §19.1.4, which is what loop detection and the registrar need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from callward.errors import SipParseError

__all__ = [
    "URI",
    "AbsoluteURI",
    "SipURI",
    "TelURI",
    "format_params",
    "parse_uri",
]

Params = tuple[tuple[str, str | None], ...]

# §25.1: hostname / IPv4address / IPv6reference. Deliberately a little wider than the ABNF for
# hostnames (underscores appear in real deployments) but never allowing separators.
_HOST_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?::([0-9]{1,5}))?\Z")
# user / password characters: unreserved, escaped, user-unreserved (§25.1).
_USER_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]*\Z")
_PASS_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,%]*\Z")
_PARAM_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+\Z")
_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_TEL_RE = re.compile(r"\+?[0-9A-Fa-f*#\-.()pPwW]+\Z")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")

# One anchored pattern for a whole, valid SIP-URI (§25.1): the fast path. Anything it does not
# match goes through the step-by-step parser, which names the failing rule.
_ESC = r"%[0-9A-Fa-f]{2}"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_\-]*[A-Za-z0-9])?"
_FAST_SIP_RE = re.compile(
    r"(?:((?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|" + _ESC + r")+)"  # user
    r"(?::((?:[A-Za-z0-9\-_.!~*'()&=+$,]|" + _ESC + r")*))?@)?"  # :password
    r"(\[[0-9A-Fa-f:.]+\]|" + _LABEL + r"(?:\." + _LABEL + r")*\.?)"  # host
    r"(?::([0-9]{1,5}))?"  # port
    r"((?:;(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|" + _ESC + r")+"
    r"(?:=(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|" + _ESC + r")+)?)*)"  # params
    r"(?:\?((?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|" + _ESC + r")+="
    r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|" + _ESC + r")*"
    r"(?:&(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|" + _ESC + r")+="
    r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|" + _ESC + r")*)*))?\Z"  # headers
)


def _fast_sip(scheme: str, rest: str) -> SipURI | None:
    m = _FAST_SIP_RE.match(rest)
    if m is None:
        return None
    user, password, host, port_text, ptext, htext = m.groups()
    port: int | None = None
    if port_text:
        port = int(port_text)
        if port > 65535:
            return None
    params: Params = ()
    if ptext:
        plist: list[tuple[str, str | None]] = []
        for item in ptext[1:].split(";"):
            name, eq, value = item.partition("=")
            plist.append((name, value if eq else None))
        params = tuple(plist)
    headers: tuple[tuple[str, str], ...] = ()
    if htext:
        headers = tuple((n, v) for n, _, v in (h.partition("=") for h in htext.split("&")))
    return SipURI(host, user, password, port, params, headers, scheme)


def format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def _parse_params(text: str, rule: str, strict: bool) -> Params:
    out: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        if not item:
            if strict:
                raise SipParseError("empty URI parameter", rule=rule)
            continue
        name, eq, value = item.partition("=")
        if strict and (
            not _PARAM_RE.match(name)
            or (eq and not _PARAM_RE.match(value))
            or _ESCAPE_RE.search(item)
        ):
            raise SipParseError(f"invalid URI parameter {item[:40]!r}", rule=rule)
        out.append((name, value if eq else None))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SipURI:
    """``sip:`` / ``sips:`` URI. ``host`` keeps IPv6 brackets; ``port`` is None when absent
    (absence matters for §19.1.4 comparison and for RFC 3263 SRV lookups)."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()
    scheme: str = "sip"

    def __post_init__(self) -> None:
        if self.scheme not in ("sip", "sips"):
            raise ValueError(f"SipURI scheme must be sip or sips, not {self.scheme!r}")
        if not self.host:
            raise ValueError("SipURI needs a host")
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts += [":", self.password]
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts += [":", str(self.port)]
        if self.params:
            parts.append(format_params(self.params))
        if self.headers:
            parts += ["?", "&".join(f"{k}={v}" for k, v in self.headers)]
        return "".join(parts)

    def param(self, name: str) -> str | None:
        """Value of a URI parameter (case-insensitive name); "" for a flag like ``;lr``."""
        lname = name.lower()
        for k, v in self.params:
            if k.lower() == lname:
                return "" if v is None else v
        return None

    def has_param(self, name: str) -> bool:
        lname = name.lower()
        return any(k.lower() == lname for k, _ in self.params)

    def with_params(self, params: Params) -> SipURI:
        return SipURI(
            self.host, self.user, self.password, self.port, params, self.headers, self.scheme
        )

    def without_param(self, name: str) -> SipURI:
        lname = name.lower()
        return self.with_params(tuple(p for p in self.params if p[0].lower() != lname))

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unquote(self.user)

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def equivalent(self, other: object) -> bool:
        """URI comparison of RFC 3261 §19.1.4 (not plain string equality)."""
        if not isinstance(other, SipURI) or self.scheme != other.scheme:
            return False
        if self.user_unescaped != other.user_unescaped or self.password != other.password:
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        mine = {k.lower(): (v or "").lower() for k, v in self.params}
        theirs = {k.lower(): (v or "").lower() for k, v in other.params}
        for name in ("user", "ttl", "method", "maddr", "transport"):
            if (name in mine or name in theirs) and mine.get(name) != theirs.get(name):
                return False
        for name in mine.keys() & theirs.keys():
            if mine[name] != theirs[name]:
                return False
        h1 = {k.lower(): unquote(v) for k, v in self.headers}
        h2 = {k.lower(): unquote(v) for k, v in other.headers}
        return h1 == h2


@dataclass(frozen=True, slots=True)
class TelURI:
    """``tel:`` URI (RFC 3966): a global (``+``) or local number with parameters."""

    number: str
    params: Params = ()

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    def param(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.params:
            if k.lower() == lname:
                return "" if v is None else v
        return None


@dataclass(frozen=True, slots=True)
class AbsoluteURI:
    """Any other absolute URI (``http:``, ``urn:``, ``mailto:``): kept verbatim."""

    scheme: str
    text: str = field(default="")

    def __str__(self) -> str:
        return self.text


URI = SipURI | TelURI | AbsoluteURI


def _parse_sip(scheme: str, rest: str, strict: bool) -> SipURI:
    # userinfo first: user-unreserved allows ';' and '?' (e.g. "+1;phone-context=x@host"),
    # while '@' never appears unescaped after the host.
    user: str | None = None
    password: str | None = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if colon:
            password = pw
        if strict:
            if not user or not _USER_RE.match(user) or _ESCAPE_RE.search(user):
                raise SipParseError(f"invalid user part {user[:40]!r}", rule="RFC 3261 §25.1 user")
            if password is not None and not _PASS_RE.match(password):
                raise SipParseError("invalid password in URI", rule="RFC 3261 §25.1 password")
    headers: tuple[tuple[str, str], ...] = ()
    qpos = rest.find("?")
    if qpos >= 0:
        htext = rest[qpos + 1 :]
        rest = rest[:qpos]
        hs: list[tuple[str, str]] = []
        for item in htext.split("&"):
            name, eq, value = item.partition("=")
            if strict and (not name or not eq):
                raise SipParseError(
                    f"invalid URI header {item[:40]!r}", rule="RFC 3261 §25.1 header"
                )
            hs.append((name, value))
        headers = tuple(hs)
    params: Params = ()
    spos = rest.find(";")
    if spos >= 0:
        params = _parse_params(rest[spos + 1 :], "RFC 3261 §25.1 uri-parameter", strict)
        rest = rest[:spos]
    m = _HOST_RE.match(rest)
    if m is None:
        raise SipParseError(f"invalid host {rest[:60]!r}", rule="RFC 3261 §25.1 hostport")
    host = m.group(1)
    if strict and host[0] != "[" and (host[0] in ".-" or host[-1] == "-" or ".." in host):
        raise SipParseError(f"invalid host {host[:60]!r}", rule="RFC 3261 §25.1 hostname")
    port_text = m.group(2)
    port = int(port_text) if port_text else None
    if port is not None and port > 65535:
        raise SipParseError(f"port {port} out of range", rule="RFC 3261 §25.1 port")
    return SipURI(host, user, password, port, params, headers, scheme)


def parse_uri(text: str, *, strict: bool = True) -> URI:
    """Parse a Request-URI or the URI inside a name-addr; raise SipParseError naming the rule."""
    if text[:4] == "sip:":
        fast = _fast_sip("sip", text[4:]) if strict else None
        if fast is not None:
            return fast
    colon = text.find(":")
    if colon <= 0:
        raise SipParseError(f"URI without scheme {text[:60]!r}", rule="RFC 3261 §25.1 absoluteURI")
    scheme = text[:colon].lower()
    rest = text[colon + 1 :]
    if scheme in ("sip", "sips"):
        if not rest:
            raise SipParseError("empty SIP URI", rule="RFC 3261 §25.1 SIP-URI")
        if strict:
            fast = _fast_sip(scheme, rest)
            if fast is not None:
                return fast
        if " " in rest or "\t" in rest:
            raise SipParseError("whitespace inside URI", rule="RFC 3261 §25.1 SIP-URI")
        return _parse_sip(scheme, rest, strict)
    if not _SCHEME_RE.match(text[:colon]):
        raise SipParseError(
            f"invalid URI scheme {text[:colon][:20]!r}", rule="RFC 3261 §25.1 scheme"
        )
    if scheme == "tel":
        number, _, ptext = rest.partition(";")
        if strict and not _TEL_RE.match(number):
            raise SipParseError(
                f"invalid telephone number {number[:40]!r}", rule="RFC 3966 telephone-subscriber"
            )
        params = _parse_params(ptext, "RFC 3966 par", strict) if ptext else ()
        return TelURI(number, params)
    if strict and (not rest or any(c in rest for c in ' \t<>"')):
        raise SipParseError(
            f"invalid absolute URI {text[:60]!r}", rule="RFC 3261 §25.1 absoluteURI"
        )
    return AbsoluteURI(scheme, text)
