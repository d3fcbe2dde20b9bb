"""callward.rtp: RTP/RTCP wire formats (RFC 3550, 3611, 8285, 5761), receiver statistics,
SRTP (RFC 3711/7714 via libsrtp), RFC 4733 DTMF and playout-buffer models. Sans-IO."""

from typing import TYPE_CHECKING

from callward.lazy import exports

if TYPE_CHECKING:
    from callward.rtp.dtmf import (
        DigitEvent,
        DtmfRelayBody,
        TelephoneEvent,
        TelephoneEventReceiver,
        encode_digit,
        parse_telephone_event,
    )
    from callward.rtp.jitter_buffer import AdaptiveBuffer, FixedBuffer, PlayoutModel, PlayoutResult
    from callward.rtp.packet import (
        ExtensionElement,
        PayloadType,
        RtpExtension,
        RtpPacket,
        is_rtcp,
        parse_rtp,
    )
    from callward.rtp.rtcp import (
        App,
        Bye,
        ReceiverReport,
        ReportBlock,
        RtcpPacket,
        RtcpType,
        Sdes,
        SdesChunk,
        SdesItem,
        SenderReport,
        UnknownRtcp,
        VoipMetrics,
        XrBlock,
        XrPacket,
        parse_rtcp,
        serialize_rtcp,
    )
    from callward.rtp.session import RtpSession, rtcp_interval
    from callward.rtp.srtp import SrtpContext, SrtpError, SrtpKeying, SrtpProfile
    from callward.rtp.stats import ReceiverSnapshot, ReceiverStats, ntp_from_unix, rtt_from_report

__all__ = [
    "AdaptiveBuffer",
    "App",
    "Bye",
    "DigitEvent",
    "DtmfRelayBody",
    "ExtensionElement",
    "FixedBuffer",
    "PayloadType",
    "PlayoutModel",
    "PlayoutResult",
    "ReceiverReport",
    "ReceiverSnapshot",
    "ReceiverStats",
    "ReportBlock",
    "RtcpPacket",
    "RtcpType",
    "RtpExtension",
    "RtpPacket",
    "RtpSession",
    "Sdes",
    "SdesChunk",
    "SdesItem",
    "SenderReport",
    "SrtpContext",
    "SrtpError",
    "SrtpKeying",
    "SrtpProfile",
    "TelephoneEvent",
    "TelephoneEventReceiver",
    "UnknownRtcp",
    "VoipMetrics",
    "XrBlock",
    "XrPacket",
    "encode_digit",
    "is_rtcp",
    "ntp_from_unix",
    "parse_rtcp",
    "parse_rtp",
    "parse_telephone_event",
    "rtcp_interval",
    "rtt_from_report",
    "serialize_rtcp",
]

# Names load on first use (PEP 562) from the module the TYPE_CHECKING block names: add an
# export by importing it there and listing it in __all__.
__getattr__ = exports(__name__)
