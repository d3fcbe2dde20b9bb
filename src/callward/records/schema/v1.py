"""CDR schema version 1: one record per call, no legs, no media.

Kept verbatim so records written by version-1 producers (and stored v1 JSON) stay readable; new
records are always written as the latest version (:mod:`callward.records.schema.v2`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CdrV1"]


@dataclass(frozen=True, slots=True)
class CdrV1:
    call_id: str
    tenant: str
    caller: str
    callee: str
    start_ts: float
    answer_ts: float | None
    end_ts: float | None
    status: int
    disposition: str
    node: str
    schema_version: int = 1

    def __post_init__(self) -> None:
        if self.schema_version != 1:
            raise ValueError("CdrV1.schema_version must be 1")
        if not self.call_id:
            raise ValueError("CdrV1.call_id must not be empty")
