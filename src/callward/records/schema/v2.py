"""CDR schema version 2 (current): legs, media quality, reconciliation flags and lineage.

What v2 adds over v1 and why:

* ``legs`` — a call through a proxy that forks (RFC 3261 §16.6) or is transferred (RFC 5589) has
  several legs, each with its own answer/end times, status and media; one flat record loses them.
* ``codecs``, ``packets``, ``lost``, ``jitter_ms``, ``mos_min`` — per-call media quality
  (MOS per ITU-T G.107 as reported by the media layer) so quality disputes can be answered from
  CDRs alone.
* ``flags`` — findings of the reconciler (legs disagree, incomplete after timeout).
* ``lineage`` — where the record came from: emitting nodes, number of events, source schema
  versions and the transformations applied (assembly, migration, minimization, cold move).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DISPOSITIONS", "Cdr", "CdrV2", "Leg", "Lineage"]

DISPOSITIONS = frozenset(
    {"answered", "busy", "no_answer", "cancelled", "rejected", "failed", "incomplete"}
)


@dataclass(frozen=True, slots=True)
class Lineage:
    nodes: tuple[str, ...] = ()
    events: int = 0
    source_versions: tuple[int, ...] = ()
    transformations: tuple[str, ...] = ()

    def with_step(self, step: str) -> Lineage:
        return Lineage(self.nodes, self.events, self.source_versions, (*self.transformations, step))


@dataclass(frozen=True, slots=True)
class Leg:
    leg: str
    nodes: tuple[str, ...] = ()
    started: float | None = None
    answered: float | None = None
    ended: float | None = None
    status: int | None = None
    reason: str = ""
    codecs: tuple[str, ...] = ()
    reinvites: int = 0
    packets: int = 0
    lost: int = 0
    jitter_ms: float = 0.0
    mos: float | None = None


@dataclass(frozen=True, slots=True)
class CdrV2:
    call_id: str
    tenant: str
    caller: str
    callee: str
    start_ts: float
    answer_ts: float | None
    end_ts: float | None
    status: int
    disposition: str
    legs: tuple[Leg, ...] = ()
    codecs: tuple[str, ...] = ()
    packets: int = 0
    lost: int = 0
    jitter_ms: float = 0.0
    mos_min: float | None = None
    flags: tuple[str, ...] = ()
    lineage: Lineage = field(default_factory=Lineage)
    schema_version: int = 2

    def __post_init__(self) -> None:
        if self.schema_version != 2:
            raise ValueError("CdrV2.schema_version must be 2")
        if not self.call_id:
            raise ValueError("Cdr.call_id must not be empty")
        if self.disposition not in DISPOSITIONS:
            raise ValueError(f"Cdr.disposition {self.disposition!r} not in {sorted(DISPOSITIONS)}")

    @property
    def duration_s(self) -> float:
        """Billable duration: answer to end (0 for unanswered calls)."""
        if self.answer_ts is None or self.end_ts is None:
            return 0.0
        return max(0.0, self.end_ts - self.answer_ts)


Cdr = CdrV2
