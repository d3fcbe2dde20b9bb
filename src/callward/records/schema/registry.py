"""Schema registry: every CDR field with its version, purpose and personal-data class.

Why a registry: data minimization (GDPR Art. 5(1)(c)) and retention decide per *class of data*,
not per column name; exports must state what each field means (Art. 15/20 requests). Keeping the
classification next to the schema (and testing that every dataclass field is registered) stops a
new field from silently escaping retention or being exported without a description.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["FIELDS", "DataClass", "FieldSpec", "field_spec", "fields_in_class"]


class DataClass(StrEnum):
    """Personal-data class of a field."""

    DIRECT_IDENTIFIER = "direct identifier"  # names a subscriber: MSISDN, SIP URI
    NETWORK_IDENTIFIER = "network identifier"  # identifies a device/flow/node, may embed hosts
    TRAFFIC_DATA = "traffic data"  # ePrivacy Directive Art. 2(b): when, how long, outcome
    NONE = "none"  # quality metrics and record metadata, not about a person by themselves


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    since: int  # first schema version carrying the field
    type: str
    data_class: DataClass
    purpose: str


_D, _N, _T, _X = (
    DataClass.DIRECT_IDENTIFIER,
    DataClass.NETWORK_IDENTIFIER,
    DataClass.TRAFFIC_DATA,
    DataClass.NONE,
)

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("schema_version", 1, "int", _X, "record format version, lets readers migrate"),
    FieldSpec("call_id", 1, "str", _N, "SIP Call-ID (RFC 3261 §8.1.1.4): joins legs, dedup key"),
    FieldSpec("tenant", 1, "str", _X, "operator tenant owning the record; selects jurisdiction"),
    FieldSpec("caller", 1, "str", _D, "calling party URI/MSISDN: billing, legal requests"),
    FieldSpec("callee", 1, "str", _D, "called party URI/MSISDN: billing, legal requests"),
    FieldSpec("start_ts", 1, "float", _T, "INVITE received (epoch s): billing, retention age"),
    FieldSpec("answer_ts", 1, "float|null", _T, "first 2xx (epoch s): billable start"),
    FieldSpec("end_ts", 1, "float|null", _T, "BYE/CANCEL/final error (epoch s): billable end"),
    FieldSpec("status", 1, "int", _T, "final SIP status of the call (RFC 3261 §16.7 selection)"),
    FieldSpec("disposition", 1, "str", _T, "answered/busy/no_answer/cancelled/rejected/failed"),
    FieldSpec("node", 1, "str", _N, "v1 only: the node that wrote the record (now in lineage)"),
    FieldSpec("legs", 2, "list[Leg]", _T, "per-leg timing, status, codecs, media: forks/transfers"),
    FieldSpec("codecs", 2, "list[str]", _X, "codecs negotiated over the call (SDP, re-INVITEs)"),
    FieldSpec("packets", 2, "int", _X, "RTP packets received over all legs: quality disputes"),
    FieldSpec("lost", 2, "int", _X, "RTP packets lost (RFC 3550 §6.4.1 cumulative lost)"),
    FieldSpec("jitter_ms", 2, "float", _X, "worst interarrival jitter (RFC 3550 §6.4.1)"),
    FieldSpec("mos_min", 2, "float|null", _X, "lowest leg MOS (ITU-T G.107 E-model)"),
    FieldSpec("flags", 2, "list[str]", _X, "reconciler findings: legs disagree, incomplete"),
    FieldSpec("lineage", 2, "Lineage", _N, "source nodes, versions, transformations: provenance"),
)

_REMOVED = frozenset({"node"})  # fields of older versions folded into newer ones (lineage)
_BY_NAME = {f.name: f for f in FIELDS}


def field_spec(name: str) -> FieldSpec:
    return _BY_NAME[name]


def fields_in_class(data_class: DataClass, version: int = 2) -> tuple[str, ...]:
    """Names of fields of ``data_class`` present in schema ``version``."""
    return tuple(
        f.name
        for f in FIELDS
        if f.data_class == data_class
        and f.since <= version
        and not (f.name in _REMOVED and version > 1)
    )
