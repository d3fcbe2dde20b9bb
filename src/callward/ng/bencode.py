"""Bencode (BEP 3), the encoding of rtpengine's ng control protocol, with explicit limits.

Grammar (BEP 3 "The connectivity is as follows")::

    value   = string / integer / list / dict
    string  = length ":" bytes          ; length: decimal, no leading zero unless "0"
    integer = "i" ["-"] digits "e"      ; no leading zeros, no "-0"
    list    = "l" *value "e"
    dict    = "d" *(string value) "e"   ; keys are strings, sorted as raw bytes when encoding

ng carries text (SDP, tags, flags), so strings decode to ``str`` with ``surrogateescape``:
any byte string round-trips exactly (``bencode(bdecode(b)) == b`` for canonical input), and
the ng layer rejects what is not valid UTF-8 where it needs text. Hostile input gets a
precise :class:`~callward.errors.NgError` naming the offset; never a crash, never unbounded
work (every size, count and depth is limited before the work is done).
"""

from __future__ import annotations

from dataclasses import dataclass

from callward.errors import NgError

__all__ = ["DEFAULT_LIMITS", "BValue", "BencodeLimits", "bdecode", "bencode"]

BValue = str | int | list["BValue"] | dict[str, "BValue"]


@dataclass(frozen=True, slots=True)
class BencodeLimits:
    """What one ng message may hold. A UDP datagram is at most 64 KiB; the largest real ng
    messages are offers with a WebRTC SDP (~8 KiB)."""

    max_bytes: int = 65536
    max_depth: int = 16
    max_items: int = 4096  # list elements + dict entries, whole message
    max_int_digits: int = 20


DEFAULT_LIMITS = BencodeLimits()
_DIGITS = frozenset(b"0123456789")


def _err(pos: int, what: str) -> NgError:
    return NgError(f"bencode: {what} at offset {pos}")


class _Decoder:
    __slots__ = ("data", "items", "limits")

    def __init__(self, data: bytes, limits: BencodeLimits) -> None:
        self.data = data
        self.limits = limits
        self.items = 0

    def _count(self, pos: int) -> None:
        self.items += 1
        if self.items > self.limits.max_items:
            raise _err(pos, f"more than {self.limits.max_items} list/dict items")

    def _digits(self, pos: int, end_byte: int, what: str) -> tuple[str, int]:
        end = self.data.find(bytes((end_byte,)), pos, pos + self.limits.max_int_digits + 2)
        if end < 0:
            raise _err(pos, f"unterminated or too long {what}")
        return self.data[pos:end].decode("latin-1"), end

    def string(self, pos: int) -> tuple[str, int]:
        text, colon = self._digits(pos, 0x3A, "string length")  # ':'
        if not text or not all(c in "0123456789" for c in text):
            raise _err(pos, "string length is not a decimal number")
        if len(text) > 1 and text[0] == "0":
            raise _err(pos, "string length has a leading zero")
        n = int(text)
        start = colon + 1
        if start + n > len(self.data):
            raise _err(pos, f"string of {n} bytes runs past the end")
        raw = self.data[start : start + n]
        return raw.decode("utf-8", "surrogateescape"), start + n

    def integer(self, pos: int) -> tuple[int, int]:
        text, end = self._digits(pos + 1, 0x65, "integer")  # 'e'
        body = text[1:] if text.startswith("-") else text
        if not body or not all(c in "0123456789" for c in body):
            raise _err(pos, "integer is not a decimal number")
        if (len(body) > 1 and body[0] == "0") or text == "-0":
            raise _err(pos, "integer has a leading zero or is -0")
        return int(text), end + 1

    def value(self, pos: int, depth: int) -> tuple[BValue, int]:
        data = self.data
        if pos >= len(data):
            raise _err(pos, "value expected, input ended")
        c = data[pos]
        if c in _DIGITS:
            return self.string(pos)
        if c == 0x69:  # i
            return self.integer(pos)
        if c in (0x6C, 0x64):  # l, d
            if depth >= self.limits.max_depth:
                raise _err(pos, f"nesting deeper than {self.limits.max_depth}")
            return self.container(pos, depth + 1, c == 0x64)
        raise _err(pos, f"unexpected byte {data[pos : pos + 1]!r}")

    def container(self, pos: int, depth: int, is_dict: bool) -> tuple[BValue, int]:
        data = self.data
        pos += 1
        out_list: list[BValue] = []
        out_dict: dict[str, BValue] = {}
        while True:
            if pos >= len(data):
                raise _err(pos, "unterminated " + ("dict" if is_dict else "list"))
            if data[pos] == 0x65:  # e
                return (out_dict if is_dict else out_list), pos + 1
            self._count(pos)
            if is_dict:
                if data[pos] not in _DIGITS:
                    raise _err(pos, "dict key is not a string")
                key, pos = self.string(pos)
                if key in out_dict:
                    raise _err(pos, f"duplicate dict key {key[:40]!r}")
                out_dict[key], pos = self.value(pos, depth)
            else:
                item, pos = self.value(pos, depth)
                out_list.append(item)


def bdecode(data: bytes, limits: BencodeLimits = DEFAULT_LIMITS) -> BValue:
    """Decode exactly one bencoded value that fills ``data``."""
    if len(data) > limits.max_bytes:
        raise NgError(f"bencode: message of {len(data)} bytes exceeds {limits.max_bytes}")
    value, end = _Decoder(bytes(data), limits).value(0, 0)
    if end != len(data):
        raise _err(end, f"{len(data) - end} trailing bytes after the value")
    return value


def _encode(value: object, out: list[bytes], depth: int) -> None:
    if depth > 64:
        raise NgError("bencode: value nested deeper than 64")
    if isinstance(value, bool):  # bool is an int subclass; ng has no booleans
        raise NgError("bencode: booleans have no encoding; use 'yes'/'no' or 0/1")
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if isinstance(value, bytes | bytearray):
        out.append(b"%d:" % len(value))
        out.append(bytes(value))
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, dict):
        keyed: list[tuple[bytes, object]] = []
        for k, v in value.items():
            if isinstance(k, str):
                k = k.encode("utf-8", "surrogateescape")
            if not isinstance(k, bytes):
                raise NgError(f"bencode: dict key {k!r} is not a string")
            keyed.append((k, v))
        keyed.sort(key=lambda kv: kv[0])
        out.append(b"d")
        for k, v in keyed:
            out.append(b"%d:" % len(k))
            out.append(k)
            _encode(v, out, depth + 1)
        out.append(b"e")
    else:
        raise NgError(f"bencode: cannot encode {type(value).__name__}")


def bencode(value: object) -> bytes:
    """Encode str/bytes/int/list/tuple/dict; dict keys are sorted (canonical form)."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)
