"""callward.ng: rtpengine's ng control protocol as a sans-IO core - bencode with limits,
cookie framing, typed commands and flags, and an ng client with retransmission. The relay
daemon (``callward.relay.ng_server``) serves it; the edge drives relays with the client."""

from callward.ng.bencode import DEFAULT_LIMITS, BencodeLimits, BValue, bdecode, bencode
from callward.ng.client import NgClient, NgEvent, NgReply, NgTimeout
from callward.ng.protocol import (
    NgCommand,
    NgFlags,
    NgMessage,
    NgRequest,
    error_reply,
    parse_message,
    parse_request,
    request_body,
    serialize_message,
)

__all__ = [
    "DEFAULT_LIMITS",
    "BValue",
    "BencodeLimits",
    "NgClient",
    "NgCommand",
    "NgEvent",
    "NgFlags",
    "NgMessage",
    "NgReply",
    "NgRequest",
    "NgTimeout",
    "bdecode",
    "bencode",
    "error_reply",
    "parse_message",
    "parse_request",
    "request_body",
    "serialize_message",
]
