"""Opus (RFC 6716) through libopus via ``opuslib``, with the controls a mobile VoIP stack needs:
bitrate, in-band FEC (RFC 6716 §2.1.7 LBRR), DTX and the expected packet-loss percentage that
tells the encoder how much redundancy to spend.

libopus errors are translated into :class:`~callward.errors.MediaError` at this boundary.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import opuslib
from opuslib.api import ctl as _ctl
from opuslib.api import decoder as _opus_api
from opuslib.api.encoder import encoder_ctl as _enc_ctl

from callward.errors import MediaError

__all__ = ["OpusDecoder", "OpusEncoder", "OpusSettings"]

_RATES = (8000, 12000, 16000, 24000, 48000)
#: RFC 6716 §2.1.4 frame durations, in tenths of a millisecond
_FRAME_TENTHS_MS = (25, 50, 100, 200, 400, 600)


@dataclass(frozen=True, slots=True)
class OpusSettings:
    """Encoder controls; validated so an impossible setting cannot reach libopus."""

    bitrate: int = 24000
    fec: bool = True
    dtx: bool = False
    packet_loss_perc: int = 0
    complexity: int = 5
    #: constant bit rate: every coded frame has the same size. RFC 6562 recommends it under
    #: SRTP (VBR packet lengths leak phrases), and it makes bytes on the wire predictable.
    cbr: bool = False

    def __post_init__(self) -> None:
        if not 6000 <= self.bitrate <= 510000:  # RFC 6716 §2.1.1
            raise MediaError(f"Opus bitrate {self.bitrate} outside 6000-510000 b/s")
        if not 0 <= self.packet_loss_perc <= 100:
            raise MediaError("Opus packet loss percentage must be 0-100")
        if not 0 <= self.complexity <= 10:
            raise MediaError("Opus complexity must be 0-10")


def _check_rate(sample_rate: int, channels: int) -> None:
    if sample_rate not in _RATES:
        raise MediaError(f"Opus sample rate {sample_rate} is not one of {_RATES}")
    if channels not in (1, 2):
        raise MediaError("Opus supports 1 or 2 channels here")


class OpusEncoder:
    """VoIP-application Opus encoder producing one packet per call to :meth:`encode`."""

    def __init__(
        self, sample_rate: int = 48000, channels: int = 1, settings: OpusSettings | None = None
    ) -> None:
        _check_rate(sample_rate, channels)
        self.sample_rate = sample_rate
        self.channels = channels
        try:
            self._enc = opuslib.Encoder(sample_rate, channels, opuslib.APPLICATION_VOIP)
        except opuslib.OpusError as exc:
            raise MediaError(f"Opus encoder init failed: {exc}") from None
        self.settings = OpusSettings()
        self.apply(settings or OpusSettings())

    def apply(self, settings: OpusSettings) -> None:
        """Change the encoder's controls between frames (used by the rate controller)."""
        try:
            self._enc.bitrate = settings.bitrate
            # opuslib 3.0.1's inband_fec/dtx property setters are broken (one drops the
            # value, the other sends a GET request): issue the CTLs ourselves.
            _enc_ctl(self._enc.encoder_state, _ctl.set_inband_fec, int(settings.fec))
            _enc_ctl(self._enc.encoder_state, _ctl.set_dtx, int(settings.dtx))
            _enc_ctl(self._enc.encoder_state, _ctl.set_vbr, int(not settings.cbr))
            self._enc.packet_loss_perc = settings.packet_loss_perc
            self._enc.complexity = settings.complexity
        except opuslib.OpusError as exc:
            raise MediaError(f"Opus control failed: {exc}") from None
        self.settings = settings

    @property
    def bitrate(self) -> int:
        return int(self._enc.bitrate)

    @property
    def fec(self) -> bool:
        return bool(_enc_ctl(self._enc.encoder_state, _ctl.get_inband_fec))

    @property
    def dtx(self) -> bool:
        return bool(_enc_ctl(self._enc.encoder_state, _ctl.get_dtx))

    def frame_size(self, ptime_ms: float) -> int:
        tenths = round(ptime_ms * 10)
        if tenths not in _FRAME_TENTHS_MS:
            raise MediaError(f"Opus frame of {ptime_ms} ms is not 2.5/5/10/20/40/60 ms")
        return self.sample_rate * tenths // 10000

    def encode(self, pcm: npt.NDArray[np.int16], *, max_bytes: int = 1275) -> bytes:
        """Encode one frame of int16 samples (interleaved when stereo)."""
        if pcm.dtype != np.int16:
            raise MediaError("Opus input must be int16")
        frame = len(pcm) // self.channels
        if frame * 10000 // self.sample_rate not in _FRAME_TENTHS_MS or (
            frame * 10000 % self.sample_rate
        ):
            raise MediaError(f"{frame} samples is not a valid Opus frame at {self.sample_rate}")
        try:
            return bytes(self._enc.encode(pcm.astype("<i2").tobytes(), frame))
        except opuslib.OpusError as exc:
            raise MediaError(f"Opus encode failed: {exc}") from None


class OpusDecoder:
    """Opus decoder with packet-loss concealment and FEC recovery of the previous frame."""

    def __init__(self, sample_rate: int = 48000, channels: int = 1) -> None:
        _check_rate(sample_rate, channels)
        self.sample_rate = sample_rate
        self.channels = channels
        try:
            self._dec = opuslib.Decoder(sample_rate, channels)
        except opuslib.OpusError as exc:
            raise MediaError(f"Opus decoder init failed: {exc}") from None

    def decode(self, packet: bytes, frame_size: int) -> npt.NDArray[np.int16]:
        """Decode one packet (up to ``frame_size`` samples per channel)."""
        return self._run(packet, frame_size, fec=False)

    def conceal(self, frame_size: int) -> npt.NDArray[np.int16]:
        """PLC for a lost packet (libopus is called with no data)."""
        return self._run(b"", frame_size, fec=False)

    def recover(self, next_packet: bytes, frame_size: int) -> npt.NDArray[np.int16]:
        """Rebuild a lost frame from the LBRR (FEC) data carried in the *next* packet."""
        return self._run(next_packet, frame_size, fec=True)

    def _run(self, packet: bytes, frame_size: int, *, fec: bool) -> npt.NDArray[np.int16]:
        if frame_size <= 0 or frame_size > self.sample_rate * 120 // 1000:
            raise MediaError(f"Opus frame size {frame_size} out of range")
        try:
            if packet:
                out = self._dec.decode(packet, frame_size, decode_fec=fec)
            else:
                out = self._plc(frame_size)
        except opuslib.OpusError as exc:
            raise MediaError(f"Opus decode failed: {exc}") from None
        return np.frombuffer(bytes(out), dtype="<i2").astype(np.int16)

    def _plc(self, frame_size: int) -> bytes:
        # opuslib's decode() cannot pass NULL; libopus treats a NULL packet as lost (PLC).
        pcm = (ctypes.c_int16 * (frame_size * self.channels))()
        n = _opus_api.libopus_decode(self._dec.decoder_state, None, 0, pcm, frame_size, 0)
        if n < 0:
            raise MediaError(f"Opus PLC failed with code {n}")
        return bytes(pcm)[: n * self.channels * 2]
