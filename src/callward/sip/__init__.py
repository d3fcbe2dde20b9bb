"""SIP protocol core (sans-IO): messages, URIs, headers, parser, transactions, dialogs,
digest auth and RFC 3263 server location.

Entry points: :func:`parse_message` (bytes → Request | Response) and :func:`serialize`
(or ``bytes(msg)``) back; :class:`TransactionLayer` for RFC 3261 §17; :class:`Dialog` for §12;
:class:`DigestVerifier` / :func:`authorize` for digest; :class:`ServerLocator` for RFC 3263.
The asyncio adapters live in ``callward.sip.transport`` and ``callward.sip.dns_resolver``.
"""

from typing import TYPE_CHECKING

from callward.lazy import exports

if TYPE_CHECKING:
    from callward.errors import SipParseError
    from callward.sip.auth import (
        AuthOutcome,
        AuthResult,
        DigestVerifier,
        NonceSigner,
        authorize,
        ha1,
    )
    from callward.sip.dialog import Dialog, DialogId, DialogState
    from callward.sip.dns import DnsCache, ServerLocator, Target
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
    from callward.sip.timers import TimerConfig
    from callward.sip.transaction import (
        ClientTransaction,
        ServerTransaction,
        TransactionKey,
        make_ack,
        make_cancel,
        new_branch,
    )
    from callward.sip.transaction_layer import TransactionLayer
    from callward.sip.uri import URI, AbsoluteURI, SipURI, TelURI, parse_uri

__all__ = [
    "DEFAULT_LIMITS",
    "REASON_PHRASES",
    "URI",
    "AbsoluteURI",
    "AuthHeader",
    "AuthOutcome",
    "AuthResult",
    "CSeq",
    "ClientTransaction",
    "Dialog",
    "DialogId",
    "DialogState",
    "DigestVerifier",
    "DnsCache",
    "Headers",
    "NameAddr",
    "NonceSigner",
    "ParseLimits",
    "Request",
    "Response",
    "ServerLocator",
    "ServerTransaction",
    "SipParseError",
    "SipURI",
    "Target",
    "TelURI",
    "TimerConfig",
    "TransactionKey",
    "TransactionLayer",
    "Via",
    "authorize",
    "canonical_name",
    "frame_stream",
    "ha1",
    "make_ack",
    "make_cancel",
    "make_response",
    "new_branch",
    "parse_auth",
    "parse_cseq",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "serialize",
    "split_list",
]

# Names load on first use (PEP 562) from the module the TYPE_CHECKING block names: add an
# export by importing it there and listing it in __all__.
__getattr__ = exports(__name__)
