"""rtpengine's ng control protocol: cookie framing, typed commands and flag parsing.

A message is ``<cookie> SP <bencoded dictionary>`` (rtpengine ``docs/ng_control_protocol.md``);
the reply repeats the cookie, which is how a client matches replies to requests and how a
server answers a retransmission from its cache instead of running the command twice.

Flags arrive in two shapes, and both are accepted:

* as dictionary keys, the way Kamailio's ``rtpengine`` module sends them
  (``"replace": ["origin"]``, ``"ICE": "remove"``, ``"rtcp-mux": ["offer"]``,
  ``"transport-protocol": "RTP/SAVP"``, ``"SDES": ["off"]``, ``"record call": "yes"``);
* as words in the ``flags`` list (``"replace-origin"``, ``"ICE=remove"``, ``"RTP/AVP"``,
  ``"rtcp-mux-demux"``, ``"SDES-no-AES_CM_128_HMAC_SHA1_32"``, ``"record-call"``).

Key spelling is normalised like rtpengine does: case, spaces, dashes and underscores do not
matter (``"record call"`` == ``"record-call"``, ``"ice"`` == ``"ICE"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from callward.errors import NgError
from callward.ng.bencode import DEFAULT_LIMITS, BencodeLimits, BValue, bdecode, bencode

__all__ = [
    "MAX_COOKIE",
    "NgCommand",
    "NgFlags",
    "NgMessage",
    "NgRequest",
    "error_reply",
    "normalise_key",
    "parse_message",
    "parse_request",
    "request_body",
    "serialize_message",
]

#: rtpengine uses short random tokens; anything longer than this is not a cookie.
MAX_COOKIE = 64
MAX_ID = 512  # call-id, tags, via-branch, label
MAX_FLAG_WORDS = 64
_COOKIE_OK = re.compile(r"[\x21-\x7e]{1,64}")
TRANSPORT_PROTOCOLS = ("RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF")


class NgCommand(StrEnum):
    PING = "ping"
    OFFER = "offer"
    ANSWER = "answer"
    DELETE = "delete"
    QUERY = "query"
    LIST = "list"


@dataclass(frozen=True, slots=True)
class NgMessage:
    cookie: str
    body: dict[str, BValue]


def parse_message(data: bytes, limits: BencodeLimits = DEFAULT_LIMITS) -> NgMessage:
    """Split ``cookie SP bencode`` and decode; the body must be a dictionary."""
    space = data.find(b" ", 0, MAX_COOKIE + 1)
    if space <= 0:
        raise NgError(f"ng: no cookie of 1-{MAX_COOKIE} printable bytes before a space")
    cookie = data[:space].decode("latin-1")
    if not _COOKIE_OK.fullmatch(cookie):
        raise NgError("ng: cookie has non-printable bytes")
    body = bdecode(data[space + 1 :], limits)
    if not isinstance(body, dict):
        raise NgError("ng: message body is not a dictionary")
    return NgMessage(cookie, body)


def serialize_message(cookie: str, body: dict[str, BValue]) -> bytes:
    if not _COOKIE_OK.fullmatch(cookie):
        raise NgError("ng: cookie must be 1-64 printable ASCII characters without spaces")
    return cookie.encode("ascii") + b" " + bencode(body)


def error_reply(reason: str) -> dict[str, BValue]:
    return {"result": "error", "error-reason": reason[:200]}


def normalise_key(key: str) -> str:
    return key.strip().lower().replace(" ", "-").replace("_", "-")


@dataclass(frozen=True, slots=True)
class NgFlags:
    """The offer/answer options callward's relay acts on (the names of rtpengine's)."""

    replace_origin: bool = False
    replace_session_connection: bool = False
    ice: str | None = None  # "remove" is what callward does anyway (it does not run ICE)
    transport_protocol: str | None = None  # RTP/AVP <-> RTP/SAVP bridging
    rtcp_mux: frozenset[str] = frozenset()  # offer | accept | demux | require | reject
    direction: tuple[str, ...] = ()
    record_call: bool = False
    sdes: frozenset[str] = frozenset()  # off | no-<suite> | only-<suite> | ...
    words: frozenset[str] = frozenset()  # every other flag, kept for query/debugging

    def sdes_allows(self, suite: str) -> bool:
        if "off" in self.sdes or "no" in self.sdes:
            return False
        only = {s[5:].upper() for s in self.sdes if s.startswith("only-")}
        if only and suite.upper() not in only:
            return False
        return f"no-{suite.lower()}" not in self.sdes


@dataclass(frozen=True, slots=True)
class NgRequest:
    command: NgCommand
    call_id: str = ""
    from_tag: str = ""
    to_tag: str = ""
    via_branch: str = ""
    label: str = ""
    sdp: str = ""
    flags: NgFlags = field(default_factory=NgFlags)
    limit: int = 32  # list


def _text(body: dict[str, BValue], key: str, *, required: bool = False) -> str:
    value = body.get(key)
    if value is None:
        if required:
            raise NgError(f"ng: missing {key!r}")
        return ""
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise NgError(f"ng: {key!r} must be a string")
    if key != "sdp" and len(value) > MAX_ID:
        raise NgError(f"ng: {key!r} longer than {MAX_ID} characters")
    return value


def _words(value: BValue, key: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items[:MAX_FLAG_WORDS]:
        if isinstance(item, int):
            item = str(item)
        if not isinstance(item, str) or len(item) > 128:
            raise NgError(f"ng: {key!r} must hold strings of at most 128 characters")
        out.append(item.strip())
    if len(items) > MAX_FLAG_WORDS:
        raise NgError(f"ng: {key!r} has more than {MAX_FLAG_WORDS} entries")
    return out


def _yes(value: BValue) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("yes", "on", "true", "1", "")


def _flags(body: dict[str, BValue]) -> NgFlags:
    replace: set[str] = set()
    mux: set[str] = set()
    sdes: set[str] = set()
    direction: list[str] = []
    words: set[str] = set()
    ice: str | None = None
    proto: str | None = None
    record = False
    # 1. dictionary keys (Kamailio's rtpengine module)
    for raw_key, value in body.items():
        key = normalise_key(raw_key)
        if key == "replace":
            replace.update(normalise_key(w) for w in _words(value, raw_key))
        elif key == "rtcp-mux":
            mux.update(w.lower() for w in _words(value, raw_key))
        elif key == "sdes":
            sdes.update(w.lower() for w in _words(value, raw_key))
        elif key == "direction":
            direction.extend(_words(value, raw_key)[:2])
        elif key == "ice":
            ice = _words(value, raw_key)[0].lower() if _words(value, raw_key) else None
        elif key == "transport-protocol":
            proto = _words(value, raw_key)[0].upper()
        elif key in ("record-call", "recording"):
            record = _yes(value)
    # 2. words in "flags" (rtpengine's own clients, rtpengine-ctl, other proxies)
    for word in _words(body.get("flags", []), "flags"):
        low = word.lower()
        name, _, arg = low.partition("=")
        if low.startswith("replace-"):
            replace.add(low[len("replace-") :])
        elif low.startswith("rtcp-mux-"):
            mux.add(low[len("rtcp-mux-") :])
        elif low.startswith("sdes-"):
            sdes.add(low[len("sdes-") :])
        elif name == "ice":
            ice = arg or None
        elif name == "transport-protocol":
            proto = arg.upper()
        elif word.upper() in TRANSPORT_PROTOCOLS:
            proto = word.upper()
        elif name in ("record-call", "recording"):
            record = arg in ("", "yes", "on")
        elif name == "direction":
            direction.append(arg)
        else:
            words.add(low)
    if proto is not None and proto not in TRANSPORT_PROTOCOLS:
        raise NgError(f"ng: transport-protocol {proto!r}: expected one of RTP/AVP, RTP/SAVP")
    return NgFlags(
        replace_origin="origin" in replace,
        replace_session_connection="session-connection" in replace,
        ice=ice,
        transport_protocol=proto,
        rtcp_mux=frozenset(mux),
        direction=tuple(direction),
        record_call=record,
        sdes=frozenset(sdes),
        words=frozenset(words),
    )


_NEEDS = {
    NgCommand.OFFER: ("call-id", "from-tag", "sdp"),
    NgCommand.ANSWER: ("call-id", "from-tag", "to-tag", "sdp"),
    NgCommand.DELETE: ("call-id",),
    NgCommand.QUERY: ("call-id",),
}


def parse_request(body: dict[str, BValue]) -> NgRequest:
    """A typed request from a decoded body; NgError names the first problem."""
    name = body.get("command")
    if not isinstance(name, str):
        raise NgError("ng: missing 'command'")
    try:
        command = NgCommand(name.strip().lower())
    except ValueError:
        raise NgError(f"ng: unrecognized command {name[:40]!r}") from None
    keyed = {normalise_key(k): v for k, v in body.items()}
    for need in _NEEDS.get(command, ()):
        _text(keyed, need, required=True)
    limit = keyed.get("limit", 32)
    if isinstance(limit, str) and limit.isdigit() and len(limit) < 7:
        limit = int(limit)
    if not isinstance(limit, int) or not 0 <= limit <= 100000:
        raise NgError("ng: 'limit' must be an integer 0-100000")
    return NgRequest(
        command=command,
        call_id=_text(keyed, "call-id"),
        from_tag=_text(keyed, "from-tag"),
        to_tag=_text(keyed, "to-tag"),
        via_branch=_text(keyed, "via-branch"),
        label=_text(keyed, "label"),
        sdp=_text(keyed, "sdp"),
        flags=_flags(body) if command in (NgCommand.OFFER, NgCommand.ANSWER) else NgFlags(),
        limit=limit,
    )


def request_body(req: NgRequest) -> dict[str, BValue]:
    """The wire dictionary for a request, in the shape Kamailio's module sends (keys, not
    ``flags`` words), so a real rtpengine and callward's relay read it the same way."""
    body: dict[str, BValue] = {"command": req.command.value}
    for key, value in (
        ("call-id", req.call_id),
        ("from-tag", req.from_tag),
        ("to-tag", req.to_tag),
        ("via-branch", req.via_branch),
        ("label", req.label),
        ("sdp", req.sdp),
    ):
        if value:
            body[key] = value
    f = req.flags
    replace: list[BValue] = []
    if f.replace_origin:
        replace.append("origin")
    if f.replace_session_connection:
        replace.append("session-connection")
    if replace:
        body["replace"] = replace
    if f.ice:
        body["ICE"] = f.ice
    if f.transport_protocol:
        body["transport-protocol"] = f.transport_protocol
    if f.rtcp_mux:
        body["rtcp-mux"] = list[BValue](sorted(f.rtcp_mux))
    if f.direction:
        body["direction"] = list[BValue](f.direction)
    if f.record_call:
        body["record call"] = "yes"
    if f.sdes:
        body["SDES"] = list[BValue](sorted(f.sdes))
    if f.words:
        body["flags"] = list[BValue](sorted(f.words))
    if req.command is NgCommand.LIST:
        body["limit"] = req.limit
    return body
