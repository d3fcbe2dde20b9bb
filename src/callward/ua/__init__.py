"""callward.ua: a SIP user agent (register, call, answer, cancel, hang up) over any transport.

Sans-IO call/dialog state lives in :mod:`callward.ua.call`; the asyncio adapter in
:mod:`callward.ua.phone` (on the transaction/transport plumbing of :mod:`callward.ua.sip_adapter`,
incoming requests routed by :mod:`callward.ua.incoming`), with the per-call handle in
:mod:`callward.ua.call_handle`; a minimal
G.711 offer/answer in :mod:`callward.ua.sdp_offer` and a paced RTP sender/counter in
:mod:`callward.ua.media`.
"""

from callward.ua.call import CallLeg, CallState, LocalEndpoint
from callward.ua.call_handle import Call
from callward.ua.media import RtpCounters, RtpEndpoint
from callward.ua.phone import Phone
from callward.ua.sdp_offer import AudioEndpoint, answer_sdp, audio_endpoint, offer_sdp

__all__ = [
    "AudioEndpoint",
    "Call",
    "CallLeg",
    "CallState",
    "LocalEndpoint",
    "Phone",
    "RtpCounters",
    "RtpEndpoint",
    "answer_sdp",
    "audio_endpoint",
    "offer_sdp",
]
