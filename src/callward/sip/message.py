"""SIP requests and responses as immutable values (RFC 3261 §7).

Headers keep their order and their raw (unfolded) text; typed views (Via, From, CSeq, ...) are
parsed on first access and cached per message. Every change returns a new message, which keeps
transactions and retransmissions honest: what was sent is what is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from callward.errors import LocalProtocolError, SipParseError
from callward.sip.headers import (
    COMPACT_FORMS,
    LIST_HEADERS,
    AuthHeader,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    header_params,
    parse_auth,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)
from callward.sip.uri import URI, parse_uri

__all__ = [
    "REASON_PHRASES",
    "Headers",
    "Message",
    "Request",
    "Response",
    "make_response",
    "serialize",
]

_COMPACT_OF = {full: short for short, full in COMPACT_FORMS.items()}
# Compact forms map to the full name's index key ("v" → "via").
_LOOKUP_KEY = {short: full.lower() for short, full in COMPACT_FORMS.items()}
_LOOKUP_KEY.update({short.upper(): full.lower() for short, full in COMPACT_FORMS.items()})


def build_index(items: Iterable[tuple[str, str]]) -> dict[str, list[int]]:
    """Lower-cased canonical name → positions, for already-canonical ``items``."""
    index: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(items):
        key = name.lower()
        pos = index.get(key)
        if pos is None:
            index[key] = [i]
        else:
            pos.append(i)
    return index


class Headers:
    """An immutable, ordered list of ``(canonical name, value)`` pairs.

    Lookups are case-insensitive and accept compact forms. Repeated header lines and
    comma-joined values are both preserved as sent; :meth:`values` splits list headers."""

    __slots__ = ("_index", "_items")

    def __init__(
        self,
        items: Iterable[tuple[str, str]] = (),
        index: dict[str, list[int]] | None = None,
    ) -> None:
        """``index`` (lower-cased canonical name → positions) is passed by the parser, which
        already canonicalized the names; otherwise names are canonicalized here."""
        if index is not None:
            self._items: tuple[tuple[str, str], ...] = tuple(items)
            self._index: dict[str, list[int]] = index
            return
        self._items = tuple((canonical_name(n), v) for n, v in items)
        self._index = build_index(self._items)

    @staticmethod
    def _trusted(items: Iterable[tuple[str, str]]) -> Headers:
        """Build from already-canonical names: no canonical_name pass, just the index (the
        edge edits headers several times per forwarded message; re-canonicalizing every
        line on each edit was ~7 % of its CPU)."""
        h = object.__new__(Headers)
        h._items = tuple(items)
        h._index = build_index(h._items)
        return h

    @staticmethod
    def _with(items: tuple[tuple[str, str], ...], index: dict[str, list[int]]) -> Headers:
        """Wrap items and their (already correct) index. Index lists are never mutated after
        construction, so an edit may share the unchanged ones with the original."""
        h = object.__new__(Headers)
        h._items = items
        h._index = index
        return h

    def _positions(self, name: str) -> list[int]:
        pos = self._index.get(name.lower())
        if pos is None:
            key = _LOOKUP_KEY.get(name)
            if key is None:
                key = canonical_name(name).lower()
            pos = self._index.get(key)
        return pos if pos is not None else []

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._positions(name))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"

    def items(self) -> tuple[tuple[str, str], ...]:
        return self._items

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first header line's value (not split)."""
        pos = self._positions(name)
        return self._items[pos[0]][1] if pos else default

    def get_lines(self, name: str) -> list[str]:
        """Every line's value, in order, not split on commas."""
        return [self._items[i][1] for i in self._positions(name)]

    def values(self, name: str) -> list[str]:
        """All values in order; list headers (§7.3.1) are split on unquoted commas."""
        lines = self.get_lines(name)
        if canonical_name(name) in LIST_HEADERS:
            out: list[str] = []
            for line in lines:
                out.extend(split_list(line))
            return out
        return lines

    # Editing: each returns a new Headers. Names in ``_items`` are already canonical, so an edit
    # only canonicalizes the name it adds and updates the index, rather than rebuilding both.
    def append(self, name: str, value: str) -> Headers:
        cname = canonical_name(name)
        key = cname.lower()
        index = dict(self._index)
        pos = index.get(key)
        n = len(self._items)
        index[key] = [n] if pos is None else [*pos, n]
        return Headers._with((*self._items, (cname, value)), index)

    def prepend(self, name: str, value: str) -> Headers:
        """Insert as the first line of ``name`` (or first overall if absent): Via, Record-Route."""
        cname = canonical_name(name)
        pos = self._positions(cname)
        at = pos[0] if pos else 0
        items = self._items
        return Headers._trusted((*items[:at], (cname, value), *items[at:]))

    def remove(self, name: str) -> Headers:
        drop = self._positions(name)
        if not drop:
            return self
        if len(drop) == 1:
            i = drop[0]
            return Headers._trusted(self._items[:i] + self._items[i + 1 :])
        gone = set(drop)
        return Headers._trusted([it for i, it in enumerate(self._items) if i not in gone])

    def set(self, name: str, value: str) -> Headers:
        """Replace every line of ``name`` with one line, kept at the first line's position."""
        cname = canonical_name(name)
        pos = self._positions(cname)
        if not pos:
            return self.append(cname, value)
        first = pos[0]
        items = self._items
        if len(pos) == 1 and items[first][0] == cname:
            # Same position, same name: the index is unchanged and can be shared.
            return Headers._with((*items[:first], (cname, value), *items[first + 1 :]), self._index)
        drop = set(pos[1:])
        return Headers._trusted(
            [(cname, value) if i == first else it for i, it in enumerate(items) if i not in drop]
        )

    def pop_first_value(self, name: str) -> tuple[str | None, Headers]:
        """Remove the first value of a list header even when it shares a line with others
        (a proxy removing its Via from ``Via: a, b``)."""
        pos = self._positions(name)
        if not pos:
            return None, self
        i = pos[0]
        items = self._items
        cname, line = items[i]
        if "," not in line:
            # One value on the line (the usual case): split_list would return it stripped.
            value = line.strip()
            return (value or None), Headers._trusted(items[:i] + items[i + 1 :])
        if '"' in line or "<" in line:
            parts = split_list(line)
        else:
            # No quotes or angle brackets: split_list reduces to a plain comma split (a
            # proxy's own Via often shares a line with the next hop's: ``Via: a, b``).
            parts = [x for x in (p.strip() for p in line.split(",")) if x]
        if len(parts) <= 1:
            return (parts[0] if parts else None), Headers._trusted(items[:i] + items[i + 1 :])
        rest = (*items[:i], (cname, ", ".join(parts[1:])), *items[i + 1 :])
        return parts[0], Headers._with(rest, self._index)


def _new_cache() -> dict[str, Any]:
    return {}


@dataclass(frozen=True, slots=True)
class Message:
    """Fields and typed accessors shared by requests and responses."""

    headers: Headers
    body: bytes = b""
    _cache: dict[str, Any] = field(
        default_factory=_new_cache, compare=False, repr=False, hash=False, kw_only=True
    )

    def _require(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"missing {name} header", rule="RFC 3261 §8.1.1")
        return value

    @property
    def vias(self) -> tuple[Via, ...]:
        v = self._cache.get("via")
        if v is None:
            v = tuple(parse_via(x) for x in self.headers.values("Via"))
            self._cache["via"] = v
        return v

    @property
    def top_via(self) -> Via:
        v = self._cache.get("top-via")
        if v is None:
            vias = self._cache.get("via")
            if vias is None:  # parse only the first (a proxy asks for it many times)
                values = self.headers.values("Via")[:1]
                vias = (parse_via(values[0]),) if values else ()
            if not vias:
                raise SipParseError("missing Via header", rule="RFC 3261 §8.1.1.7")
            v = self._cache["top-via"] = vias[0]
        return v

    @property
    def from_(self) -> NameAddr:
        v = self._cache.get("from")
        if v is None:
            v = parse_name_addr(self._require("From"))
            self._cache["from"] = v
        return v

    @property
    def to(self) -> NameAddr:
        v = self._cache.get("to")
        if v is None:
            v = parse_name_addr(self._require("To"))
            self._cache["to"] = v
        return v

    @property
    def call_id(self) -> str:
        v = self._cache.get("call-id")
        if v is None:
            v = self._require("Call-ID").strip()
            self._cache["call-id"] = v
        return v

    @property
    def cseq(self) -> CSeq:
        v = self._cache.get("cseq")
        if v is None:
            v = parse_cseq(self._require("CSeq"))
            self._cache["cseq"] = v
        return v

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        value = value.strip()
        # Leading zeros are legal (RFC 4475 §3.1.1.1); the value is 0..255 (§20.22).
        if not value.isdigit() or len(value) > 10 or int(value) > 255:
            raise SipParseError(f"invalid Max-Forwards {value[:10]!r}", rule="RFC 3261 §20.22")
        return int(value)

    @property
    def contacts(self) -> tuple[NameAddr, ...]:
        """Contact values; ``Contact: *`` yields an empty tuple (see :attr:`contact_star`)."""
        v = self._cache.get("contact")
        if v is None:
            v = tuple(parse_name_addr(x) for x in self.headers.values("Contact") if x != "*")
            self._cache["contact"] = v
        return v

    @property
    def contact_star(self) -> bool:
        return any(x.strip() == "*" for x in self.headers.values("Contact"))

    @property
    def routes(self) -> tuple[NameAddr, ...]:
        return tuple(parse_name_addr(x) for x in self.headers.values("Route"))

    @property
    def record_routes(self) -> tuple[NameAddr, ...]:
        return tuple(parse_name_addr(x) for x in self.headers.values("Record-Route"))

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return None if value is None else value.split(";", 1)[0].strip().lower()

    @property
    def expires(self) -> int | None:
        value = self.headers.get("Expires")
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit():
            raise SipParseError(f"invalid Expires {value[:12]!r}", rule="RFC 3261 §20.19")
        return min(int(value), 2**32 - 1)

    @property
    def session_expires(self) -> tuple[int, str] | None:
        """``(delta-seconds, refresher)`` from Session-Expires (RFC 4028 §4; refresher lower
        case, "" when absent), None when there is no such header."""
        value = self.headers.get("Session-Expires")
        if value is None:
            return None
        delta = value.partition(";")[0].strip()
        if not delta.isdigit() or len(delta) > 10:
            raise SipParseError(f"invalid Session-Expires {delta[:12]!r}", rule="RFC 4028 §4")
        refresher = ""
        for k, v in header_params(value):
            if k.lower() == "refresher" and v:
                refresher = v.lower()
        return int(delta), refresher

    @property
    def min_se(self) -> int | None:
        """Min-SE delta-seconds (RFC 4028 §5), None when absent."""
        value = self.headers.get("Min-SE")
        if value is None:
            return None
        delta = value.partition(";")[0].strip()
        if not delta.isdigit() or len(delta) > 10:
            raise SipParseError(f"invalid Min-SE {delta[:12]!r}", rule="RFC 4028 §5")
        return int(delta)

    def auth(self, name: str) -> list[AuthHeader]:
        """Parsed WWW-Authenticate / Proxy-Authenticate / (Proxy-)Authorization lines."""
        return [parse_auth(x) for x in self.headers.get_lines(name)]

    @property
    def transaction_key(self) -> tuple[str, str, str]:
        """(branch, sent-by, method) per §17.2.3; ACK maps to its INVITE, CANCEL stays apart."""
        via = self.top_via
        branch = via.branch or ""
        method = self.cseq.method
        if method == "ACK":
            method = "INVITE"
        return branch, f"{via.host.lower()}:{via.port or ''}", method


@dataclass(frozen=True, slots=True)
class Request(Message):
    method: str = "OPTIONS"
    uri: URI = field(default_factory=lambda: parse_uri("sip:invalid"))
    version: str = "SIP/2.0"

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def replace(
        self,
        *,
        headers: Headers | None = None,
        body: bytes | None = None,
        method: str | None = None,
        uri: URI | None = None,
    ) -> Request:
        """A copy with some parts changed (and a fresh typed-header cache)."""
        return Request(
            self.headers if headers is None else headers,
            self.body if body is None else body,
            method=self.method if method is None else method,
            uri=self.uri if uri is None else uri,
            version=self.version,
        )

    def __bytes__(self) -> bytes:
        return serialize(self)


@dataclass(frozen=True, slots=True)
class Response(Message):
    status: int = 200
    reason: str = "OK"
    version: str = "SIP/2.0"

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def replace(
        self,
        *,
        headers: Headers | None = None,
        body: bytes | None = None,
        status: int | None = None,
        reason: str | None = None,
    ) -> Response:
        """A copy with some parts changed (and a fresh typed-header cache)."""
        return Response(
            self.headers if headers is None else headers,
            self.body if body is None else body,
            status=self.status if status is None else status,
            reason=self.reason if reason is None else reason,
            version=self.version,
        )

    def __bytes__(self) -> bytes:
        return serialize(self)


def serialize(msg: Request | Response, *, compact: bool = False) -> bytes:
    """Wire bytes. Content-Length always reflects the body (mandatory on streams, §20.14);
    ``compact`` uses compact header names to save bytes on metered links."""
    parts = [msg.start_line(), "\r\n"]
    clen = str(len(msg.body))
    seen_len = False
    for name, value in msg.headers._items:
        if name == "Content-Length":
            if seen_len:
                continue
            seen_len = True
            value = clen
        if compact:
            name = _COMPACT_OF.get(name, name)
        parts += [name, ": ", value, "\r\n"]
    if not seen_len:
        parts += ["l" if compact else "Content-Length", ": ", clen, "\r\n"]
    parts.append("\r\n")
    text = "".join(parts)
    # Header injection guard: a CR or LF inside a value (or the start line) would end the line
    # early and smuggle a header of the sender's choosing. Two C-speed counts, no per-value scan.
    lines = (len(parts) - 3) // 4 + 2
    if text.count("\n") != lines or text.count("\r") != lines:
        _refuse_injection(msg)
    head = text.encode("utf-8", "surrogateescape")
    return head + msg.body if msg.body else head


def _refuse_injection(msg: Request | Response) -> None:
    for name, value in (("start line", msg.start_line()), *msg.headers._items):
        if "\r" in value or "\n" in value:
            raise LocalProtocolError(f"CR or LF inside the {name[:40]} value (header injection)")
    raise LocalProtocolError("CR or LF inside a header name (header injection)")


REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 429: "Too Many Requests",
    430: "Flow Failed", 439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    493: "Undecipherable", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}  # fmt: skip


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """Build a response per §8.2.6.2: Via (all, in order), From, Call-ID and CSeq copied,
    To copied with our tag added (unless already tagged); Record-Route copied for
    dialog-creating responses (§12.1.1)."""
    items: list[tuple[str, str]] = []
    for name, value in request.headers:
        if name in ("Via", "From", "Call-ID", "CSeq"):
            items.append((name, value))
        elif name == "To":
            if to_tag is not None and request.to.tag is None and status > 100:
                value = str(request.to.with_tag(to_tag))
            items.append((name, value))
        elif name == "Record-Route" and 100 < status < 300:
            items.append((name, value))
    items.extend((canonical_name(n), v) for n, v in extra)
    return Response(
        Headers._trusted(items),
        body,
        status=status,
        reason=reason if reason is not None else REASON_PHRASES.get(status, "Unknown"),
    )
