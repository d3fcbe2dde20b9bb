"""Versioned CDR schema: v1, v2 (current), migrations and the field registry."""

from callward.records.schema.migrate import (
    LATEST,
    cdr_from_dict,
    cdr_to_dict,
    migrate_v1_to_v2,
    minimize,
    read_cdr,
)
from callward.records.schema.registry import (
    FIELDS,
    DataClass,
    FieldSpec,
    field_spec,
    fields_in_class,
)
from callward.records.schema.v1 import CdrV1
from callward.records.schema.v2 import DISPOSITIONS, Cdr, CdrV2, Leg, Lineage

__all__ = [
    "DISPOSITIONS",
    "FIELDS",
    "LATEST",
    "Cdr",
    "CdrV1",
    "CdrV2",
    "DataClass",
    "FieldSpec",
    "Leg",
    "Lineage",
    "cdr_from_dict",
    "cdr_to_dict",
    "field_spec",
    "fields_in_class",
    "migrate_v1_to_v2",
    "minimize",
    "read_cdr",
]
