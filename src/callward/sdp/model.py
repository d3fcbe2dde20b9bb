"""Typed, frozen SDP values (RFC 8866, which obsoletes RFC 4566) and their serializer.

The model keeps every field the grammar of RFC 8866 §9 allows, in the order it appeared, so that
``parse_sdp(str(sd)) == sd`` holds for every value that can be constructed: ``__post_init__``
rejects what could not survive a round trip (CR/LF inside a field, spaces inside a token,
out-of-range ports). Derived views (codecs, direction, crypto, ...) live in ``codecs.py``,
``security.py`` and ``offer_answer.py`` and never mutate the model: changes go through
``dataclasses.replace``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum

from callward.errors import SdpError

__all__ = [
    "Attribute",
    "Bandwidth",
    "Connection",
    "Direction",
    "MediaDescription",
    "Origin",
    "SdpLimits",
    "SessionDescription",
    "Timing",
    "serialize_sdp",
]


@dataclass(frozen=True, slots=True)
class SdpLimits:
    """Hard limits for hostile input (style.md §5): checked before any other work is done.

    A SIP body is bounded by the SIP parser already; these bound what the SDP parser spends
    on it. 64 KiB and 1,024 lines are far above any real telephony offer (a WebRTC offer with
    ICE candidates for audio+video is ~6 KiB / ~120 lines).
    """

    max_bytes: int = 65536
    max_lines: int = 1024
    max_media: int = 32
    max_line_length: int = 4096
    max_attributes: int = 512


class Direction(StrEnum):
    """RFC 8866 §6.7 direction attributes, from the point of view of the SDP's author."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def of(cls, sends: bool, receives: bool) -> Direction:
        if sends and receives:
            return cls.SENDRECV
        if sends:
            return cls.SENDONLY
        if receives:
            return cls.RECVONLY
        return cls.INACTIVE

    def reversed(self) -> Direction:
        """The direction an answerer mirrors (RFC 3264 §6.1): their send is our receive."""
        return Direction.of(sends=self.receives, receives=self.sends)


def is_digits(text: str, max_len: int = 9) -> bool:
    """ASCII decimal digits only, bounded (str.isdigit() accepts '²' and int() of a long
    string is slow or raises)."""
    return 0 < len(text) <= max_len and text.isascii() and text.isdigit()


def _bad(what: str, value: object) -> SdpError:
    return SdpError(f"invalid {what}: {value!r}", rule="model", status_hint=500)


# One regex search is ~5x faster than any(c in s for c in ...) on short fields, and these
# checks run for every line parsed.
_NOT_TOKEN = re.compile(r"[ \t\r\n\x00]").search
_NOT_TEXT = re.compile(r"[\r\n\x00]").search


def _token(what: str, value: str) -> None:
    # RFC 8866 §9 token / non-ws-string: non-empty, no whitespace, no CR/LF.
    if not value or _NOT_TOKEN(value):
        raise _bad(what, value)


def _text(what: str, value: str) -> None:
    # RFC 8866 §9 text: any byte string without NUL, CR or LF.
    if _NOT_TEXT(value):
        raise _bad(what, value)


def _ws_text(what: str, value: str) -> None:
    # A field whose value may hold spaces but must not start/end with them, since parsers
    # (ours included) split fields on whitespace.
    _text(what, value)
    if not value or value != value.strip(" \t"):
        raise _bad(what, value)


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`` (§5.2).

    RFC 3264 §8: in a re-offer every field but ``session_version`` stays the same, and the
    version increments by one when the description changed.
    """

    username: str = "-"
    session_id: str = "0"
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        for what, v in (
            ("o= username", self.username),
            ("o= sess-id", self.session_id),
            ("o= nettype", self.nettype),
            ("o= addrtype", self.addrtype),
            ("o= address", self.address),
        ):
            _token(what, v)
        if self.session_version < 0:
            raise _bad("o= sess-version", self.session_version)

    def identity(self) -> tuple[str, str, str, str, str]:
        """What RFC 3264 §8 forbids changing between offers of one session."""
        return (self.username, self.session_id, self.nettype, self.addrtype, self.address)

    def bumped(self) -> Origin:
        return replace(self, session_version=self.session_version + 1)

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


HOLD_ADDRESSES = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (§5.7); multicast TTL/count stay in
    ``address`` verbatim (``224.2.1.1/127/3``)."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    def __post_init__(self) -> None:
        _token("c= nettype", self.nettype)
        _token("c= addrtype", self.addrtype)
        _token("c= address", self.address)

    @property
    def is_legacy_hold(self) -> bool:
        """RFC 2543 hold: ``c=IN IP4 0.0.0.0`` (RFC 3264 §8.4 keeps it for interop)."""
        return self.address in HOLD_ADDRESSES

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (§5.8), bandwidth in kbit/s for CT/AS, bit/s for TIAS."""

    bwtype: str
    bandwidth: int

    def __post_init__(self) -> None:
        _token("b= bwtype", self.bwtype)
        if ":" in self.bwtype or self.bandwidth < 0:
            raise _bad("b= line", f"{self.bwtype}:{self.bandwidth}")

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@dataclass(frozen=True, slots=True)
class Timing:
    """``t=<start> <stop>`` (§5.9) with its ``r=`` repeat lines (§5.10) kept verbatim."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.start < 0 or self.stop < 0:
            raise _bad("t= line", f"{self.start} {self.stop}")
        for r in self.repeats:
            _ws_text("r= line", r)


@dataclass(frozen=True, slots=True)
class Attribute:
    """``a=<name>`` (property) or ``a=<name>:<value>`` (value may be empty) (§5.13)."""

    name: str
    value: str | None = None

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name or _NOT_TOKEN(self.name):
            raise _bad("a= name", self.name)
        if self.value is not None and _NOT_TEXT(self.value):
            raise _bad("a= value", self.value)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


def _find(attributes: tuple[Attribute, ...], name: str) -> Attribute | None:
    for a in attributes:
        if a.name == name:
            return a
    return None


def _direction(attributes: tuple[Attribute, ...]) -> Direction | None:
    for a in attributes:
        if a.value is None and a.name in _DIRECTIONS:
            return _DIRECTIONS[a.name]
    return None


_DIRECTIONS = {d.value: d for d in Direction}


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """``m=<media> <port>[/<number of ports>] <proto> <fmt> ...`` and its section (§5.14)."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    information: str | None = None
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[Bandwidth, ...] = ()
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()

    def __post_init__(self) -> None:
        _token("m= media", self.media)
        _token("m= proto", self.proto)
        if not 0 <= self.port <= 65535:
            raise _bad("m= port", self.port)
        if self.port_count is not None and self.port_count < 1:
            raise _bad("m= number of ports", self.port_count)
        if not self.formats or not all(self.formats) or _NOT_TOKEN("".join(self.formats)):
            raise _bad("m= fmt list", self.formats)
        if self.information is not None:
            _text("i= line", self.information)
        if self.key is not None:
            _ws_text("k= line", self.key)

    @property
    def rejected(self) -> bool:
        """Port 0 marks a rejected or disabled stream (RFC 3264 §6, §8.2)."""
        return self.port == 0

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name:value`` (``None`` when absent or a property)."""
        a = _find(self.attributes, name)
        return None if a is None else a.value

    def attribute_values(self, name: str) -> tuple[str, ...]:
        return tuple(a.value for a in self.attributes if a.name == name and a.value is not None)

    def has(self, name: str) -> bool:
        return _find(self.attributes, name) is not None

    @property
    def direction_attribute(self) -> Direction | None:
        return _direction(self.attributes)

    def with_attributes(self, attributes: tuple[Attribute, ...]) -> MediaDescription:
        return replace(self, attributes=attributes)


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP body; ``str(sd)`` / ``bytes(sd)`` serialize it with CRLF line ends."""

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    timings: tuple[Timing, ...] = (Timing(),)
    zone: str | None = None
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()

    def __post_init__(self) -> None:
        if self.version != 0:
            raise _bad("v= version", self.version)
        _text("s= line", self.session_name)
        for what, v in (
            ("i= line", self.information),
            ("u= line", self.uri),
        ):
            if v is not None:
                _text(what, v)
        for what, vs in (("e= line", self.emails), ("p= line", self.phones)):
            for v in vs:
                _ws_text(what, v)
        for what, v in (("z= line", self.zone), ("k= line", self.key)):
            if v is not None:
                _ws_text(what, v)

    def attribute(self, name: str) -> str | None:
        a = _find(self.attributes, name)
        return None if a is None else a.value

    def has(self, name: str) -> bool:
        return _find(self.attributes, name) is not None

    def connection_for(self, md: MediaDescription) -> Connection | None:
        """Media-level ``c=`` overrides the session-level one (RFC 8866 §5.7)."""
        return md.connections[0] if md.connections else self.connection

    def direction_of(self, md: MediaDescription) -> Direction:
        """Effective direction: media-level attribute, else session-level, else sendrecv."""
        return md.direction_attribute or _direction(self.attributes) or Direction.SENDRECV

    def __str__(self) -> str:
        return serialize_sdp(self)

    def __bytes__(self) -> bytes:
        return serialize_sdp(self).encode("utf-8")


def _media_lines(md: MediaDescription, out: list[str]) -> None:
    port = str(md.port) if md.port_count is None else f"{md.port}/{md.port_count}"
    out.append(f"m={md.media} {port} {md.proto} {' '.join(md.formats)}")
    if md.information is not None:
        out.append(f"i={md.information}")
    out.extend(f"c={c}" for c in md.connections)
    out.extend(f"b={b}" for b in md.bandwidths)
    if md.key is not None:
        out.append(f"k={md.key}")
    out.extend(f"a={a}" for a in md.attributes)


def serialize_sdp(sd: SessionDescription) -> str:
    """Lines in the order RFC 8866 §5 mandates, each ended by CRLF."""
    out = [f"v={sd.version}", f"o={sd.origin}", f"s={sd.session_name}"]
    if sd.information is not None:
        out.append(f"i={sd.information}")
    if sd.uri is not None:
        out.append(f"u={sd.uri}")
    out.extend(f"e={e}" for e in sd.emails)
    out.extend(f"p={p}" for p in sd.phones)
    if sd.connection is not None:
        out.append(f"c={sd.connection}")
    out.extend(f"b={b}" for b in sd.bandwidths)
    for t in sd.timings:
        out.append(f"t={t.start} {t.stop}")
        out.extend(f"r={r}" for r in t.repeats)
    if sd.zone is not None:
        out.append(f"z={sd.zone}")
    if sd.key is not None:
        out.append(f"k={sd.key}")
    out.extend(f"a={a}" for a in sd.attributes)
    for md in sd.media:
        _media_lines(md, out)
    out.append("")
    return "\r\n".join(out)
