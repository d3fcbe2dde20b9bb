"""Typed events that services publish and the data layer consumes.

Services (edge, relay, ua) never import the data layer; they publish these frozen values on an
:class:`EventBus`. The in-process bus is the embedded default; a NATS JetStream bus (subjects
``callward.events.<tenant>.<kind>``) lives in ``callward.records.bus`` for scale-out.

Every event carries ``node`` and ``seq`` so consumers can de-duplicate on
(call_id, leg, node, seq) and tolerate redelivery and reordering.
Fields holding personal data (``aor``, ``caller``, ``callee``, addresses) are marked in
``PERSONAL_FIELDS``; exporters and loggers must pass them through the privacy layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

__all__ = [
    "PERSONAL_FIELDS",
    "SECURITY_ALERT_RULES",
    "CallAnswered",
    "CallEnded",
    "CallStarted",
    "Event",
    "EventBus",
    "InProcessBus",
    "MediaAdaptation",
    "MediaStats",
    "QualityAlert",
    "RegistrationChanged",
    "SecurityAlert",
    "event_from_dict",
    "event_to_dict",
]


@dataclass(frozen=True, slots=True)
class _Base:
    kind: ClassVar[str] = "event"
    ts: float  # seconds since the epoch, from the service's injected clock
    node: str  # emitting node id
    seq: int  # per-node monotonically increasing sequence
    tenant: str = "default"


@dataclass(frozen=True, slots=True)
class RegistrationChanged(_Base):
    kind: ClassVar[str] = "registration"
    aor: str = ""
    contact_count: int = 0
    expires: int = 0
    reason: str = ""  # "registered" | "refreshed" | "unregistered" | "expired"


@dataclass(frozen=True, slots=True)
class CallStarted(_Base):
    kind: ClassVar[str] = "call_started"
    call_id: str = ""
    leg: str = "a"
    caller: str = ""
    callee: str = ""
    sdp_summary: str = ""  # e.g. "PCMU/8000 srtp-sdes"


@dataclass(frozen=True, slots=True)
class CallAnswered(_Base):
    kind: ClassVar[str] = "call_answered"
    call_id: str = ""
    leg: str = "a"
    sdp_summary: str = ""


@dataclass(frozen=True, slots=True)
class CallEnded(_Base):
    kind: ClassVar[str] = "call_ended"
    call_id: str = ""
    leg: str = "a"
    status: int = 200  # final SIP status of the INVITE (200 for an answered call)
    reason: str = ""  # "bye" | "cancel" | "rtp-timeout" | "session-expired" | "error:<code>" ...


@dataclass(frozen=True, slots=True)
class MediaStats(_Base):
    kind: ClassVar[str] = "media_stats"
    call_id: str = ""
    leg: str = "a"
    ssrc: int = 0
    codec: str = ""
    packets: int = 0
    lost: int = 0
    jitter_ms: float = 0.0
    rtt_ms: float | None = None
    mos: float | None = None
    bytes_sent: int = 0
    bytes_received: int = 0


# The rules a SecurityAlert may carry (a bounded vocabulary: metric labels and log fields use
# it; anything else is reported as "other").
SECURITY_ALERT_RULES = frozenset(
    {
        "account-lockout", "password-guessing", "scanner-user-agent", "options-sweep",
        "extension-scan", "concurrent-calls", "cps-spike", "costly-velocity",
        "register-auth-failed", "tls-cert-expiring", "tls-cert-expired", "cross-tenant",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SecurityAlert(_Base):
    kind: ClassVar[str] = "security_alert"
    rule: str = ""
    source: str = ""  # personal (an address): pseudonymize before export
    detail: str = ""


@dataclass(frozen=True, slots=True)
class QualityAlert(_Base):
    kind: ClassVar[str] = "quality_alert"
    call_id: str = ""
    leg: str = "a"
    level: str = "warn"  # "warn" | "critical"
    mos: float = 0.0
    cause: str = ""  # "loss" | "jitter" | "delay" | "codec"


@dataclass(frozen=True, slots=True)
class MediaAdaptation(_Base):
    kind: ClassVar[str] = "media_adaptation"
    call_id: str = ""
    leg: str = "a"
    bitrate: int = 0  # Opus target bitrate (bit/s) now asked of that leg's encoder
    fec: bool = False
    ptime_ms: int = 20
    reason: str = ""  # short cause: "loss-rise" | "loss-fall" | "fec-on" | "rtt-high" | ...


Event = (
    RegistrationChanged
    | CallStarted
    | CallAnswered
    | CallEnded
    | MediaStats
    | SecurityAlert
    | QualityAlert
    | MediaAdaptation
)

_KINDS: dict[str, type[Any]] = {
    cls.kind: cls
    for cls in (
        RegistrationChanged,
        CallStarted,
        CallAnswered,
        CallEnded,
        MediaStats,
        SecurityAlert,
        QualityAlert,
        MediaAdaptation,
    )
}

PERSONAL_FIELDS: frozenset[str] = frozenset({"aor", "caller", "callee", "source"})


def event_to_dict(event: Event) -> dict[str, Any]:
    """Serialize for a wire bus (JSON); ``kind`` names the class."""
    data = dataclasses.asdict(event)
    data["kind"] = event.kind
    return data


def event_from_dict(data: dict[str, Any]) -> Event:
    """Inverse of :func:`event_to_dict`; unknown fields are dropped so newer producers can
    add fields without breaking older consumers."""
    kind = data.get("kind")
    cls = _KINDS.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    result: Event = cls(**{k: v for k, v in data.items() if k in names})
    return result


Handler = Callable[[Event], Awaitable[None] | None]


class EventBus(Protocol):
    """What services publish to. Implementations: :class:`InProcessBus` and NATS JetStream."""

    async def publish(self, event: Event) -> None: ...

    def subscribe(self, handler: Handler) -> None: ...


@dataclass
class InProcessBus:
    """Embedded default: delivers synchronously to every subscriber, in subscription order."""

    handlers: list[Handler] = field(default_factory=list)
    published: int = 0

    async def publish(self, event: Event) -> None:
        self.published += 1
        for handler in list(self.handlers):
            result = handler(event)
            if result is not None:
                await result

    def subscribe(self, handler: Handler) -> None:
        self.handlers.append(handler)
