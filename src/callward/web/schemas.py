"""Request and response bodies of the REST API (they are the OpenAPI document's schemas).

Request models mirror the planner's own validation (:class:`callward.usage.MediaChoice`) as
JSON-schema constraints, so a client sees the allowed ranges in the OpenAPI document and a bad
value is refused with 422 before the planner runs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

__all__ = [
    "AuditStatus",
    "CallDetail",
    "CallRow",
    "CallsPage",
    "CaptureAnalysis",
    "Codec",
    "ErrorBody",
    "Health",
    "KeepaliveRequest",
    "PlanRequest",
    "PlanResponse",
    "QualitySummary",
    "SessionRequest",
    "Srtp",
]

# Spelled out so the OpenAPI enum and mypy see them; tests/web check they equal the planner's.
Codec = Literal["pcmu", "pcma", "g729", "g722", "opus", "amr-wb"]
Srtp = Literal["none", "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"]


def _integral(v: Any) -> Any:
    """JSON Schema counts 20.0 as an integer (draft 2020-12 §6.1.1 ``type``); a strict model
    would not, so integral floats become ints first and anything else is left to refuse."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


Int = Annotated[int, BeforeValidator(_integral)]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Out):
    error: str = Field(description="one line naming the input and what was expected")


class CallRow(_Out):
    call_id: str
    tenant: str
    caller: str = Field(description="'pn:<keyed pseudonym>' unless revealed")
    callee: str = Field(description="'pn:<keyed pseudonym>' unless revealed")
    start_ts: float
    start_utc: str | None
    duration_s: float
    disposition: str
    status: int
    codecs: list[str]
    packets: int
    lost: int
    loss_pct: float
    jitter_ms: float
    mos: float | None
    flags: list[str]


class CallsPage(_Out):
    calls: list[CallRow]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")
    revealed: bool


class LegOut(_Out):
    leg: str
    nodes: list[str]
    started_utc: str | None
    answered_utc: str | None
    ended_utc: str | None
    status: int | None
    reason: str
    codecs: list[str]
    reinvites: int
    packets: int
    lost: int
    loss_pct: float
    jitter_ms: float
    mos: float | None


class LineageOut(_Out):
    nodes: list[str]
    events: int
    source_versions: list[int]
    transformations: list[str]


class QualityOut(_Out):
    level: Literal["warn", "critical"] | None
    cause: str | None
    mos_warn: float
    mos_critical: float


class CallDetail(CallRow):
    answer_utc: str | None
    end_utc: str | None
    legs: list[LegOut]
    lineage: LineageOut
    quality: QualityOut
    revealed: bool


class MosBin(_Out):
    from_: float = Field(alias="from")
    to: float
    count: int


class MosDistribution(_Out):
    bins: list[MosBin]
    count: int
    mean: float | None
    p5: float | None
    median: float | None


class QualityAlertOut(_Out):
    call_id: str
    tenant: str
    start_utc: str | None
    mos: float
    level: Literal["warn", "critical"]
    cause: str | None


class QualitySummary(_Out):
    calls: int = Field(description="CDRs looked at (the newest `window`)")
    without_mos: int
    distribution: MosDistribution
    alerts: list[QualityAlertOut]
    alerts_total: int
    by_level: dict[str, int]


class KeepaliveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    method: Literal["crlf", "stun", "register"] = "crlf"
    interval_s: Int = Field(120, ge=5, le=86_400)


class PlanRequest(BaseModel):
    """One direction's media choice (see callward.usage.planner.MediaChoice). Strict: JSON
    ``false`` is not a number of minutes, ``"20"`` is not a ptime."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    codec: Codec = "pcmu"
    ptime_ms: Int = Field(20, ge=5, le=120, multiple_of=5)
    bitrate: Annotated[
        Annotated[Int, Field(ge=2_000, le=512_000)] | None,
        # pydantic 2.14 leaks "ge"/"le" into the schema of a validated int inside a union
        WithJsonSchema(
            {"anyOf": [{"type": "integer", "minimum": 2_000, "maximum": 512_000}, {"type": "null"}]}
        ),
    ] = Field(None, description="bit/s (Opus); null = the codec's default rate")
    srtp: Srtp = "AES_CM_128_HMAC_SHA1_80"
    ip_version: Annotated[Literal[4, 6], BeforeValidator(_integral)] = 4
    rohc: bool = False
    voice_activity: float = Field(1.0, gt=0.0, le=1.0)
    rtcp: bool = True
    minutes: float = Field(1.0, ge=0.0, le=100_000.0, description="call length to total up")
    keepalive: KeepaliveRequest | None = None


class PlanResponse(_Out):
    plan: dict[str, object] = Field(description="CallPlan.as_dict(): one direction")
    minutes: float
    bytes_one_direction: int
    bytes_both_directions: int
    keepalive: dict[str, object] | None


class SeriesOut(_Out):
    t_s: list[float] = Field(description="window start, seconds from the stream's first packet")
    jitter_ms: list[float | None]
    loss_pct: list[float | None]
    mos: list[float | None] = Field(description="network MOS per window; null: no G.113 values")


class StreamOut(_Out):
    ssrc: str
    codec: str
    packets: int
    lost: int
    loss_pct: float
    max_jitter_ms: float
    mos: dict[str, float | None] = Field(description="MOS per playout model")
    alert: dict[str, object] | None
    window_s: float
    series: SeriesOut


class CaptureAnalysis(_Out):
    frames: int
    streams: list[StreamOut] = Field(description="named by SSRC only: no address or port")
    calls: int
    problems: list[str]
    plot_png_base64: str | None


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    token: str = Field(min_length=1, max_length=512)


class AuditHead(_Out):
    seq: int
    hash: str


class AuditStatus(_Out):
    intact: bool
    entries: int
    problems: list[str]
    head: AuditHead | None


class Health(_Out):
    status: Literal["ok"]
    version: str
    calls_hot: int
