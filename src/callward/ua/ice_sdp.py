"""ICE in the phone's SDP (RFC 8839): our ``a=ice-ufrag``/``a=ice-pwd``/``a=candidate`` lines in
the audio section, the default candidate in ``c=``/``m=`` (§4.2.1.2: relay, else server
reflexive, else host, so a peer without ICE still reaches us), and the peer's ICE parameters read
back from its SDP with explicit limits (hostile input: at most :data:`MAX_CANDIDATES`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aioice

from callward.errors import CallwardError, RemoteProtocolError
from callward.sdp import parse_sdp

__all__ = ["MAX_CANDIDATES", "RemoteIce", "add_ice", "default_candidate", "ice_lines", "remote_ice"]

MAX_CANDIDATES = 32  # host + srflx + relay per family and interface; more is an attack
_PREFERENCE = {"relay": 0, "srflx": 1, "prflx": 2, "host": 3}


@dataclass(frozen=True, slots=True)
class RemoteIce:
    """The peer's ICE parameters for our one audio component."""

    ufrag: str
    pwd: str
    candidates: tuple[aioice.Candidate, ...]

    def __post_init__(self) -> None:
        # RFC 8839 §5.4: ice-ufrag 4..256 chars, ice-pwd 22..256 chars.
        if not 4 <= len(self.ufrag) <= 256 or not 22 <= len(self.pwd) <= 256:
            raise RemoteProtocolError("ice-ufrag/ice-pwd length out of range (RFC 8839 §5.4)")


def default_candidate(candidates: Sequence[aioice.Candidate]) -> aioice.Candidate | None:
    """The candidate for ``c=``/``m=`` (RFC 8839 §4.2.1.2): the one most likely to work."""
    rtp = [c for c in candidates if c.component == 1]
    return min(rtp, key=lambda c: _PREFERENCE.get(c.type, 9), default=None)


def ice_lines(ufrag: str, pwd: str, candidates: Sequence[aioice.Candidate]) -> list[str]:
    lines = [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}"]
    lines += [f"a=candidate:{c.to_sdp()}" for c in candidates if c.component == 1]
    return lines


def add_ice(sdp: bytes, lines: Sequence[str], session: Sequence[str] = ()) -> bytes:
    """Append ``lines`` to the audio section (our SDP has one media section, the last one) and
    put ``session`` lines (``a=ice-lite``) before the first ``m=``."""
    if lines:
        sdp += ("\r\n".join(lines) + "\r\n").encode()
    if session:
        head, sep, tail = sdp.partition(b"\r\nm=")
        sdp = head + b"\r\n" + "\r\n".join(session).encode() + sep + tail
    return sdp


def remote_ice(sdp: bytes) -> RemoteIce | None:
    """The peer's ICE parameters from its offer or answer; None when it does not do ICE."""
    try:
        parsed = parse_sdp(sdp)
    except CallwardError:
        return None
    audio = next((m for m in parsed.media if m.media == "audio" and not m.rejected), None)
    if audio is None:
        return None
    ufrag = audio.attribute("ice-ufrag") or parsed.attribute("ice-ufrag")
    pwd = audio.attribute("ice-pwd") or parsed.attribute("ice-pwd")
    if ufrag is None or pwd is None:
        return None
    values = audio.attribute_values("candidate")
    if len(values) > MAX_CANDIDATES:
        raise RemoteProtocolError(f"more than {MAX_CANDIDATES} ICE candidates", status_hint=488)
    candidates = []
    for value in values:
        try:
            cand = aioice.Candidate.from_sdp(value)
        except (ValueError, IndexError):
            raise RemoteProtocolError("malformed a=candidate line", status_hint=488) from None
        if cand.component == 1 and cand.transport.lower() == "udp":
            candidates.append(cand)
    return RemoteIce(ufrag, pwd, tuple(candidates))
