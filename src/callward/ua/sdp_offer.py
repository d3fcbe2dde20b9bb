"""The few lines of SDP a basic phone needs (RFC 4566 §5, RFC 3264 §5-6), sans-IO.

A deliberately small offer/answer for one audio stream with static G.711 payload types; the
full SDP model, policy and SRTP keying live in ``callward.sdp`` and replace this once a UA needs
more than "which address and codec do I send RTP to".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AudioEndpoint", "answer_sdp", "audio_endpoint", "offer_sdp"]

# RFC 3551 §6 static payload types we can send (G.711 only: no codec library needed).
_STATIC = {0: "PCMU/8000", 8: "PCMA/8000"}


@dataclass(frozen=True, slots=True)
class AudioEndpoint:
    """Where the peer wants our RTP and in which payload types (first is preferred)."""

    host: str
    port: int
    payload_types: tuple[int, ...]


def _sdp(host: str, port: int, session_id: int, version: int, pts: tuple[int, ...]) -> bytes:
    ip = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=callward {session_id} {version} IN {ip} {host}",
        "s=callward",
        f"c=IN {ip} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(p) for p in pts)}",
    ]
    lines += [f"a=rtpmap:{p} {_STATIC[p]}" for p in pts if p in _STATIC]
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


def offer_sdp(host: str, port: int, session_id: int, *, pts: tuple[int, ...] = (0, 8)) -> bytes:
    """An RFC 3264 §5 offer for one G.711 audio stream."""
    return _sdp(host, port, session_id, 1, pts)


def answer_sdp(offer: bytes, host: str, port: int, session_id: int) -> bytes | None:
    """An RFC 3264 §6 answer: the offer's payload types we support, in the offer's order;
    None when nothing is acceptable (the caller answers 488)."""
    remote = audio_endpoint(offer)
    if remote is None:
        return None
    common = tuple(p for p in remote.payload_types if p in _STATIC)
    if not common:
        return None
    return _sdp(host, port, session_id, 1, common)


def audio_endpoint(sdp: bytes) -> AudioEndpoint | None:
    """The first audio stream's connection address, port and payload types; None when the body
    has no usable audio stream. Media-level ``c=`` overrides session-level (RFC 4566 §5.7)."""
    try:
        text = sdp.decode("utf-8")
    except UnicodeDecodeError:
        return None
    host: str | None = None
    port: int | None = None
    pts: tuple[int, ...] = ()
    in_audio = False
    for line in text.splitlines():
        if line.startswith("m="):
            if in_audio:
                break
            parts = line[2:].split()
            if len(parts) >= 4 and parts[0] == "audio" and parts[1].isdigit():
                in_audio = True
                port = int(parts[1])
                pts = tuple(int(p) for p in parts[3:] if p.isdigit() and int(p) < 128)
        elif line.startswith("c="):
            parts = line[2:].split()
            if len(parts) == 3 and (in_audio or host is None):
                host = parts[2].split("/")[0]
    if not in_audio or host is None or port is None or not 0 < port < 65536:
        return None
    return AudioEndpoint(host, port, pts)
