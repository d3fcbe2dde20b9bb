"""Data-usage planning: bytes per minute for each media and transport choice."""

from callward.usage.planner import (
    CODECS,
    SRTP_TAG_BYTES,
    CallPlan,
    KeepalivePlan,
    MediaChoice,
    plan_call,
    plan_keepalive,
)

__all__ = [
    "CODECS",
    "SRTP_TAG_BYTES",
    "CallPlan",
    "KeepalivePlan",
    "MediaChoice",
    "plan_call",
    "plan_keepalive",
]
