"""callward.media: codecs (G.711, Opus), in-band DTMF, VAD, comfort noise (RFC 3389) and
Opus rate control. Sans-IO: PCM and payload bytes in, PCM and payload bytes out."""

from callward.media.comfort_noise import ComfortNoise, analyze_noise, generate_noise, parse_cn
from callward.media.dtmf_inband import DetectedDigit, DtmfDetector, detect_dtmf, generate_dtmf
from callward.media.dtx import CN_PAYLOAD_TYPE, DtxFrame, G711DtxReceiver, G711DtxSender
from callward.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callward.media.opus import OpusDecoder, OpusEncoder, OpusSettings
from callward.media.rate_control import LinkReport, OpusRateController, RateDecision
from callward.media.vad import VadDecision, VoiceActivityDetector, classify

__all__ = [
    "CN_PAYLOAD_TYPE",
    "ComfortNoise",
    "DetectedDigit",
    "DtmfDetector",
    "DtxFrame",
    "G711DtxReceiver",
    "G711DtxSender",
    "LinkReport",
    "OpusDecoder",
    "OpusEncoder",
    "OpusRateController",
    "OpusSettings",
    "RateDecision",
    "VadDecision",
    "VoiceActivityDetector",
    "alaw_decode",
    "alaw_encode",
    "analyze_noise",
    "classify",
    "detect_dtmf",
    "generate_dtmf",
    "generate_noise",
    "parse_cn",
    "ulaw_decode",
    "ulaw_encode",
]
