"""Codec views over an m= section: rtpmap/fmtp/ptime, with RFC 3551 static defaults.

Legacy PBXs (Cisco, old Asterisk) list static payload types with no ``a=rtpmap`` and spell
encoding names in any case (``pcmu``). RFC 8866 §6.6 allows the first and RFC 4855 §3 makes
encoding names case-insensitive, so both are normal input here: names are matched
case-insensitively and reported in their registered spelling.
"""

from __future__ import annotations

from dataclasses import dataclass

from callward.errors import SdpError
from callward.sdp.model import MediaDescription, is_digits

__all__ = [
    "STATIC_PAYLOAD_TYPES",
    "Codec",
    "canonical_encoding",
    "media_codecs",
    "media_maxptime",
    "media_ptime",
    "parse_rtpmap",
]

# RFC 3551 §6 Table 4 (audio) and Table 5 (video): static payload type -> (name, rate, channels).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

# Registered spellings (IANA RTP payload format media types) for names seen in telephony.
_CANONICAL = {
    n.lower(): n
    for n in (
        *(v[0] for v in STATIC_PAYLOAD_TYPES.values()),
        "opus",
        "telephone-event",
        "G7221",
        "AMR",
        "AMR-WB",
        "iLBC",
        "speex",
        "red",
        "EVS",
        "VP8",
        "H264",
    )
}


def canonical_encoding(name: str) -> str:
    """``pcmu`` -> ``PCMU``; unknown names are returned unchanged."""
    return _CANONICAL.get(name.lower(), name)


@dataclass(frozen=True, slots=True)
class Codec:
    """One payload format of a stream, as negotiated: number, name, clock, channels, fmtp."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    @property
    def key(self) -> tuple[str, int, int]:
        """Identity for matching across offer and answer (names are case-insensitive)."""
        return (self.name.lower(), self.clock_rate, self.channels)

    @property
    def is_dtmf(self) -> bool:
        return self.name.lower() == "telephone-event"

    @property
    def is_comfort_noise(self) -> bool:
        return self.name.lower() == "cn"

    @property
    def rtpmap(self) -> str:
        """The ``a=rtpmap`` value (RFC 8866 §6.6): channels only when not 1."""
        ch = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.payload_type} {self.name}/{self.clock_rate}{ch}"

    def fmtp_params(self) -> dict[str, str]:
        """``a=fmtp`` as ``key=value`` pairs (``;``-separated, RFC 7587 / RFC 4733 style).
        A bare value such as ``0-15`` is returned under the empty key."""
        out: dict[str, str] = {}
        if self.fmtp:
            for part in self.fmtp.split(";"):
                k, sep, v = part.strip().partition("=")
                if sep:
                    out[k.strip().lower()] = v.strip()
                elif k:
                    out[""] = k
        return out

    def __str__(self) -> str:
        ch = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.name}/{self.clock_rate}{ch}"


def parse_rtpmap(value: str) -> tuple[int, str, int, int]:
    """``96 opus/48000/2`` -> (96, "opus", 48000, 2) (RFC 8866 §6.6)."""
    pt_s, _, enc = value.strip().partition(" ")
    parts = enc.strip().split("/")
    if not is_digits(pt_s, 3) or len(parts) not in (2, 3) or not parts[0]:
        raise SdpError(f"bad a=rtpmap:{value[:60]}", rule="RFC 8866 §6.6 rtpmap")
    if not is_digits(parts[1]) or (len(parts) == 3 and not is_digits(parts[2], 3)):
        raise SdpError(f"bad a=rtpmap:{value[:60]}", rule="RFC 8866 §6.6 rtpmap")
    channels = int(parts[2]) if len(parts) == 3 else 1
    if int(pt_s) > 127 or channels < 1 or len(parts[1]) > 9:
        raise SdpError(f"bad a=rtpmap:{value[:60]}", rule="RFC 8866 §6.6 rtpmap")
    return int(pt_s), canonical_encoding(parts[0]), int(parts[1]), channels


def _int_attr(md: MediaDescription, name: str) -> int | None:
    v = md.attribute(name)
    if v is None:
        return None
    v = v.strip()
    # Some phones write a=ptime:20.0 (RFC 8866 §6.4 allows a decimal point).
    whole = v.split(".", 1)[0]
    if not is_digits(whole, 6):
        return None
    return int(whole)


def media_ptime(md: MediaDescription) -> int | None:
    """``a=ptime`` in ms, or None (missing ptime: the codec default applies, RFC 3551 §4.5)."""
    return _int_attr(md, "ptime")


def media_maxptime(md: MediaDescription) -> int | None:
    return _int_attr(md, "maxptime")


def media_codecs(md: MediaDescription, *, strict: bool = False) -> tuple[Codec, ...]:
    """The stream's formats as Codecs, in m= line order.

    A static payload type without rtpmap takes its RFC 3551 default; a dynamic one without
    rtpmap is unusable and skipped (or rejected when ``strict``). Non-RTP streams (T.38
    ``udptl``, ...) have no codecs.
    """
    if "RTP" not in md.proto:
        return ()
    maps: dict[int, tuple[str, int, int]] = {}
    fmtps: dict[int, str] = {}
    for a in md.attributes:
        if a.value is None:
            continue
        if a.name == "rtpmap":
            try:
                pt, name, rate, ch = parse_rtpmap(a.value)
            except SdpError:
                if strict:
                    raise
                continue
            maps.setdefault(pt, (name, rate, ch))
        elif a.name == "fmtp":
            pt_s, _, params = a.value.partition(" ")
            if is_digits(pt_s, 3):
                fmtps.setdefault(int(pt_s), params.strip())
    out: list[Codec] = []
    for fmt in md.formats:
        if not is_digits(fmt, 3):
            if strict:
                raise SdpError(f"RTP format {fmt[:10]!r} is not a payload type", rule="RFC 3551")
            continue
        pt = int(fmt)
        entry = maps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
        if entry is None:
            if strict:
                raise SdpError(f"payload type {pt} has no a=rtpmap", rule="RFC 8866 §6.6")
            continue
        out.append(Codec(pt, entry[0], entry[1], entry[2], fmtps.get(pt)))
    return tuple(out)
