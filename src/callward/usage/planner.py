"""Data-usage planner: bytes on the wire per minute of call for each media/transport choice.

A mobile user pays per byte; the operator sizes links per call. Both need the same arithmetic,
and it has to match what callward's phones really send (``usage/wire.py`` measures captures,
the demo and ``callward plan --verify`` compare):

- **Packets**: codec payload + RTP (RFC 3550 §5.1, 12 B) + SRTP auth tag (RFC 3711 §4.2: 10 B
  for HMAC-SHA1-80, 4 for -32, 16 for AES-GCM, RFC 7714) + UDP (8) + IP (20 / 40). Opus runs at
  constant bit rate (RFC 6562), so a frame is ``bitrate x ptime / 8`` bytes.
- **Silence** (``voice_activity`` < 1): talk spurts are sent in full; each silence gap costs
  what the sender really emits there. Opus DTX (RFC 7587 §3.1.3, libopus): 200 ms more of
  coded frames after speech, then one coded frame after every 400 ms of DTX (every 420 ms).
  G.711 VAD (``media/dtx.py``): 8 frames of hangover, webrtcvad's own over-hang (about 4) and 2 of
  look-ahead stay speech, then a 5-byte RFC 3389 SID at the first silent frame and every 25
  frames (500 ms).
- **FEC**: with CBR, Opus's LBRR data lives inside the fixed frame (no extra bytes; it costs
  quality, which the optimiser accounts for); with VBR it adds about ``VBR_FEC_OVERHEAD``.
- **RTCP** (RFC 3550 §6.2, A.7): one compound SR + SDES (SRTCP: + 4 B index + tag) per
  interval ``max(5 s, avg_size x members / (5 % of session bandwidth))``, randomised by
  U(0.5, 1.5) / (e - 3/2); the first after half the minimum; RR + BYE at the end. Reduced-size
  RTCP (RFC 5506) sends the SR alone.
- **TURN** (RFC 8656): ChannelData adds 4 B per packet (padded to 4 over TCP); a Send
  indication adds a 20 B STUN header, XOR-PEER-ADDRESS (12 / 24 B) and a DATA attribute header
  (4 B) plus padding to a multiple of 4.
- **ROHC** (RFC 3095/5225): IP/UDP/RTP headers replaced by the measured mean compressed header
  size (``rohc_header_bytes``; ``usage/rohc.py`` measures it on real captures).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from callward.errors import ConfigError
from callward.usage.keepalive import plan_keepalive  # re-exported: idle costs live there

__all__ = [
    "CODECS",
    "RTCP_MEAN_FACTOR",
    "SRTP_TAG_BYTES",
    "CallPlan",
    "MediaChoice",
    "dtx_packets_for_mask",
    "dtx_packets_in_gap",
    "plan_call",
    "plan_keepalive",
    "rtcp_reports",
    "rtcp_sizes",
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
SRTCP_INDEX_BYTES = 4  # E flag + 31-bit SRTCP index (RFC 3711 §3.4)
# RFC 3711 §5.2: SRTCP with the _32 suite still uses an 80-bit tag
_SRTCP_TAG = {"none": 0, "AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 10,
              "AEAD_AES_128_GCM": 16}  # fmt: skip

IP_HEADER = {4: 20, 6: 40}
UDP_HEADER = 8
RTP_HEADER = 12
VBR_FEC_OVERHEAD = 0.20  # LBRR share of a VBR Opus stream at low loss (estimate)
#: RFC 3550 A.7: the interval is multiplied by U(0.5, 1.5) and divided by e - 3/2
RTCP_MEAN_FACTOR = 1.0 / (math.e - 1.5)
RTCP_MIN_INTERVAL = 5.0
TRANSPORTS = ("udp", "turn-channel", "turn-send")
CN_PAYLOAD = 5  # RFC 3389 SID: level + 4 reflection coefficients (media/dtx.py order 4)
# frames of 20 ms: media/dtx.py's hangover 8 and look-ahead 2, plus the 4 frames webrtcvad's
# own over-hang (aggressiveness 2) keeps calling speech after a talk spurt; SID every 25
G711_HANGOVER, G711_LOOKAHEAD, G711_SID_EVERY = 8 + 4, 2, 25
OPUS_DTX_HANGOVER_FRAMES, OPUS_DTX_PERIOD_FRAMES = 10, 21  # libopus SILK DTX, 20 ms frames
#: with a talk mask: how long after the last active 10 ms the sender still codes speech, ms
#: (measured on media/voice.py: libopus codes 10-11 frames after a spurt, i.e. up to the first
#: 20 ms frame boundary 210 ms after its end; webrtcvad + media/dtx.py hangover 13-14 frames)
OPUS_HANG_MS, G711_HANG_MS = 210, 270
#: libopus's VAD wakes now and then on a quiet room's background noise (-65 dBov) and codes a
#: spurt of about 11 frames; measured on media/voice.py over 20 one-minute conversations:
#: 0.027 wake-ups per second of DTX silence (an expected cost: single calls vary)
OPUS_NOISE_WAKES_PER_S, OPUS_WAKE_FRAMES = 0.027, 11


@dataclass(frozen=True, slots=True)
class MediaChoice:
    """One side's media choice. ``bitrate`` overrides the codec default (Opus).
    ``voice_activity`` below 1 means DTX/VAD (unless ``dtx`` is False: silence is then sent
    too); ``talkspurts_per_minute`` sets how many silence gaps DTX has to bridge."""

    codec: str = "pcmu"
    ptime_ms: int = 20
    bitrate: int | None = None
    srtp: str = "AES_CM_128_HMAC_SHA1_80"
    ip_version: int = 4
    rohc: bool = False
    rohc_header_bytes: float = 4.0  # mean compressed IP/UDP/RTP header, U-mode (RFC 3095)
    voice_activity: float = 1.0  # fraction of time talking
    rtcp: bool = True
    rtcp_mux: bool = True
    dtx: bool = True
    fec: bool = True
    cbr: bool = True
    talkspurts_per_minute: float = 15.0
    transport: str = "udp"
    rtcp_reduced: bool = False  # RFC 5506 reduced-size RTCP
    cname_bytes: int = 16  # ua/media.py: 16 random hex characters (RFC 7022)

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ConfigError(f"unknown codec {self.codec!r}; expected one of {', '.join(CODECS)}")
        if self.srtp not in SRTP_TAG_BYTES:
            raise ConfigError(
                f"unknown SRTP suite {self.srtp!r}; expected one of {', '.join(SRTP_TAG_BYTES)}"
            )
        if self.ip_version not in IP_HEADER:
            raise ConfigError(f"ip_version must be 4 or 6, not {self.ip_version}")
        if not 5 <= self.ptime_ms <= 120 or self.ptime_ms % 5:
            raise ConfigError(f"ptime must be a multiple of 5 ms in 5..120, not {self.ptime_ms}")
        if not 0.0 < self.voice_activity <= 1.0:
            raise ConfigError(f"voice_activity must be in (0, 1], not {self.voice_activity}")
        if self.bitrate is not None and not 2_000 <= self.bitrate <= 512_000:
            raise ConfigError(f"bitrate must be 2000..512000 bit/s, not {self.bitrate}")
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"transport {self.transport!r}: expected {', '.join(TRANSPORTS)}")
        if not 0 < self.talkspurts_per_minute <= 600:
            raise ConfigError("talkspurts_per_minute must be in (0, 600]")
        if not 0 <= self.rohc_header_bytes <= 60 or not 1 <= self.cname_bytes <= 255:
            raise ConfigError("rohc_header_bytes must be 0..60 and cname_bytes 1..255")

    @property
    def rate(self) -> int:
        return self.bitrate if self.bitrate is not None else CODECS[self.codec][0]

    @property
    def payload_bytes(self) -> float:
        payload = self.rate / 8.0 * self.ptime_ms / 1000.0
        if self.codec == "opus" and self.fec and not self.cbr:
            payload *= 1 + VBR_FEC_OVERHEAD
        return payload

    @property
    def network_header_bytes(self) -> float:
        """IP + UDP + RTP (or the ROHC header), plus the TURN framing around RTP."""
        if self.rohc:
            base = self.rohc_header_bytes
        else:
            base = IP_HEADER[self.ip_version] + UDP_HEADER + RTP_HEADER
        return base + turn_overhead(self.transport, self.ip_version, self._srtp_packet())

    def _srtp_packet(self) -> float:
        return RTP_HEADER + self.payload_bytes + SRTP_TAG_BYTES[self.srtp]


def turn_overhead(transport: str, ip_version: int, inner: float) -> float:
    """Bytes TURN adds to a UDP payload of ``inner`` bytes (RFC 8656 §11-12)."""
    if transport == "turn-channel":
        return 4.0
    if transport == "turn-send":
        peer = 12 if ip_version == 4 else 24
        pad = (-inner) % 4
        return 20 + peer + 4 + pad
    return 0.0


def dtx_packets_in_gap(codec: str, gap_s: float, ptime_ms: int) -> tuple[float, float]:
    """(full media packets, comfort-noise/SID packets) a DTX sender emits in a silence gap
    of ``gap_s`` seconds between talk spurts (see the module docstring)."""
    if gap_s <= 0:
        return 0.0, 0.0
    p = ptime_ms / 1000.0
    n = math.floor(gap_s / p + 1e-9)
    if codec == "opus":
        # SILK counts silent 20 ms frames: the first 10 are coded, then 20 are DTX and the
        # 21st is coded again (silk/define.h NB_SPEECH_FRAMES_BEFORE_DTX, MAX_CONSECUTIVE_DTX);
        # a packet of several frames is sent when any of its frames is coded.
        frames = math.floor(gap_s / 0.02 + 1e-9)
        per = max(1, ptime_ms // 20)
        hang = math.ceil(min(frames, OPUS_DTX_HANGOVER_FRAMES) / per)
        refresh = max(0, frames - OPUS_DTX_HANGOVER_FRAMES) // (OPUS_DTX_PERIOD_FRAMES)
        return float(min(n, hang) + refresh), 0.0
    # G.711 VAD in 20 ms decisions, grouped into ptime packets
    frames = math.floor(gap_s / 0.02 + 1e-9)
    per = max(1, ptime_ms // 20)
    extended = min(frames, G711_HANGOVER + G711_LOOKAHEAD)
    silent = frames - extended
    sids = math.ceil(silent / G711_SID_EVERY) if silent > 0 else 0
    return float(math.ceil(extended / per)), float(sids)


def _frame_flags(mask: Sequence[bool], step_ms: int) -> list[bool]:
    """A 20 ms frame is speech when any of its ``step_ms`` steps is."""
    per = 20 // step_ms
    return [any(mask[i : i + per]) for i in range(0, len(mask) - per + 1, per)]


def dtx_packets_for_mask(
    codec: str, mask: Sequence[bool], ptime_ms: int, step_ms: int = 10
) -> tuple[float, float]:
    """(full packets, SID packets) the DTX/VAD sender of ``media/voice.py`` emits for a talk
    ``mask`` (one flag per ``step_ms``), frame by frame on its 20 ms grid:

    - Opus: speech frames, then frames up to the first 20 ms boundary :data:`OPUS_HANG_MS`
      after the spurt's end, then one coded frame after every 20 DTX frames (the 400 ms
      comfort-noise refresh; the 21st frame). The call starts as if a spurt had just ended.
      Plus the expected noise wake-ups (:data:`OPUS_NOISE_WAKES_PER_S`).
    - G.711: speech frames, hangover up to the first boundary :data:`G711_HANG_MS` after the
      end, :data:`G711_LOOKAHEAD` frames pulled in before each onset (the VAD look-ahead), a
      SID at the first silent frame and every :data:`G711_SID_EVERY` frames after.

    Frames are grouped into packets of ``ptime``: a packet is full if any of its frames is
    coded, else SID if any of its frames carries one (G.711), else not sent."""
    if step_ms not in (5, 10, 20) or ptime_ms % 20:
        raise ConfigError("a talk mask needs 5/10/20 ms steps and a ptime of 20 ms multiples")
    frames = _frame_flags(mask, step_ms)
    n = len(frames)
    coded = list(frames)
    sid = [False] * n
    hang_ms = OPUS_HANG_MS if codec == "opus" else G711_HANG_MS
    # end (ms) of the last active step before each frame; the call starts just after one
    end = -10.0 if codec == "opus" else -(hang_ms - G711_HANGOVER * 20 - 10)
    silent_run = 0
    for f in range(n):
        steps = mask[f * 20 // step_ms : (f + 1) * 20 // step_ms]
        if frames[f]:
            last = max(i for i, a in enumerate(steps) if a)
            end = f * 20 + (last + 1) * step_ms
            silent_run = 0
            continue
        if f * 20 < math.ceil((end + hang_ms) / 20) * 20:
            coded[f] = True
            silent_run = 0
            continue
        silent_run += 1
        if codec == "opus":
            coded[f] = silent_run % OPUS_DTX_PERIOD_FRAMES == 0
        else:
            sid[f] = (silent_run - 1) % G711_SID_EVERY == 0
    if codec != "opus":
        for f in range(n):
            if frames[f] and (f == 0 or not frames[f - 1]):
                for k in range(max(0, f - G711_LOOKAHEAD), f):
                    coded[k], sid[k] = True, False
    per = ptime_ms // 20
    full = sids = 0.0
    for i in range(0, n, per):
        if any(coded[i : i + per]):
            full += 1
        elif any(sid[i : i + per]):
            sids += 1
    if codec == "opus":
        dtx_s = sum(not c for c in coded) * 0.02
        full += dtx_s * OPUS_NOISE_WAKES_PER_S * math.ceil(OPUS_WAKE_FRAMES / per)
    return full, sids


def rtcp_sizes(choice: MediaChoice) -> tuple[float, float]:
    """(bytes of one regular compound report, bytes of the final RR + BYE) on the wire."""
    sr = 8 + 20 + 24  # SR header + sender info + one report block (§6.4.1)
    sdes = 4 + math.ceil((4 + 2 + choice.cname_bytes + 1) / 4) * 4  # §6.5: CNAME + null pad
    report = sr if choice.rtcp_reduced else sr + sdes
    bye = 8 + 8  # RR without blocks + BYE with one SSRC (§6.6)
    srtcp = SRTCP_INDEX_BYTES + _SRTCP_TAG[choice.srtp] if choice.srtp != "none" else 0
    ip = IP_HEADER[choice.ip_version] + UDP_HEADER
    extra = srtcp + ip + turn_overhead(choice.transport, choice.ip_version, report + srtcp)
    return report + extra, bye + extra


def rtcp_reports(duration_s: float, interval_s: float = RTCP_MIN_INTERVAL) -> float:
    """Expected number of regular reports in a call of ``duration_s``: the first after a
    mean of half the deterministic interval, then one per mean interval (A.7)."""
    first = interval_s / 2 * RTCP_MEAN_FACTOR
    if duration_s <= first:
        return duration_s / first if first else 0.0
    return 1.0 + (duration_s - first) / (interval_s * RTCP_MEAN_FACTOR)


@dataclass(frozen=True, slots=True)
class CallPlan:
    """Bytes for one direction of a call of ``duration_s``; double for both directions."""

    choice: MediaChoice
    duration_s: float
    packets_per_second: float
    payload_bytes: float
    header_bytes: float
    packet_bytes: float
    media_bytes_per_second: float
    rtcp_bytes_per_second: float
    media_packets: float
    rtcp_interval_s: float
    breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def bytes_per_second(self) -> float:
        return self.media_bytes_per_second + self.rtcp_bytes_per_second

    @property
    def bytes_per_minute(self) -> float:
        return self.bytes_per_second * 60.0

    @property
    def media_bytes_per_minute(self) -> float:
        return self.media_bytes_per_second * 60.0

    @property
    def rtcp_bytes_per_minute(self) -> float:
        return self.rtcp_bytes_per_second * 60.0

    @property
    def kbit_per_second(self) -> float:
        return self.bytes_per_second * 8 / 1000.0

    def as_dict(self) -> dict[str, object]:
        c = self.choice
        return {
            "codec": c.codec,
            "bitrate": c.rate,
            "ptime_ms": c.ptime_ms,
            "srtp": c.srtp,
            "ip_version": c.ip_version,
            "rohc": c.rohc,
            "transport": c.transport,
            "voice_activity": c.voice_activity,
            "dtx": c.dtx and c.voice_activity < 1.0,
            "fec": c.fec if c.codec == "opus" else False,
            "packets_per_second": round(self.packets_per_second, 3),
            "payload_bytes": round(self.payload_bytes, 2),
            "header_bytes": round(self.header_bytes, 2),
            "packet_bytes": round(self.packet_bytes, 2),
            "rtcp_interval_s": round(self.rtcp_interval_s, 3),
            "bytes_per_second": round(self.bytes_per_second, 2),
            "bytes_per_minute": round(self.bytes_per_minute),
            "media_bytes_per_minute": round(self.media_bytes_per_minute),
            "rtcp_bytes_per_minute": round(self.rtcp_bytes_per_minute),
            "kbit_per_second": round(self.kbit_per_second, 3),
            "megabytes_per_hour_both_directions": round(self.bytes_per_second * 2 * 3600 / 1e6, 2),
            "breakdown_bytes_per_minute": {k: round(v * 60) for k, v in self.breakdown.items()},
        }


def _gaps(choice: MediaChoice, duration_s: float) -> list[float]:
    """Silence gaps assumed when the caller gives none: ``talkspurts_per_minute`` equal gaps
    sharing the silent time."""
    silent = (1.0 - choice.voice_activity) * duration_s
    n = max(1, round(choice.talkspurts_per_minute * duration_s / 60.0))
    return [silent / n] * n


def plan_call(
    choice: MediaChoice,
    *,
    duration_s: float = 60.0,
    silence_gaps_s: Sequence[float] | None = None,
    talk_mask: Sequence[bool] | None = None,
    mask_step_ms: int = 10,
) -> CallPlan:
    """Bytes per second of one direction for ``choice`` over a call of ``duration_s``.
    ``silence_gaps_s`` are the real silences (from the talk model or a recording); their sum
    should be about ``(1 - voice_activity) * duration_s``. A ``talk_mask`` (who talks when,
    one flag per ``mask_step_ms``) is more exact: the DTX sender is followed frame by frame
    (:func:`dtx_packets_for_mask`)."""
    if not 0 < duration_s <= 86_400 or math.isnan(duration_s):
        raise ConfigError(f"duration must be in (0, 86400] s, not {duration_s}")
    p = choice.ptime_ms / 1000.0
    pps = 1.0 / p
    payload = choice.payload_bytes
    tag = SRTP_TAG_BYTES[choice.srtp]
    net = choice.network_header_bytes
    packet = payload + net + tag
    dtx = choice.dtx and choice.voice_activity < 1.0 and CODECS[choice.codec][2]
    if dtx and talk_mask is not None and choice.ptime_ms % 20 == 0:
        full, sid = dtx_packets_for_mask(choice.codec, talk_mask, choice.ptime_ms, mask_step_ms)
    elif dtx:
        gaps = list(silence_gaps_s) if silence_gaps_s is not None else _gaps(choice, duration_s)
        full = choice.voice_activity * duration_s / p
        sid = 0.0
        for g in gaps:
            f, s = dtx_packets_in_gap(choice.codec, g, choice.ptime_ms)
            full += f
            sid += s
    else:
        full, sid = duration_s / p, 0.0
    sid_packet = CN_PAYLOAD + net + tag
    media_total = full * packet + sid * sid_packet
    media_bps = media_total / duration_s
    interval = RTCP_MIN_INTERVAL
    rtcp_bps = 0.0
    if choice.rtcp:
        report, bye = rtcp_sizes(choice)
        # RFC 3550 §6.2: 5 % of the session bandwidth (both directions) for RTCP, shared by
        # the two members; the 5 s minimum wins for any voice call.
        rtcp_bw = 0.05 * 2 * media_bps
        interval = max(RTCP_MIN_INTERVAL, report * 2 / rtcp_bw if rtcp_bw else RTCP_MIN_INTERVAL)
        rtcp_bps = (rtcp_reports(duration_s, interval) * report + bye) / duration_s
    packets = full + sid
    frac = packets / (duration_s * pps)
    breakdown = {
        "codec_payload": (full * payload + sid * CN_PAYLOAD) / duration_s,
        "ip_udp_rtp_headers": packets * net / duration_s,
        "srtp_auth_tags": packets * tag / duration_s,
        "rtcp": rtcp_bps,
    }
    return CallPlan(
        choice, duration_s, pps * frac, payload, net + tag, packet, media_bps, rtcp_bps,
        packets, interval, breakdown,
    )  # fmt: skip
