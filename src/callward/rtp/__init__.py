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

# Names load on first use (PEP 562): importing one submodule (e.g. the parser) does not
# pull in the whole package. Add an export by importing it above AND listing it here.
_HOME = {
    "AdaptiveBuffer": "callward.rtp.jitter_buffer",
    "App": "callward.rtp.rtcp",
    "Bye": "callward.rtp.rtcp",
    "DigitEvent": "callward.rtp.dtmf",
    "DtmfRelayBody": "callward.rtp.dtmf",
    "ExtensionElement": "callward.rtp.packet",
    "FixedBuffer": "callward.rtp.jitter_buffer",
    "PayloadType": "callward.rtp.packet",
    "PlayoutModel": "callward.rtp.jitter_buffer",
    "PlayoutResult": "callward.rtp.jitter_buffer",
    "ReceiverReport": "callward.rtp.rtcp",
    "ReceiverSnapshot": "callward.rtp.stats",
    "ReceiverStats": "callward.rtp.stats",
    "ReportBlock": "callward.rtp.rtcp",
    "RtcpPacket": "callward.rtp.rtcp",
    "RtcpType": "callward.rtp.rtcp",
    "RtpExtension": "callward.rtp.packet",
    "RtpPacket": "callward.rtp.packet",
    "RtpSession": "callward.rtp.session",
    "Sdes": "callward.rtp.rtcp",
    "SdesChunk": "callward.rtp.rtcp",
    "SdesItem": "callward.rtp.rtcp",
    "SenderReport": "callward.rtp.rtcp",
    "SrtpContext": "callward.rtp.srtp",
    "SrtpError": "callward.rtp.srtp",
    "SrtpKeying": "callward.rtp.srtp",
    "SrtpProfile": "callward.rtp.srtp",
    "TelephoneEvent": "callward.rtp.dtmf",
    "TelephoneEventReceiver": "callward.rtp.dtmf",
    "UnknownRtcp": "callward.rtp.rtcp",
    "VoipMetrics": "callward.rtp.rtcp",
    "XrBlock": "callward.rtp.rtcp",
    "XrPacket": "callward.rtp.rtcp",
    "encode_digit": "callward.rtp.dtmf",
    "is_rtcp": "callward.rtp.packet",
    "ntp_from_unix": "callward.rtp.stats",
    "parse_rtcp": "callward.rtp.rtcp",
    "parse_rtp": "callward.rtp.packet",
    "parse_telephone_event": "callward.rtp.dtmf",
    "rtcp_interval": "callward.rtp.session",
    "rtt_from_report": "callward.rtp.stats",
    "serialize_rtcp": "callward.rtp.rtcp",
}


__getattr__ = exports(__name__, _HOME)
