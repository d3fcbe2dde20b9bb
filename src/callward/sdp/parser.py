"""SDP parser (RFC 8866 §5, §9 grammar) with explicit limits and two modes.

* ``strict=True``: the grammar as written. Lines end with CRLF, types appear in the order of
  §5 and at most as often as §9 allows, ``v=``, ``o=``, ``s=`` and ``t=`` are present, an
  unknown type letter rejects the whole description (§5: "MUST completely ignore any session
  description that contains a type letter that it does not understand"), every RTP stream has
  a connection address, and every dynamic payload type has an ``a=rtpmap`` (§6.6).
* ``strict=False`` (the default, for legacy PBXs and phones): bare LF line ends, blank lines,
  types out of order, upper-case type letters, runs of spaces between fields, unknown type
  letters (ignored), missing ``s=``/``t=``/``v=``. What the model cannot hold still fails.

Every failure is an :class:`~callward.errors.SdpError` naming the 1-based line and the rule,
with ``status_hint`` 400 (unparseable body) so an edge can answer precisely.
"""

from __future__ import annotations

from callward.errors import SdpError
from callward.sdp.model import (
    Attribute,
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    SdpLimits,
    SessionDescription,
    Timing,
    is_digits,
)

__all__ = ["DEFAULT_LIMITS", "parse_sdp"]

DEFAULT_LIMITS = SdpLimits()

# RFC 8866 §5: the order of lines in the session section and in each media section.
_SESSION_RANK = {
    "v": 0, "o": 1, "s": 2, "i": 3, "u": 4, "e": 5, "p": 6, "c": 7, "b": 8,
    "t": 9, "r": 10, "z": 11, "k": 12, "a": 13,
}  # fmt: skip
_MEDIA_RANK = {"i": 1, "c": 2, "b": 3, "k": 4, "a": 5}
# Types that may repeat (§9 grammar: `*` / `1*`); `t` may also follow its `r` lines.
_SESSION_REPEAT = frozenset("epbtra")
_MEDIA_REPEAT = frozenset("cba")


def _err(n: int, message: str, rule: str) -> SdpError:
    return SdpError(message, line=n, rule=rule, status_hint=400)


def _int(text: str, n: int, rule: str, what: str) -> int:
    if not is_digits(text, 20):
        raise _err(n, f"{what} must be a decimal number, got {text[:40]!r}", rule)
    return int(text)


def _fields(value: str, strict: bool) -> list[str]:
    return value.split(" ") if strict else value.split()


def _decode(data: bytes | str, strict: bool, limits: SdpLimits) -> str:
    if isinstance(data, str):
        if len(data) > limits.max_bytes:
            raise _err(0, f"SDP longer than {limits.max_bytes} bytes", "limit max_bytes")
        return data
    if len(data) > limits.max_bytes:
        raise _err(0, f"SDP longer than {limits.max_bytes} bytes", "limit max_bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # RFC 8866 §5: text fields are UTF-8 unless a=charset says otherwise. Legacy PBXs put
        # Latin-1 in s=/i=; tolerant mode keeps the structure and replaces the odd bytes.
        if not strict:
            return data.decode("utf-8", "replace")
        raise _err(
            0, f"SDP is not UTF-8 (byte offset {exc.start})", "RFC 8866 §5 charset"
        ) from None


def _split_lines(text: str, strict: bool, limits: SdpLimits) -> list[str]:
    if "\x00" in text:
        raise _err(0, "NUL byte in SDP", "RFC 8866 §9 text")
    if strict:
        lines = text.split("\r\n")
        if lines and lines[-1] == "":
            lines.pop()
        for i, line in enumerate(lines, 1):
            if "\n" in line or "\r" in line:
                raise _err(i, "line not ended by CRLF", "RFC 8866 §5 CRLF")
    else:
        lines = text.replace("\r\n", "\n").split("\n")
        lines = [ln.rstrip("\r") for ln in lines]
    if len(lines) > limits.max_lines:
        raise _err(0, f"more than {limits.max_lines} lines", "limit max_lines")
    return lines


class _Section:
    """Mutable accumulator for one media section; frozen into a MediaDescription at the end."""

    __slots__ = ("attributes", "bandwidths", "connections", "info", "key", "m", "m_line", "rank")

    def __init__(self, m: tuple[str, int, int | None, str, tuple[str, ...]], line: int) -> None:
        self.m = m
        self.m_line = line
        self.info: str | None = None
        self.connections: list[Connection] = []
        self.bandwidths: list[Bandwidth] = []
        self.key: str | None = None
        self.attributes: list[Attribute] = []
        self.rank = 0

    def freeze(self) -> MediaDescription:
        media, port, count, proto, fmts = self.m
        return MediaDescription(
            media=media,
            port=port,
            proto=proto,
            formats=fmts,
            port_count=count,
            information=self.info,
            connections=tuple(self.connections),
            bandwidths=tuple(self.bandwidths),
            key=self.key,
            attributes=tuple(self.attributes),
        )


def _parse_m(value: str, n: int, strict: bool) -> tuple[str, int, int | None, str, tuple[str, ...]]:
    rule = "RFC 8866 §5.14 media-field"
    f = _fields(value, strict)
    if len(f) < 4 or any(not x for x in f):
        raise _err(n, "m= needs <media> <port> <proto> <fmt> ...", rule)
    port_s, _, count_s = f[1].partition("/")
    port = _int(port_s, n, rule, "m= port")
    if port > 65535:
        raise _err(n, f"m= port {port} out of range", rule)
    count = _int(count_s, n, rule, "m= number of ports") if count_s else None
    if count == 0:
        raise _err(n, "m= number of ports must be at least 1", rule)
    return f[0], port, count, f[2], tuple(f[3:])


def _parse_o(value: str, n: int, strict: bool) -> Origin:
    rule = "RFC 8866 §5.2 origin-field"
    f = _fields(value, strict)
    if len(f) != 6 or any(not x for x in f):
        raise _err(n, "o= needs 6 fields", rule)
    if strict:
        _int(f[1], n, rule, "o= sess-id")
    version = _int(f[2], n, rule, "o= sess-version")
    return Origin(f[0], f[1], version, f[3], f[4], f[5])


def _parse_c(value: str, n: int, strict: bool) -> Connection:
    f = _fields(value, strict)
    if len(f) != 3 or any(not x for x in f):
        raise _err(n, "c= needs <nettype> <addrtype> <address>", "RFC 8866 §5.7 connection-field")
    return Connection(nettype=f[0], addrtype=f[1], address=f[2])


def _parse_b(value: str, n: int, strict: bool) -> Bandwidth:
    rule = "RFC 8866 §5.8 bandwidth-field"
    bwtype, sep, bw = value.partition(":")
    if not strict:
        bwtype, bw = bwtype.strip(), bw.strip()
    if not sep or not bwtype or " " in bwtype:
        raise _err(n, "b= needs <bwtype>:<bandwidth>", rule)
    return Bandwidth(bwtype, _int(bw, n, rule, "b= bandwidth"))


def _parse_t(value: str, n: int, strict: bool) -> Timing:
    rule = "RFC 8866 §5.9 time-field"
    f = _fields(value, strict)
    if len(f) != 2:
        raise _err(n, "t= needs <start-time> <stop-time>", rule)
    return Timing(_int(f[0], n, rule, "t= start"), _int(f[1], n, rule, "t= stop"))


def _parse_a(value: str, n: int, strict: bool) -> Attribute:
    name, sep, val = value.partition(":")
    if not strict:
        name = name.strip()
    if not name or " " in name or "\t" in name:
        raise _err(n, f"bad attribute name {name[:40]!r}", "RFC 8866 §5.13 attribute")
    return Attribute(name, val if sep else None)


def _ws(value: str, n: int, strict: bool, rule: str) -> str:
    v = value if strict else value.strip(" \t")
    if not v or v != v.strip(" \t"):
        raise _err(n, "field is empty or has surrounding spaces", rule)
    return v


def parse_sdp(
    data: bytes | str, *, strict: bool = False, limits: SdpLimits = DEFAULT_LIMITS
) -> SessionDescription:
    """Parse one SDP body. See the module docstring for what each mode accepts."""
    lines = _split_lines(_decode(data, strict, limits), strict, limits)
    version: int | None = None
    origin: Origin | None = None
    name: str | None = None
    info: str | None = None
    uri: str | None = None
    emails: list[str] = []
    phones: list[str] = []
    conn: Connection | None = None
    bws: list[Bandwidth] = []
    timings: list[Timing] = []
    zone: str | None = None
    key: str | None = None
    attrs: list[Attribute] = []
    media: list[_Section] = []
    cur: _Section | None = None
    rank = -1
    seen: set[str] = set()
    n_attrs = 0
    n = 0
    try:
        max_len = limits.max_line_length
        max_attrs = limits.max_attributes
        for n, line in enumerate(lines, 1):
            if len(line) > max_len:
                raise _err(n, f"line longer than {max_len}", "limit max_line_length")
            if cur is not None and line[:2] == "a=":
                # Fast path for the commonest line: a media attribute. ``a`` ranks last in a
                # media section, so no order check applies; the model validates the name.
                n_attrs += 1
                if n_attrs > max_attrs:
                    raise _err(n, "too many attributes", "limit max_attributes")
                aname, sep, val = line[2:].partition(":")
                if not strict:
                    aname = aname.strip()
                cur.attributes.append(Attribute(aname, val if sep else None))
                cur.rank = 5
                continue
            if not line:
                if strict:
                    raise _err(n, "empty line", "RFC 8866 §5 type=value")
                continue
            if len(line) < 2 or line[1] != "=":
                raise _err(
                    n, f"expected <type>=<value>, got {line[:40]!r}", "RFC 8866 §5 type=value"
                )
            t = line[0]
            value = line[2:]
            if not strict:
                t = t.lower()
            if t == "m":
                if len(media) >= limits.max_media:
                    raise _err(n, f"more than {limits.max_media} m= lines", "limit max_media")
                cur = _Section(_parse_m(value, n, strict), n)
                media.append(cur)
                continue
            if cur is not None:
                r = _MEDIA_RANK.get(t)
                if r is None:
                    if strict or t in _SESSION_RANK:
                        raise _err(n, f"{t}= not allowed in a media section", "RFC 8866 §5 order")
                    continue
                if strict and (r < cur.rank or (r == cur.rank and t not in _MEDIA_REPEAT)):
                    raise _err(n, f"{t}= out of order or repeated", "RFC 8866 §5 order")
                cur.rank = r
                if t == "a":
                    n_attrs += 1
                    if n_attrs > limits.max_attributes:
                        raise _err(n, "too many attributes", "limit max_attributes")
                    cur.attributes.append(_parse_a(value, n, strict))
                elif t == "c":
                    cur.connections.append(_parse_c(value, n, strict))
                elif t == "b":
                    cur.bandwidths.append(_parse_b(value, n, strict))
                elif t == "i":
                    if cur.info is None:
                        cur.info = value
                elif cur.key is None:
                    cur.key = _ws(value, n, strict, "RFC 8866 §5.12 key-field")
                continue
            r = _SESSION_RANK.get(t)
            if r is None:
                if strict:
                    raise _err(n, f"unknown type letter {t!r}", "RFC 8866 §5 unknown type")
                continue
            if strict:
                repeat_ok = t in _SESSION_REPEAT or (t == "t" and rank == _SESSION_RANK["r"])
                if r < rank and not (t == "t" and rank == _SESSION_RANK["r"]):
                    raise _err(n, f"{t}= out of order", "RFC 8866 §5 order")
                if r == rank and not repeat_ok:
                    raise _err(n, f"{t}= repeated", "RFC 8866 §5 order")
                if n == 1 and t != "v":
                    raise _err(n, "SDP must start with v=", "RFC 8866 §5.1 proto-version")
                rank = r
            first = t not in seen
            seen.add(t)
            if t == "a":
                n_attrs += 1
                if n_attrs > limits.max_attributes:
                    raise _err(n, "too many attributes", "limit max_attributes")
                attrs.append(_parse_a(value, n, strict))
            elif t == "v":
                v = _int(value.strip() if not strict else value, n, "RFC 8866 §5.1", "v=")
                if v != 0:
                    raise _err(n, f"unsupported SDP version {v}", "RFC 8866 §5.1 proto-version")
                version = v
            elif t == "o":
                if first:
                    origin = _parse_o(value, n, strict)
            elif t == "s":
                if first:
                    name = value
            elif t == "i":
                if first:
                    info = value
            elif t == "u":
                if first:
                    uri = value
            elif t == "e":
                emails.append(_ws(value, n, strict, "RFC 8866 §5.6 email-fields"))
            elif t == "p":
                phones.append(_ws(value, n, strict, "RFC 8866 §5.6 phone-fields"))
            elif t == "c":
                if first:
                    conn = _parse_c(value, n, strict)
            elif t == "b":
                bws.append(_parse_b(value, n, strict))
            elif t == "t":
                timings.append(_parse_t(value, n, strict))
            elif t == "r":
                if not timings:
                    raise _err(n, "r= before any t=", "RFC 8866 §5.10 repeat-fields")
                last = timings[-1]
                rep = _ws(value, n, strict, "RFC 8866 §5.10 repeat-fields")
                timings[-1] = Timing(last.start, last.stop, (*last.repeats, rep))
            elif t == "z":
                if first:
                    zone = _ws(value, n, strict, "RFC 8866 §5.11 zone-adjustments")
            elif first:  # k
                key = _ws(value, n, strict, "RFC 8866 §5.12 key-field")
    except SdpError as exc:
        if exc.rule != "model":
            raise
        # A field the grammar accepted but the model cannot hold (e.g. a TAB inside a token).
        raise _err(n, exc.detail, "RFC 8866 §9 token") from None
    if origin is None:
        raise _err(0, "missing o= line", "RFC 8866 §5.2 origin-field")
    if strict:
        if version is None:
            raise _err(0, "missing v= line", "RFC 8866 §5.1 proto-version")
        if name is None:
            raise _err(0, "missing s= line", "RFC 8866 §5.3 session-name-field")
        if not timings:
            raise _err(0, "missing t= line", "RFC 8866 §5.9 time-field")
    frozen_list = []
    for sec in media:
        try:
            frozen_list.append(sec.freeze())
        except SdpError as exc:
            raise _err(sec.m_line, exc.detail, "RFC 8866 §9 token") from None
    frozen = tuple(frozen_list)
    sd = SessionDescription(
        origin=origin,
        session_name=name if name is not None else "-",
        information=info,
        uri=uri,
        emails=tuple(emails),
        phones=tuple(phones),
        connection=conn,
        bandwidths=tuple(bws),
        timings=tuple(timings) if timings else (Timing(),),
        zone=zone,
        key=key,
        attributes=tuple(attrs),
        media=frozen,
    )
    if strict:
        _check_semantics(sd, media)
    return sd


def _check_semantics(sd: SessionDescription, sections: list[_Section]) -> None:
    for md, sec in zip(sd.media, sections, strict=True):
        if "RTP" not in md.proto:
            continue
        if sd.connection is None and not md.connections and md.port != 0:
            raise _err(sec.m_line, "no c= for this stream", "RFC 8866 §5.7 connection-field")
        mapped = {v.split(" ", 1)[0] for v in md.attribute_values("rtpmap")}
        for fmt in md.formats:
            if not is_digits(fmt, 3) or int(fmt) > 127:
                raise _err(sec.m_line, f"RTP format {fmt!r} is not a payload type", "RFC 3551")
            if int(fmt) >= 96 and fmt not in mapped:
                raise _err(
                    sec.m_line, f"dynamic payload type {fmt} has no a=rtpmap", "RFC 8866 §6.6"
                )
