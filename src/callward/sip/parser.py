"""Bytes → :class:`Request` / :class:`Response` (RFC 3261 §7, §25; RFC 4475 as the test catalogue).

Strict mode is what an edge applies to untrusted input: every rejection is a
:class:`~callward.errors.SipParseError` naming the line and grammar rule, which the edge turns
into ``400 Bad Request`` with that reason. Lenient mode accepts what broken-but-common peers send
(bare LF, extra spaces, latin-1, missing mandatory headers) for analysis tools.

Work is linear in the input: one ``find`` for the header/body boundary, one ``split`` into lines,
one ``partition`` per header; regexes are anchored and have no nested quantifiers.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from callward.errors import SipParseError
from callward.sip.headers import _CANONICAL, CSeq, NameAddr, Via
from callward.sip.message import Headers, Request, Response, build_index
from callward.sip.uri import SipURI, parse_uri

__all__ = [
    "ACCELERATED",
    "DEFAULT_LIMITS",
    "ParseLimits",
    "frame_stream",
    "parse_message",
]


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Hard limits (mirrors :class:`callward.config.SipLimits`)."""

    max_message_bytes: int = 65535
    max_headers: int = 256
    max_header_bytes: int = 8192
    max_body_bytes: int = 60000


DEFAULT_LIMITS = ParseLimits()

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_STATUS_RE = re.compile(r"([A-Za-z]+/[0-9]+\.[0-9]+) ([0-9]{3}) ?(.*)\Z", re.S)
_REASON_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A header value is TEXT-UTF8 / LWS / quoted-string (RFC 3261 §25.1): no C0 control but HTAB, no
# DEL. §25.1 quoted-pair would admit escaped controls (RFC 4475 §3.1.1.2 even sends NUL, BEL and
# DEL inside a display name); strict mode refuses them all, because a display name reaches phone
# screens, logs and CDRs verbatim, and a NUL or ESC there is an injection, not a name.
_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CTL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Headers that may appear once only (RFC 3261 §20 and the RFCs defining them); a second
# occurrence is a framing or spoofing hazard (which Content-Length, Expires or Event counts?).
# _speedups.c (SINGLE_KEYS) falls back to this code for a duplicate of any of them.
_SINGLE = (
    "Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Type", "Content-Length",
    "Content-Disposition", "Date", "Event", "Expires", "MIME-Version", "Min-Expires", "Min-SE",
    "Organization", "Priority", "RAck", "Refer-To", "Reply-To", "Retry-After", "RSeq",
    "Server", "Session-Expires", "Subject", "Subscription-State", "Timestamp", "User-Agent",
)  # fmt: skip
_NAME_CACHE_MAX = 2048


def parse_message(
    data: bytes, *, strict: bool = True, limits: ParseLimits = DEFAULT_LIMITS
) -> Request | Response:
    """Parse one complete SIP message (a datagram, or a frame from :func:`frame_stream`)."""
    if _accelerated_parse is not None:
        # The C accelerator answers the common well-formed case, or None; then (and for every
        # error) the pure parser below decides, so results and errors are the same either way.
        # What it accepts is strictly valid, and lenient mode reads such a message the same way
        # (it merely skips the typed-header validation, which the accelerator has done).
        msg = _accelerated_parse(data, limits)
        if msg is not None:
            return msg
    return _parse_pure(data, strict, limits)


def _parse_pure(data: bytes, strict: bool, limits: ParseLimits) -> Request | Response:
    """The reference implementation (and the only one in lenient mode)."""
    if len(data) > limits.max_message_bytes:
        raise SipParseError(
            f"message of {len(data)} bytes exceeds limit {limits.max_message_bytes}",
            rule="limit max_message_bytes",
            status_hint=513,
        )
    # §7.5: CRLFs before the start line are ignored (they are also RFC 5626 keep-alives).
    start = 0
    n = len(data)
    while start < n and data[start] in (13, 10):
        start += 1
    sep = data.find(b"\r\n\r\n", start)
    if sep >= 0:
        head_bytes = data[start:sep]
        body = data[sep + 4 :]
    else:
        sep = data.find(b"\n\n", start)
        if strict or sep < 0:
            if not data[start:]:
                raise SipParseError("empty message", rule="RFC 3261 §7 generic-message")
            raise SipParseError(
                "no empty line (CRLF CRLF) ends the header section",
                rule="RFC 3261 §7 message-header",
            )
        head_bytes = data[start:sep]
        body = data[sep + 2 :]
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        if strict:
            line = head_bytes.count(b"\n", 0, exc.start) + 1
            raise SipParseError(
                "header section is not valid UTF-8", line=line, rule="RFC 3261 §25 UTF8-NONASCII"
            ) from None
        head = head_bytes.decode("latin-1")
    if strict:
        first, items, index = _scan_strict(head, limits)
    else:
        # A bare CR ends a line too: kept inside a value it would inject a header when the
        # message is written out again (message.serialize refuses that).
        lines = head.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        # Line folding (§7.3.1): a line starting with SP/HT continues the previous one.
        if any(ln[:1] in (" ", "\t") for ln in lines[1:]):
            lines = _unfold(lines)
        first = lines[0]
        items = _parse_headers(lines, strict, limits)
        index = build_index(items)
    headers = Headers(items, index)
    body = _frame_body(headers, body, strict, limits)
    msg: Request | Response
    if first.startswith("SIP/") or (not strict and first[:4].upper() == "SIP/"):
        msg = _response(first, headers, body, strict)
    else:
        msg = _request(first, headers, body, strict)
    if strict:
        _validate(msg)
    return msg


# One header line: token name, HCOLON, value up to CRLF (§7.3.1). Possessive quantifiers keep the
# match linear on hostile whitespace runs.
_LINE_RE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*+:[ \t]*+([^\r\n]*+)\r\n")
_BLOCK_RE = re.compile(r"(?:[A-Za-z0-9\-.!%*_+`'~]++[ \t]*+:[^\r\n]*+\r\n)*+")
_FOLD_RE = re.compile(r"[ \t]*+\r\n[ \t]++")
_NAME_KEYS: dict[str, tuple[str, str]] = {}


def _name_key(name: str) -> tuple[str, str]:
    nk = _NAME_KEYS.get(name)
    if nk is None:
        c = _CANONICAL.get(name.lower(), name)
        nk = (c, c.lower())
        if len(_NAME_KEYS) < _NAME_CACHE_MAX:  # bounded: hostile input may invent names
            _NAME_KEYS[name] = nk
    return nk


def _scan_strict(
    head: str, limits: ParseLimits
) -> tuple[str, list[tuple[str, str]], dict[str, list[int]]]:
    """Split start line and header fields in one regex pass; on any mismatch fall back to the
    line-by-line parser, which reports the precise line and rule."""
    eol = head.find("\r\n")
    if eol < 0:
        first, rest = head, ""
    else:
        first, rest = head[:eol], head[eol + 2 :] + "\r\n"
    if "\r\n " in rest or "\r\n\t" in rest:
        rest = _FOLD_RE.sub(" ", rest)
    if "\r" in first or "\n" in first:
        raise SipParseError("bare CR or LF in start line", line=1, rule="RFC 3261 §7.1")
    if _BLOCK_RE.fullmatch(rest) is None or _CTL_RE.search(rest) is not None:
        lines = [first, *rest[:-2].split("\r\n")] if rest else [first]
        _parse_headers(lines, True, limits)  # raises with line and rule
        raise SipParseError("malformed header section", rule="RFC 3261 §7.3")
    pairs = _LINE_RE.findall(rest)
    nlines = len(pairs)
    if nlines > limits.max_headers:
        raise SipParseError(
            f"{nlines} header lines exceed limit {limits.max_headers}", rule="limit max_headers"
        )
    if len(rest) > limits.max_header_bytes:
        longest = max(len(v) + len(n) + 2 for n, v in pairs)
        if longest > limits.max_header_bytes:
            raise SipParseError(
                f"header line of {longest} bytes exceeds limit {limits.max_header_bytes}",
                rule="limit max_header_bytes",
            )
    items: list[tuple[str, str]] = []
    index: dict[str, list[int]] = {}
    keys = _NAME_KEYS
    for i, (name, value) in enumerate(pairs):
        nk = keys.get(name)
        canonical, key = nk if nk is not None else _name_key(name)
        if value[-1:] in (" ", "\t"):
            value = value.rstrip(" \t")
        items.append((canonical, value))
        pos = index.get(key)
        if pos is None:
            index[key] = [i]
        else:
            pos.append(i)
    return first, items, index


def _unfold(lines: list[str]) -> list[str]:
    out: list[str] = [lines[0]]
    for ln in lines[1:]:
        if ln[:1] in (" ", "\t") and len(out) > 1:
            out[-1] = out[-1].rstrip(" \t") + " " + ln.lstrip(" \t")
        elif ln[:1] in (" ", "\t"):
            raise SipParseError(
                "continuation line before any header", line=2, rule="RFC 3261 §7.3.1 LWS"
            )
        else:
            out.append(ln)
    return out


def _parse_headers(lines: list[str], strict: bool, limits: ParseLimits) -> list[tuple[str, str]]:
    if len(lines) - 1 > limits.max_headers:
        raise SipParseError(
            f"{len(lines) - 1} header lines exceed limit {limits.max_headers}",
            rule="limit max_headers",
        )
    max_len = limits.max_header_bytes
    items: list[tuple[str, str]] = []
    append = items.append
    lineno = 1
    for line in lines[1:]:
        lineno += 1
        if len(line) > max_len:
            raise SipParseError(
                f"header line of {len(line)} bytes exceeds limit {max_len}",
                line=lineno,
                rule="limit max_header_bytes",
            )
        name, colon, value = line.partition(":")
        if not colon:
            if not strict and not line.strip():
                continue
            raise SipParseError(
                f"header line without ':' {line[:40]!r}",
                line=lineno,
                rule="RFC 3261 §7.3 message-header",
            )
        name = name.rstrip(" \t")
        if strict and not _TOKEN_RE.match(name):
            raise SipParseError(
                f"invalid header name {name[:40]!r}", line=lineno, rule="RFC 3261 §25.1 header-name"
            )
        value = value.strip(" \t")
        bad = _VALUE_BAD.search(value) if strict else None
        if bad is not None:
            code = ord(bad.group())
            if code in (10, 13):
                raise SipParseError(
                    "CR or LF inside a header value",
                    line=lineno,
                    rule="RFC 3261 §25.1 header-value",
                )
            raise SipParseError(
                f"control character 0x{code:02x} in {_name_key(name)[0][:40]} header",
                line=lineno,
                rule="RFC 3261 §25.1 TEXT-UTF8",
            )
        append((_name_key(name)[0], value))
    return items


def _frame_body(headers: Headers, body: bytes, strict: bool, limits: ParseLimits) -> bytes:
    lines = headers.get_lines("Content-Length")
    if len(body) > limits.max_body_bytes:
        raise SipParseError(
            f"body of {len(body)} bytes exceeds limit {limits.max_body_bytes}",
            rule="limit max_body_bytes",
            status_hint=413,
        )
    if not lines:
        return body
    if strict and len(set(v.strip() for v in lines)) > 1:
        raise SipParseError("conflicting Content-Length headers", rule="RFC 3261 §20.14")
    text = lines[0].strip()
    if not text.isdigit() or len(text) > 10:
        raise SipParseError(
            f"invalid Content-Length {text[:20]!r}", rule="RFC 3261 §20.14 Content-Length"
        )
    length = int(text)
    if length > len(body):
        if strict:
            raise SipParseError(
                f"Content-Length {length} larger than the {len(body)} body bytes received",
                rule="RFC 3261 §18.3",
            )
        return body
    # §18.3: bytes beyond Content-Length in a datagram are discarded.
    return body[:length]


def _request(first: str, headers: Headers, body: bytes, strict: bool) -> Request:
    parts = first.split(" ")
    if len(parts) != 3:
        if strict:
            raise SipParseError(
                f"malformed request line {first[:60]!r}", line=1, rule="RFC 3261 §25.1 Request-Line"
            )
        parts = first.split()
        if len(parts) != 3:
            raise SipParseError(
                f"malformed request line {first[:60]!r}", line=1, rule="RFC 3261 §25.1 Request-Line"
            )
    method, uri_text, version = parts
    if not _TOKEN_RE.match(method):
        raise SipParseError(f"invalid method {method[:20]!r}", line=1, rule="RFC 3261 §25.1 Method")
    if version.upper() != "SIP/2.0":
        raise SipParseError(
            f"unsupported version {version[:20]!r}",
            line=1,
            rule="RFC 3261 §7.1 SIP-Version",
            status_hint=505,
        )
    if uri_text.startswith("<"):
        raise SipParseError(
            "Request-URI must not be enclosed in <>", line=1, rule="RFC 3261 §25.1 Request-URI"
        )
    try:
        uri = parse_uri(uri_text, strict=strict)
    except SipParseError as exc:
        raise SipParseError(
            f"bad Request-URI: {exc}", line=1, rule=exc.rule, status_hint=exc.status_hint
        ) from None
    return Request(headers, body, method=method, uri=uri, version="SIP/2.0")


def _response(first: str, headers: Headers, body: bytes, strict: bool) -> Response:
    m = _STATUS_RE.match(first)
    if m is None:
        raise SipParseError(
            f"malformed status line {first[:60]!r}", line=1, rule="RFC 3261 §25.1 Status-Line"
        )
    version, code, reason = m.groups()
    if version.upper() != "SIP/2.0":
        raise SipParseError(
            f"unsupported version {version[:20]!r}",
            line=1,
            rule="RFC 3261 §7.1 SIP-Version",
            status_hint=505,
        )
    status = int(code)
    if not 100 <= status <= 699:
        raise SipParseError(f"status code {status} outside 100-699", line=1, rule="RFC 3261 §21")
    if strict and _REASON_BAD.search(reason):
        raise SipParseError(
            "control character in reason phrase", line=1, rule="RFC 3261 §25.1 Reason-Phrase"
        )
    return Response(headers, body, status=status, reason=reason, version="SIP/2.0")


_SINGLE_KEYS = tuple(n.lower() for n in _SINGLE)
_MANDATORY = (
    ("via", "Via"),
    ("from", "From"),
    ("to", "To"),
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
)


def _validate(msg: Request | Response) -> None:
    """§8.1.1 mandatory headers, single-instance headers, and typed parse of the ones every
    hop relies on (this fills the message's cache, so later access is free)."""
    index = msg.headers._index
    for key in _SINGLE_KEYS:
        pos = index.get(key)
        if pos is not None and len(pos) > 1:
            raise SipParseError(
                f"more than one {msg.headers._items[pos[0]][0]} header", rule="RFC 3261 §7.3.1"
            )
    for key, name in _MANDATORY:
        if key not in index:
            raise SipParseError(f"missing mandatory {name} header", rule="RFC 3261 §8.1.1")
    call_id = msg.call_id
    if not call_id or " " in call_id:
        raise SipParseError("invalid Call-ID", rule="RFC 3261 §25.1 callid")
    msg.vias  # noqa: B018 - parse for validation (and caching)
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    if "contact" in index:
        msg.contacts  # noqa: B018
    cseq = msg.cseq
    if isinstance(msg, Request):
        if "max-forwards" in index:
            msg.max_forwards  # noqa: B018
        if cseq.method != msg.method:
            raise SipParseError(
                f"CSeq method {cseq.method!r} does not match request method {msg.method!r}",
                rule="RFC 3261 §8.1.1.5",
            )


_CL_RE = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t]*\r\n", re.I)


def frame_stream(
    buffer: bytes | bytearray, *, limits: ParseLimits = DEFAULT_LIMITS
) -> tuple[bytes | None, int]:
    """Find the first complete message in a stream buffer (TCP/TLS, §18.3).

    Returns ``(message_bytes, consumed)``; ``(None, consumed)`` when more data is needed, where
    ``consumed`` counts leading CRLF keep-alives (RFC 5626 §4.4.1) that may be dropped. A missing
    Content-Length on a stream, or an oversized header section, is unrecoverable framing and
    raises SipParseError: the connection must be closed."""
    start = 0
    n = len(buffer)
    while start < n and buffer[start] in (13, 10):
        start += 1
    sep = buffer.find(b"\r\n\r\n", start)
    if sep < 0:
        if n - start > limits.max_message_bytes:
            raise SipParseError(
                "header section exceeds message size limit",
                rule="limit max_message_bytes",
                status_hint=513,
            )
        return None, start
    head = b"\r\n" + bytes(buffer[start : sep + 2])
    m = _CL_RE.search(head)
    if m is None:
        raise SipParseError("stream message without Content-Length", rule="RFC 3261 §18.3")
    length = int(m.group(1))
    end = sep + 4 + length
    if end - start > limits.max_message_bytes:
        raise SipParseError(
            "message exceeds size limit", rule="limit max_message_bytes", status_hint=513
        )
    if n < end:
        return None, start
    return bytes(buffer[start:end]), end


# --- optional C accelerator (src/callward/sip/_speedups.c) -----------------------------------
# Built by setup.py when a C compiler and Python.h are present; CALLWARD_PURE_PYTHON=1 (at import
# or at build time) keeps everything in pure Python. The accelerator fills the slots of these
# classes directly, so it is only enabled when their fields are exactly the ones it knows.
_ACCEL_FIELDS: dict[type, tuple[str, ...]] = {
    Request: ("headers", "body", "_cache", "method", "uri", "version"),
    Response: ("headers", "body", "_cache", "status", "reason", "version"),
    SipURI: ("host", "user", "password", "port", "params", "headers", "scheme"),
    NameAddr: ("uri", "display", "params", "angle"),
    Via: ("transport", "host", "port", "params", "protocol"),
    CSeq: ("seq", "method"),
}


_ACCEL_API = 7


def _load_accelerator() -> Callable[[bytes, ParseLimits], Request | Response | None] | None:
    if os.environ.get("CALLWARD_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from callward.sip import _speedups
    except ImportError:
        return None
    if getattr(_speedups, "API_VERSION", None) != _ACCEL_API:
        return None  # built from another version of _speedups.c: reinstall to rebuild
    for cls, names in _ACCEL_FIELDS.items():
        slots = {s for k in cls.__mro__ for s in k.__dict__.get("__slots__", ())}
        if tuple(f.name for f in dataclasses.fields(cls)) != names or slots != set(names):
            return None
    if set(Headers.__slots__) != {"_items", "_index"}:
        return None
    _speedups.setup(
        Request, Response, Headers, SipURI, NameAddr, Via, CSeq, _CANONICAL, ParseLimits
    )
    return _speedups.parse


_accelerated_parse = _load_accelerator()
ACCELERATED: bool = _accelerated_parse is not None
"""True when strict parsing runs through the compiled accelerator."""
