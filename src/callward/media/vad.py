"""Voice activity detection for DTX: WebRTC's GMM VAD (``webrtcvad``) plus the two classic
fixes that keep it from hurting speech.

- *Onset look-ahead*: output is delayed by ``lookahead_frames``; when a frame is classified as
  speech, the frames still in the look-ahead queue are marked active too, so the soft start of
  a word (which the detector only recognises a few frames late) is transmitted instead of
  clipped. Costs ``lookahead_frames * frame_ms`` of added delay.
- *Hangover*: after the last speech frame, ``hangover_frames`` more frames stay active, so word
  endings and short pauses are not chopped (G.729 Annex B uses the same idea).

Sans-IO: frames in, (frame, active) pairs out, in order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import webrtcvad

from callward.errors import MediaError

__all__ = ["VadDecision", "VoiceActivityDetector", "classify"]

_RATES = (8000, 16000, 32000, 48000)


@dataclass(frozen=True, slots=True)
class VadDecision:
    index: int  # frame number since the start
    active: bool
    raw: bool  # the bare webrtcvad decision for this frame
    frame: bytes


class VoiceActivityDetector:
    def __init__(
        self,
        sample_rate: int = 8000,
        *,
        frame_ms: int = 20,
        aggressiveness: int = 2,
        hangover_frames: int = 8,
        lookahead_frames: int = 2,
    ) -> None:
        if sample_rate not in _RATES:
            raise MediaError(f"VAD sample rate {sample_rate} not in {_RATES}")
        if frame_ms not in (10, 20, 30):
            raise MediaError("VAD frames must be 10, 20 or 30 ms")
        if not 0 <= aggressiveness <= 3:
            raise MediaError("VAD aggressiveness must be 0-3")
        if hangover_frames < 0 or lookahead_frames < 0:
            raise MediaError("hangover and look-ahead must be >= 0")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_bytes = sample_rate * frame_ms // 1000 * 2
        self.hangover_frames = hangover_frames
        self.lookahead_frames = lookahead_frames
        self._vad = webrtcvad.Vad(aggressiveness)
        self._queue: deque[list[object]] = deque()  # [index, raw, active, frame]
        self._hang = 0
        self._index = 0

    def process(self, frame: bytes) -> list[VadDecision]:
        """Classify one frame of 16-bit little-endian PCM; return the decisions that leave the
        look-ahead queue (zero or one until :meth:`flush`)."""
        if len(frame) != self.frame_bytes:
            raise MediaError(f"VAD frame must be {self.frame_bytes} bytes, got {len(frame)}")
        raw = bool(self._vad.is_speech(frame, self.sample_rate))
        if raw:
            self._hang = self.hangover_frames
            for item in self._queue:  # onset look-ahead: pull the queued frames in
                item[2] = True
            active = True
        elif self._hang > 0:
            self._hang -= 1
            active = True
        else:
            active = False
        self._queue.append([self._index, raw, active, frame])
        self._index += 1
        out: list[VadDecision] = []
        while len(self._queue) > self.lookahead_frames:
            out.append(self._pop())
        return out

    def _pop(self) -> VadDecision:
        index, raw, active, frame = self._queue.popleft()
        assert isinstance(index, int) and isinstance(frame, bytes)
        return VadDecision(index, bool(active), bool(raw), frame)

    def flush(self) -> list[VadDecision]:
        out: list[VadDecision] = []
        while self._queue:
            out.append(self._pop())
        return out


def classify(
    pcm: npt.NDArray[np.int16],
    sample_rate: int = 8000,
    **options: int,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Batch VAD over a recording: (smoothed active flags, raw webrtcvad flags) per frame;
    a trailing partial frame is dropped."""
    vad = VoiceActivityDetector(sample_rate, **options)
    step = vad.frame_bytes // 2
    data = pcm.astype("<i2").tobytes()
    decisions: list[VadDecision] = []
    for i in range(0, len(pcm) - step + 1, step):
        decisions += vad.process(data[2 * i : 2 * (i + step)])
    decisions += vad.flush()
    active = np.array([d.active for d in decisions], dtype=bool)
    raw = np.array([d.raw for d in decisions], dtype=bool)
    return active, raw
