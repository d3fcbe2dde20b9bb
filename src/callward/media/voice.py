"""The voice send and receive pipelines of a phone, sans-IO: PCM in, RTP payloads out, and back.

Send (:class:`VoiceSender`), per packet time:

    PCM -> [noise suppression] -> Opus (bitrate, in-band FEC, DTX)            -> payload | nothing
                               -> VAD -> G.711 speech | RFC 3389 SID | nothing

- Opus DTX (RFC 7587 §3.1.3): with DTX on, libopus returns 1-2 byte packets for frames it
  decides not to code; those are not sent. After speech libopus keeps coding for 200 ms, then
  codes one real frame whenever 400 ms of DTX have passed, to refresh the receiver's comfort
  noise; those *are* sent: that is the DTX cost the planner prices.
- Opus runs at constant bit rate by default: RFC 6562 recommends CBR under SRTP (VBR packet
  lengths reveal phrases), and every sent frame then costs exactly bitrate x ptime.
- The first packet after a gap carries the RTP marker bit (RFC 3551 §4.1).
- G.711 VAD/CN works on 20 ms decisions (:class:`~callward.media.dtx.G711DtxSender`); with a
  longer ptime a packet is speech if any of its 20 ms frames is, else the last SID is sent.

Receive (:class:`VoiceReceiver`) decodes every packet (so a peer's bad payload shows up as a
decode error, not silence), recovers a single lost Opus frame from the next packet's LBRR data
(RFC 6716 §2.1.7) and conceals the rest; G.711 CN packets feed the comfort-noise generator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from callward.errors import MediaError
from callward.media.dtx import CN_PAYLOAD_TYPE, DtxFrame, G711DtxReceiver, G711DtxSender
from callward.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callward.media.opus import OpusDecoder, OpusEncoder, OpusSettings

__all__ = ["VoicePacket", "VoiceReceiver", "VoiceSender", "VoiceSettings"]

OPUS_RATE = 16000  # wideband input/output: what speech needs, cheaper than 48 kHz
OPUS_CLOCK = 48000  # RFC 7587 §4.1: the RTP clock of Opus is always 48 kHz
_G711_PT = {"pcmu": 0, "pcma": 8}
#: libopus packets this small are DTX "no speech" frames (RFC 7587 §3.1.3): not sent
DTX_MAX_BYTES = 2


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    """What to send. ``dtx`` is Opus DTX for Opus and VAD + comfort noise for G.711;
    ``expected_loss_pct`` tells libopus how much LBRR redundancy to spend when ``fec``."""

    codec: str = "opus"
    payload_type: int = 111
    ptime_ms: int = 20
    bitrate: int = 16000
    fec: bool = True
    dtx: bool = False
    expected_loss_pct: int = 1
    cn_payload_type: int = CN_PAYLOAD_TYPE
    noise_suppression: bool = False
    cbr: bool = True  # Opus: constant bit rate (RFC 6562 §4 under SRTP; exact byte budgets)

    def __post_init__(self) -> None:
        if self.codec not in ("opus", *_G711_PT):
            raise MediaError(f"codec {self.codec!r}: expected opus, pcmu or pcma")
        allowed = (10, 20, 40, 60) if self.codec == "opus" else (20, 40, 60)
        if self.ptime_ms not in allowed:
            raise MediaError(f"ptime {self.ptime_ms} ms: expected one of {allowed}")
        if not 0 <= self.payload_type <= 127:
            raise MediaError("payload type must be 0-127")
        if self.codec == "opus" and not 6000 <= self.bitrate <= 64000:
            raise MediaError(f"Opus bitrate {self.bitrate}: expected 6000-64000 b/s")
        if not 0 <= self.expected_loss_pct <= 100:
            raise MediaError("expected loss must be 0-100 %")

    @property
    def sample_rate(self) -> int:
        return OPUS_RATE if self.codec == "opus" else 8000

    @property
    def clock_rate(self) -> int:
        return OPUS_CLOCK if self.codec == "opus" else 8000

    @property
    def frame_samples(self) -> int:
        """PCM samples per packet at :attr:`sample_rate`."""
        return self.sample_rate * self.ptime_ms // 1000

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp units per packet."""
        return self.clock_rate * self.ptime_ms // 1000


@dataclass(frozen=True, slots=True)
class VoicePacket:
    """One packet to send for time slot ``index`` (RTP timestamp offset ``index * step``)."""

    index: int
    payload_type: int
    payload: bytes
    marker: bool
    speech: bool


def _suppressor(settings: VoiceSettings) -> object | None:
    if not settings.noise_suppression:
        return None
    from callward.media.noise_suppression import NoiseSuppressor

    return NoiseSuppressor(settings.sample_rate, settings.sample_rate // 50)


class VoiceSender:
    """Encodes one packet time of PCM per :meth:`encode` call; see the module docstring."""

    def __init__(self, settings: VoiceSettings) -> None:
        self.settings = settings
        self._ns = _suppressor(settings)
        self._index = 0
        self._sent_last = False
        self._opus: OpusEncoder | None = None
        self._dtx: G711DtxSender | None = None
        self._pcm: dict[int, npt.NDArray[np.int16]] = {}  # G.711: 20 ms frame index -> PCM
        self._group: list[DtxFrame] = []
        self._last_sid: bytes | None = None
        if settings.codec == "opus":
            self._opus = OpusEncoder(OPUS_RATE, 1, self._opus_settings(settings))
        elif settings.dtx:
            law = "ulaw" if settings.codec == "pcmu" else "alaw"
            self._dtx = G711DtxSender(law)
        self.suppressed_frames = 0  # Opus DTX frames not sent

    @property
    def packet_times(self) -> int:
        """Packet times encoded so far (sent, or suppressed by DTX/VAD)."""
        return self._index

    @staticmethod
    def _opus_settings(s: VoiceSettings) -> OpusSettings:
        return OpusSettings(
            bitrate=s.bitrate,
            fec=s.fec,
            dtx=s.dtx,
            packet_loss_perc=s.expected_loss_pct if s.fec else 0,
            cbr=s.cbr,
        )

    def apply(self, settings: VoiceSettings) -> None:
        """Change bitrate/FEC/expected loss between packets (what the rate controller
        decides). A new codec, ptime or DTX mode needs renegotiation and a new sender."""
        keep = ("codec", "ptime_ms", "dtx", "payload_type", "noise_suppression")
        if any(getattr(settings, k) != getattr(self.settings, k) for k in keep):
            raise MediaError("codec, ptime, DTX and NS changes need a new offer/answer")
        if self._opus is not None:
            self._opus.apply(self._opus_settings(settings))
        self.settings = settings

    def _denoise(self, pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        if self._ns is None:
            return pcm
        step = self.settings.sample_rate // 50
        parts = [self._ns.process(pcm[i : i + step]) for i in range(0, len(pcm), step)]  # type: ignore[attr-defined]
        return np.concatenate(parts)

    def encode(self, pcm: npt.NDArray[np.int16]) -> list[VoicePacket]:
        """One packet time of int16 PCM at :attr:`VoiceSettings.sample_rate` in; the packets
        that leave now out (G.711 VAD's look-ahead delays decisions by two 20 ms frames)."""
        s = self.settings
        if pcm.dtype != np.int16 or len(pcm) != s.frame_samples:
            raise MediaError(f"voice sender takes {s.frame_samples} int16 samples per packet")
        pcm = self._denoise(pcm)
        index = self._index
        self._index += 1
        if self._opus is not None:
            payload = self._opus.encode(pcm)
            if s.dtx and len(payload) <= DTX_MAX_BYTES:
                self.suppressed_frames += 1
                self._sent_last = False
                return []
            return [self._packet(index, s.payload_type, payload, True)]
        if self._dtx is None:
            return [self._packet(index, s.payload_type, self._g711(pcm), True)]
        frames: list[DtxFrame] = []
        base = index * (s.ptime_ms // 20)
        for k in range(s.ptime_ms // 20):
            self._pcm[base + k] = pcm[k * 160 : (k + 1) * 160]
            frames += self._dtx.process(pcm[k * 160 : (k + 1) * 160])
        return self._regroup(frames)

    def flush(self) -> list[VoicePacket]:
        """What the VAD look-ahead still holds (end of call)."""
        if self._dtx is None:
            return []
        return self._regroup(self._dtx.flush(), final=True)

    def _g711(self, pcm: npt.NDArray[np.int16]) -> bytes:
        return ulaw_encode(pcm) if self.settings.codec == "pcmu" else alaw_encode(pcm)

    def _regroup(self, frames: list[DtxFrame], final: bool = False) -> list[VoicePacket]:
        """G.711 + VAD: 20 ms DTX decisions back into packets of ``ptime``."""
        n = self.settings.ptime_ms // 20
        self._group += frames
        out: list[VoicePacket] = []
        while len(self._group) >= n or (final and self._group):
            group, self._group = self._group[:n], self._group[n:]
            pcm = np.concatenate([self._pcm.pop(f.index) for f in group])
            for f in group:
                if not f.speech and f.payload is not None:
                    self._last_sid = f.payload
            if any(f.speech for f in group):
                out.append(self._packet(group[0].index // n, self.settings.payload_type,
                                        self._g711(pcm), True))  # fmt: skip
            elif any(f.payload is not None for f in group) and self._last_sid is not None:
                out.append(self._packet(group[0].index // n, self.settings.cn_payload_type,
                                        self._last_sid, False))  # fmt: skip
            else:
                self._sent_last = False
        return out

    def _packet(self, index: int, pt: int, payload: bytes, speech: bool) -> VoicePacket:
        # RFC 3551 §4.1: marker on the first packet of a talkspurt (after silence), and on
        # the very first packet of the stream.
        marker = not self._sent_last and (speech or index == 0)
        self._sent_last = speech
        return VoicePacket(index, pt, payload, marker, speech)


@dataclass(slots=True)
class ReceiveCounters:
    decoded: int = 0
    fec_recovered: int = 0
    concealed: int = 0
    comfort_noise: int = 0
    decode_errors: int = 0
    other_payload: int = 0


class VoiceReceiver:
    """Decodes what arrives (in arrival order) for the negotiated codec; see the module
    docstring. ``seq`` is the RTP sequence number, used to find single losses for FEC."""

    def __init__(self, settings: VoiceSettings) -> None:
        self.settings = settings
        self.counters = ReceiveCounters()
        self._last_seq: int | None = None
        self._opus = OpusDecoder(OPUS_RATE, 1) if settings.codec == "opus" else None
        law = "ulaw" if settings.codec == "pcmu" else "alaw"
        self._g711 = None if self._opus else G711DtxReceiver(law)
        self._decode = ulaw_decode if settings.codec == "pcmu" else alaw_decode

    def receive(self, seq: int, payload_type: int, payload: bytes) -> None:
        c = self.counters
        gap = 1 if self._last_seq is None else (seq - self._last_seq) & 0xFFFF
        if gap == 0 or gap >= 0x8000:
            return  # duplicate or late (reordered): the playout buffer would drop it
        self._last_seq = seq
        lost = gap - 1
        s = self.settings
        try:
            if self._opus is not None:
                if payload_type != s.payload_type:
                    c.other_payload += 1
                    return
                if lost >= 1:
                    for _ in range(lost - 1):
                        self._opus.conceal(s.frame_samples)
                    c.concealed += lost - 1
                    if s.fec:
                        self._opus.recover(payload, s.frame_samples)
                        c.fec_recovered += 1
                    else:
                        self._opus.conceal(s.frame_samples)
                        c.concealed += 1
                self._opus.decode(payload, OPUS_RATE * 120 // 1000)
                c.decoded += 1
                return
            assert self._g711 is not None
            c.concealed += lost
            if payload_type == s.cn_payload_type:
                self._g711.frame(payload_type, payload)
                c.comfort_noise += 1
            elif payload_type == s.payload_type:
                if len(payload) != s.frame_samples:
                    raise MediaError("G.711 payload of the wrong length for the ptime")
                self._decode(payload)
                c.decoded += 1
            else:
                c.other_payload += 1
        except MediaError:
            c.decode_errors += 1


def with_loss(settings: VoiceSettings, loss_pct: float) -> VoiceSettings:
    """Settings with libopus's expected-loss knob following a measured loss."""
    return replace(settings, expected_loss_pct=max(0, min(100, round(loss_pct))))
