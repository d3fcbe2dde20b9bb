"""Data-usage planner: bytes on the air per minute of call for each media/transport choice.

A mobile user pays per byte; the operator sizes links per call. Both need the same arithmetic:
codec payload + RTP (RFC 3550 §5.1, 12 bytes) + SRTP auth tag (RFC 3711 §4.2: 10 bytes for
HMAC-SHA1-80, 4 for -32, 16 for AES-GCM, RFC 7714) + UDP (8) + IP (20 / 40), per packet, times
packets per second; RTCP at the RFC 3550 §6.2 default of 5 % of session bandwidth; silence
suppression scales media by the voice activity factor; ROHC (RFC 3095/5795) replaces the
IP/UDP/RTP headers with a few bytes in steady state; keep-alives (RFC 5626 CRLF, STUN binding,
REGISTER refresh) cost bytes even when no call is up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callward.errors import ConfigError

__all__ = [
    "CODECS",
    "SRTP_TAG_BYTES",
    "CallPlan",
    "KeepalivePlan",
    "MediaChoice",
    "plan_call",
    "plan_keepalive",
]

# Codec → (payload bit rate in bit/s at its default mode, default ptime ms, supports DTX/VAD)
CODECS: dict[str, tuple[int, int, bool]] = {
    "pcmu": (64_000, 20, True),
    "pcma": (64_000, 20, True),
    "g729": (8_000, 20, True),
    "g722": (64_000, 20, True),
    "opus": (24_000, 20, True),  # bitrate is configurable; 24 kbit/s is wideband speech
    "amr-wb": (12_650, 20, True),
}

SRTP_TAG_BYTES: dict[str, int] = {
    "none": 0,
    "AES_CM_128_HMAC_SHA1_80": 10,
    "AES_CM_128_HMAC_SHA1_32": 4,
    "AEAD_AES_128_GCM": 16,
}

_IP_HEADER = {4: 20, 6: 40}
_UDP_HEADER = 8
_RTP_HEADER = 12
_RTCP_FRACTION = 0.05  # RFC 3550 §6.2


@dataclass(frozen=True, slots=True)
class MediaChoice:
    """One side's media choice. ``bitrate`` overrides the codec default (Opus)."""

    codec: str = "pcmu"
    ptime_ms: int = 20
    bitrate: int | None = None
    srtp: str = "AES_CM_128_HMAC_SHA1_80"
    ip_version: int = 4
    rohc: bool = False
    rohc_header_bytes: int = 4  # steady-state compressed IP/UDP/RTP header, U-mode (RFC 3095)
    voice_activity: float = 1.0  # fraction of time talking, when DTX/VAD suppresses silence
    rtcp: bool = True
    rtcp_mux: bool = True

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ConfigError(f"unknown codec {self.codec!r}; expected one of {', '.join(CODECS)}")
        if self.srtp not in SRTP_TAG_BYTES:
            raise ConfigError(
                f"unknown SRTP suite {self.srtp!r}; expected one of {', '.join(SRTP_TAG_BYTES)}"
            )
        if self.ip_version not in _IP_HEADER:
            raise ConfigError(f"ip_version must be 4 or 6, not {self.ip_version}")
        if not 5 <= self.ptime_ms <= 120 or self.ptime_ms % 5:
            raise ConfigError(f"ptime must be a multiple of 5 ms in 5..120, not {self.ptime_ms}")
        if not 0.0 < self.voice_activity <= 1.0:
            raise ConfigError(f"voice_activity must be in (0, 1], not {self.voice_activity}")
        if self.bitrate is not None and not 2_000 <= self.bitrate <= 512_000:
            raise ConfigError(f"bitrate must be 2000..512000 bit/s, not {self.bitrate}")


@dataclass(frozen=True, slots=True)
class CallPlan:
    """Bytes for one direction of a call; double for both directions."""

    choice: MediaChoice
    packets_per_second: float
    payload_bytes: float
    header_bytes: int
    packet_bytes: float
    media_bytes_per_second: float
    rtcp_bytes_per_second: float
    breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def bytes_per_second(self) -> float:
        return self.media_bytes_per_second + self.rtcp_bytes_per_second

    @property
    def bytes_per_minute(self) -> float:
        return self.bytes_per_second * 60.0

    @property
    def kbit_per_second(self) -> float:
        return self.bytes_per_second * 8 / 1000.0

    def as_dict(self) -> dict[str, object]:
        return {
            "codec": self.choice.codec,
            "ptime_ms": self.choice.ptime_ms,
            "srtp": self.choice.srtp,
            "ip_version": self.choice.ip_version,
            "rohc": self.choice.rohc,
            "voice_activity": self.choice.voice_activity,
            "packets_per_second": round(self.packets_per_second, 3),
            "payload_bytes": round(self.payload_bytes, 2),
            "header_bytes": self.header_bytes,
            "packet_bytes": round(self.packet_bytes, 2),
            "bytes_per_second": round(self.bytes_per_second, 2),
            "bytes_per_minute": round(self.bytes_per_minute),
            "kbit_per_second": round(self.kbit_per_second, 3),
            "megabytes_per_hour_both_directions": round(self.bytes_per_second * 2 * 3600 / 1e6, 2),
            "breakdown_bytes_per_minute": {k: round(v * 60) for k, v in self.breakdown.items()},
        }


def plan_call(choice: MediaChoice) -> CallPlan:
    """Bytes per second of one direction of media for ``choice``."""
    rate, _, _ = CODECS[choice.codec]
    bitrate = choice.bitrate if choice.bitrate is not None else rate
    pps = 1000.0 / choice.ptime_ms
    payload = bitrate / 8.0 / pps
    tag = SRTP_TAG_BYTES[choice.srtp]
    if choice.rohc:
        headers = choice.rohc_header_bytes + tag
        net_headers = choice.rohc_header_bytes
    else:
        net_headers = _IP_HEADER[choice.ip_version] + _UDP_HEADER + _RTP_HEADER
        headers = net_headers + tag
    packet = payload + headers
    media = packet * pps * choice.voice_activity
    rtcp = media * _RTCP_FRACTION if choice.rtcp else 0.0
    breakdown = {
        "codec_payload": payload * pps * choice.voice_activity,
        "ip_udp_rtp_headers": net_headers * pps * choice.voice_activity,
        "srtp_auth_tags": tag * pps * choice.voice_activity,
        "rtcp": rtcp,
    }
    return CallPlan(choice, pps, payload, headers, packet, media, rtcp, breakdown)


@dataclass(frozen=True, slots=True)
class KeepalivePlan:
    """Idle cost of staying reachable (no call up), bytes per hour in both directions."""

    method: str
    interval_s: int
    bytes_per_hour: float

    def as_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "interval_s": self.interval_s,
            "bytes_per_hour": round(self.bytes_per_hour),
        }


# Request + response sizes on the wire including IP/UDP (IPv4), measured on our own stack's
# messages; REGISTER includes a digest Authorization header.
_KEEPALIVE_BYTES = {
    "crlf": (4 + 20 + 8) + (2 + 20 + 8),  # RFC 5626 §4.4.1 double-CRLF ping, single-CRLF pong
    "stun": (20 + 20 + 8) + (32 + 20 + 8),  # RFC 5389 binding request / response (XOR-MAPPED)
    "register": (720 + 28) + (480 + 28),
}


def plan_keepalive(method: str, interval_s: int) -> KeepalivePlan:
    if method not in _KEEPALIVE_BYTES:
        raise ConfigError(f"unknown keep-alive method {method!r}; expected crlf, stun or register")
    if not 5 <= interval_s <= 86_400:
        raise ConfigError(f"keep-alive interval must be 5..86400 s, not {interval_s}")
    per = _KEEPALIVE_BYTES[method]
    return KeepalivePlan(method, interval_s, per * 3600.0 / interval_s)
