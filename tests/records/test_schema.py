"""Schema versions, migrations and the registry."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import PolicyError, StoreError
from callward.records.schema import (
    FIELDS,
    Cdr,
    CdrV1,
    CdrV2,
    DataClass,
    Leg,
    cdr_to_dict,
    minimize,
    read_cdr,
)

V1_JSON = """{"call_id": "c1@x", "tenant": "t1", "caller": "sip:+4915112345678@op.example",
 "callee": "sip:+4930123456@op.example", "start_ts": 1000.0, "answer_ts": 1002.5,
 "end_ts": 1062.5, "status": 200, "disposition": "answered", "node": "edge-1"}"""


def test_v1_without_version_field_migrates_to_v2() -> None:
    cdr = read_cdr(json.loads(V1_JSON))
    assert isinstance(cdr, CdrV2) and cdr.schema_version == 2
    assert cdr.duration_s == 60.0  # 1062.5 - 1002.5, by hand
    assert [lg.leg for lg in cdr.legs] == ["a"] and cdr.legs[0].nodes == ("edge-1",)
    assert cdr.lineage.source_versions == (1,)
    assert cdr.lineage.transformations == ("migrated:v1->v2",)


def test_v2_roundtrip_through_json() -> None:
    cdr = Cdr(
        call_id="c2",
        tenant="t",
        caller="a",
        callee="b",
        start_ts=1.0,
        answer_ts=2.0,
        end_ts=5.0,
        status=200,
        disposition="answered",
        legs=(Leg("a", ("n1",), 1.0, 2.0, 5.0, 200, "bye", ("PCMU/8000",), 1, 10, 1, 3.5, 4.1),),
        codecs=("PCMU/8000",),
        mos_min=4.1,
    )
    assert read_cdr(json.loads(json.dumps(cdr_to_dict(cdr)))) == cdr


def test_unknown_version_and_garbage_are_store_errors() -> None:
    with pytest.raises(StoreError, match="schema_version 9"):
        read_cdr({"schema_version": 9, "call_id": "x"})
    with pytest.raises(StoreError):
        read_cdr({"schema_version": 2})


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([f.name for f in FIELDS]), st.from_type(object), max_size=8))
def test_read_cdr_never_crashes_with_foreign_errors(data: dict) -> None:
    try:
        read_cdr(data)
    except StoreError:
        pass


def test_every_dataclass_field_is_registered_with_a_class_and_purpose() -> None:
    registered = {f.name for f in FIELDS}
    for cls in (CdrV1, CdrV2):
        for f in dataclasses.fields(cls):
            assert f.name in registered, f"{cls.__name__}.{f.name} missing from registry"
    for spec in FIELDS:
        assert spec.purpose and isinstance(spec.data_class, DataClass)
    direct = {f.name for f in FIELDS if f.data_class is DataClass.DIRECT_IDENTIFIER}
    assert direct == {"caller", "callee"}


def test_minimize_blanks_direct_identifiers_and_records_lineage() -> None:
    cdr = read_cdr(json.loads(V1_JSON))
    small = minimize(cdr, {DataClass.DIRECT_IDENTIFIER})
    assert small.caller == "" and small.callee == "" and small.call_id == cdr.call_id
    assert small.lineage.transformations[-1] == "minimized:direct identifier"
    with pytest.raises(PolicyError):
        minimize(cdr, {DataClass.TRAFFIC_DATA})


def test_invalid_values_cannot_exist() -> None:
    with pytest.raises(ValueError):
        Cdr("", "t", "", "", 0.0, None, None, 0, "answered")
    with pytest.raises(ValueError):
        Cdr("c", "t", "", "", 0.0, None, None, 0, "weird")
