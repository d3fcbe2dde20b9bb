"""Transaction identities and events: the values the transaction machines hand to the TU
(RFC 3261 §17). Frozen dataclasses, dispatched with ``match``; re-exported by
:mod:`callward.sip.transaction`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from callward.sip.message import Request, Response
from callward.sip.timers import Timer

__all__ = [
    "AckReceived",
    "RequestReceived",
    "ResponseReceived",
    "StrayResponse",
    "TransactionEvent",
    "TransactionKey",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransportFailed",
]


@dataclass(frozen=True, slots=True)
class TransactionKey:
    """Identity of a transaction. Client side: ``branch`` + CSeq method (§17.1.3); server side
    adds the top Via sent-by (§17.2.3). ACK maps to INVITE; CANCEL keeps its own key."""

    branch: str
    method: str
    sent_by: str = ""


# ---------------------------------------------------------------- events (frozen values)


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU (retransmissions are absorbed by the server transaction)."""

    request: Request
    key: TransactionKey
    peer: Any = None


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK the TU must see: the ACK for a 2xx (its own transaction, §17) or one arriving
    while the INVITE server transaction is Accepted (RFC 6026 §8.7). ``key`` is None when
    no server transaction matched."""

    request: Request
    key: TransactionKey | None
    peer: Any = None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    response: Response
    key: TransactionKey


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response no client transaction matches: a proxy forwards it statelessly (§16.7.9);
    a UA core sees 2xx retransmissions for INVITE here once Timer M has ended (RFC 6026)."""

    response: Response
    peer: Any = None


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B, F (client: no final response) or H (server: no ACK) fired."""

    key: TransactionKey
    timer: Timer


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport reported a failure sending this transaction's message (§17.1.4, §17.2.4)."""

    key: TransactionKey


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    key: TransactionKey


TransactionEvent = (
    RequestReceived
    | AckReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimeout
    | TransportFailed
    | TransactionTerminated
)
