"""SIP protocol core (sans-IO): messages, URIs, headers, parser.

Entry points: :func:`parse_message` (bytes → Request | Response) and :func:`serialize`
(or ``bytes(msg)``) back.
"""

from callward.errors import SipParseError
from callward.sip.headers import (
    AuthHeader,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    parse_auth,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)
from callward.sip.message import (
    REASON_PHRASES,
    Headers,
    Request,
    Response,
    make_response,
    serialize,
)
from callward.sip.parser import DEFAULT_LIMITS, ParseLimits, frame_stream, parse_message
from callward.sip.uri import URI, AbsoluteURI, SipURI, TelURI, parse_uri

__all__ = [
    "DEFAULT_LIMITS",
    "REASON_PHRASES",
    "URI",
    "AbsoluteURI",
    "AuthHeader",
    "CSeq",
    "Headers",
    "NameAddr",
    "ParseLimits",
    "Request",
    "Response",
    "SipParseError",
    "SipURI",
    "TelURI",
    "Via",
    "canonical_name",
    "frame_stream",
    "make_response",
    "parse_auth",
    "parse_cseq",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "serialize",
    "split_list",
]
