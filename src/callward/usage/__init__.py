"""Data-usage planning: bytes per minute for each media and transport choice, keep-alive
budgets, and bytes measured on the wire from captures."""

from callward.usage.keepalive import (
    IdlePlan,
    KeepalivePlan,
    SipSizes,
    exchange_bytes,
    plan_idle,
    plan_keepalive,
)
from callward.usage.planner import (
    CODECS,
    SRTP_TAG_BYTES,
    CallPlan,
    MediaChoice,
    plan_call,
)

__all__ = [
    "CODECS",
    "SRTP_TAG_BYTES",
    "CallPlan",
    "IdlePlan",
    "KeepalivePlan",
    "MediaChoice",
    "SipSizes",
    "exchange_bytes",
    "plan_call",
    "plan_idle",
    "plan_keepalive",
]
