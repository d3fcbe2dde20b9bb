"""Discontinuous transmission for G.711: VAD decides, speech goes out as PCMU/PCMA, silence as
RFC 3389 comfort-noise SID packets, and the receiver fills the gaps with generated noise.

Sender (RFC 3389 §4, RFC 3551 §4.1): the first frame of every talkspurt carries the RTP marker
bit; the first silent frame after speech sends a SID; during silence a new SID is sent only
when the noise level moves by ``level_change_db`` or every ``sid_interval`` frames (so a
receiver joining late, or one that lost a SID, recovers); otherwise nothing is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callward.errors import MediaError
from callward.media.comfort_noise import ComfortNoise, analyze_noise, generate_noise, parse_cn
from callward.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callward.media.vad import VoiceActivityDetector

__all__ = ["CN_PAYLOAD_TYPE", "DtxFrame", "G711DtxReceiver", "G711DtxSender"]

#: RFC 3551 Table 4: static payload type 13 is CN at 8000 Hz.
CN_PAYLOAD_TYPE = 13
FRAME = 160  # 20 ms at 8 kHz


@dataclass(frozen=True, slots=True)
class DtxFrame:
    """What to send for frame ``index``: ``payload`` None means send nothing."""

    index: int
    payload_type: int
    payload: bytes | None
    marker: bool = False
    speech: bool = False


class G711DtxSender:
    def __init__(
        self,
        law: str = "ulaw",
        *,
        sid_interval: int = 25,
        level_change_db: int = 3,
        cn_order: int = 4,
        aggressiveness: int = 2,
        hangover_frames: int = 8,
        lookahead_frames: int = 2,
    ) -> None:
        if law not in ("ulaw", "alaw"):
            raise MediaError("law must be 'ulaw' or 'alaw'")
        if sid_interval < 1 or level_change_db < 1:
            raise MediaError("sid_interval and level_change_db must be >= 1")
        self.payload_type = 0 if law == "ulaw" else 8
        self._encode = ulaw_encode if law == "ulaw" else alaw_encode
        self.sid_interval = sid_interval
        self.level_change_db = level_change_db
        self.cn_order = cn_order
        self._vad = VoiceActivityDetector(
            8000,
            frame_ms=20,
            aggressiveness=aggressiveness,
            hangover_frames=hangover_frames,
            lookahead_frames=lookahead_frames,
        )
        self._in_speech = False
        self._last_sid: ComfortNoise | None = None
        self._since_sid = 0

    def _decide(self, index: int, active: bool, frame: bytes) -> DtxFrame:
        pcm = np.frombuffer(frame, dtype="<i2").astype(np.int16)
        if active:
            marker = not self._in_speech
            self._in_speech = True
            self._last_sid = None
            return DtxFrame(index, self.payload_type, self._encode(pcm), marker, True)
        cn = analyze_noise(pcm, self.cn_order)
        first_silence = self._in_speech or self._last_sid is None
        self._in_speech = False
        self._since_sid += 1
        moved = (
            self._last_sid is not None
            and abs(cn.level_dbov - self._last_sid.level_dbov) >= self.level_change_db
        )
        if first_silence or moved or self._since_sid >= self.sid_interval:
            self._last_sid = cn
            self._since_sid = 0
            return DtxFrame(index, CN_PAYLOAD_TYPE, bytes(cn))
        return DtxFrame(index, CN_PAYLOAD_TYPE, None)

    def process(self, pcm: npt.NDArray[np.int16]) -> list[DtxFrame]:
        """One 20 ms frame (160 samples) in; the decisions leaving the VAD look-ahead out."""
        if pcm.dtype != np.int16 or len(pcm) != FRAME:
            raise MediaError("DTX sender takes 160 int16 samples per frame")
        decisions = self._vad.process(pcm.astype("<i2").tobytes())
        return [self._decide(d.index, d.active, d.frame) for d in decisions]

    def flush(self) -> list[DtxFrame]:
        return [self._decide(d.index, d.active, d.frame) for d in self._vad.flush()]


class G711DtxReceiver:
    """Rebuilds a continuous 8 kHz signal: decoded speech, comfort noise for silence."""

    def __init__(self, law: str = "ulaw", *, seed: int = 0) -> None:
        if law not in ("ulaw", "alaw"):
            raise MediaError("law must be 'ulaw' or 'alaw'")
        self.payload_type = 0 if law == "ulaw" else 8
        self._decode = ulaw_decode if law == "ulaw" else alaw_decode
        self._cn: ComfortNoise | None = None
        self._rng = np.random.default_rng(seed)

    def frame(self, payload_type: int | None, payload: bytes | None) -> npt.NDArray[np.int16]:
        """Next 20 ms of output given what arrived for this frame (None: nothing arrived)."""
        if payload_type == self.payload_type and payload is not None:
            self._cn = None
            out = self._decode(payload)
            if len(out) != FRAME:
                raise MediaError("G.711 frame of the wrong length for 20 ms")
            return out
        if payload_type == CN_PAYLOAD_TYPE and payload is not None:
            self._cn = parse_cn(payload)
        if self._cn is None:
            return np.zeros(FRAME, dtype=np.int16)
        return generate_noise(self._cn, FRAME, self._rng)
