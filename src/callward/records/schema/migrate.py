"""Migrations between CDR schema versions and (de)serialization of any version.

Readers accept every older version: :func:`read_cdr` dispatches on ``schema_version`` (absent
means 1, the only version that predates the field being mandatory in stored JSON) and migrates
step by step to the latest, recording each step in lineage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from callward.errors import PolicyError, StoreError
from callward.records.schema.registry import DataClass, fields_in_class
from callward.records.schema.v1 import CdrV1
from callward.records.schema.v2 import Cdr, CdrV2, Leg, Lineage

__all__ = ["LATEST", "cdr_from_dict", "cdr_to_dict", "migrate_v1_to_v2", "minimize", "read_cdr"]

LATEST = 2


def migrate_v1_to_v2(old: CdrV1) -> CdrV2:
    """v1 has one implicit leg written by one node; v2 makes the leg and the lineage explicit."""
    leg = Leg(
        leg="a",
        nodes=(old.node,) if old.node else (),
        started=old.start_ts,
        answered=old.answer_ts,
        ended=old.end_ts,
        status=old.status,
    )
    return CdrV2(
        call_id=old.call_id,
        tenant=old.tenant,
        caller=old.caller,
        callee=old.callee,
        start_ts=old.start_ts,
        answer_ts=old.answer_ts,
        end_ts=old.end_ts,
        status=old.status,
        disposition=old.disposition,
        legs=(leg,),
        lineage=Lineage(
            nodes=(old.node,) if old.node else (),
            source_versions=(1,),
            transformations=("migrated:v1->v2",),
        ),
    )


def _v1_from_dict(d: Mapping[str, Any]) -> CdrV1:
    return CdrV1(
        call_id=str(d["call_id"]),
        tenant=str(d.get("tenant", "default")),
        caller=str(d.get("caller", "")),
        callee=str(d.get("callee", "")),
        start_ts=float(d["start_ts"]),
        answer_ts=None if d.get("answer_ts") is None else float(d["answer_ts"]),
        end_ts=None if d.get("end_ts") is None else float(d["end_ts"]),
        status=int(d.get("status", 0)),
        disposition=str(d.get("disposition", "incomplete")),
        node=str(d.get("node", "")),
    )


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


def _leg_from_dict(d: Mapping[str, Any]) -> Leg:
    return Leg(
        leg=str(d["leg"]),
        nodes=tuple(str(n) for n in d.get("nodes", ())),
        started=_opt(d.get("started")),
        answered=_opt(d.get("answered")),
        ended=_opt(d.get("ended")),
        status=None if d.get("status") is None else int(d["status"]),
        reason=str(d.get("reason", "")),
        codecs=tuple(str(c) for c in d.get("codecs", ())),
        reinvites=int(d.get("reinvites", 0)),
        packets=int(d.get("packets", 0)),
        lost=int(d.get("lost", 0)),
        jitter_ms=float(d.get("jitter_ms", 0.0)),
        mos=_opt(d.get("mos")),
    )


def lineage_from_dict(d: Mapping[str, Any]) -> Lineage:
    return Lineage(
        nodes=tuple(str(n) for n in d.get("nodes", ())),
        events=int(d.get("events", 0)),
        source_versions=tuple(int(v) for v in d.get("source_versions", ())),
        transformations=tuple(str(t) for t in d.get("transformations", ())),
    )


def _v2_from_dict(d: Mapping[str, Any]) -> CdrV2:
    return CdrV2(
        call_id=str(d["call_id"]),
        tenant=str(d.get("tenant", "default")),
        caller=str(d.get("caller", "")),
        callee=str(d.get("callee", "")),
        start_ts=float(d["start_ts"]),
        answer_ts=_opt(d.get("answer_ts")),
        end_ts=_opt(d.get("end_ts")),
        status=int(d.get("status", 0)),
        disposition=str(d.get("disposition", "incomplete")),
        legs=tuple(_leg_from_dict(x) for x in d.get("legs", ())),
        codecs=tuple(str(c) for c in d.get("codecs", ())),
        packets=int(d.get("packets", 0)),
        lost=int(d.get("lost", 0)),
        jitter_ms=float(d.get("jitter_ms", 0.0)),
        mos_min=_opt(d.get("mos_min")),
        flags=tuple(str(f) for f in d.get("flags", ())),
        lineage=lineage_from_dict(d.get("lineage") or {}),
    )


_READERS: dict[int, Callable[[Mapping[str, Any]], Any]] = {1: _v1_from_dict, 2: _v2_from_dict}
_STEPS: dict[int, Callable[[Any], Any]] = {1: migrate_v1_to_v2}


def read_cdr(data: Mapping[str, Any]) -> Cdr:
    """Parse a stored/exported CDR of any known version and migrate it to the latest."""
    try:
        version = int(data.get("schema_version", 1))
        reader = _READERS.get(version)
        if reader is None:
            raise StoreError(f"CDR schema_version {version}: unknown (this reader knows 1..2)")
        record = reader(data)
        while version < LATEST:
            record = _STEPS[version](record)
            version += 1
        assert isinstance(record, CdrV2)
        return record
    except StoreError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        raise StoreError(f"CDR record: invalid ({type(exc).__name__}: {exc})") from None


cdr_from_dict = read_cdr


def cdr_to_dict(cdr: CdrV1 | CdrV2) -> dict[str, Any]:
    """JSON-ready dict of a record (nested dataclasses become dicts, tuples lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cdr).items()}


def minimize(cdr: Cdr, drop: frozenset[DataClass] | set[DataClass]) -> Cdr:
    """Blank every field of the given identifier classes (GDPR Art. 5(1)(c) minimization).

    Only identifier classes can be blanked in place; traffic data is the record itself, so its
    retention ends by deleting the record (see :mod:`callward.records.retention`)."""
    changes: dict[str, Any] = {}
    for dc in drop:
        if dc not in (DataClass.DIRECT_IDENTIFIER, DataClass.NETWORK_IDENTIFIER):
            raise PolicyError(f"minimize: {dc} cannot be blanked in place; delete the record")
        for name in fields_in_class(dc):
            if name in ("call_id", "schema_version", "lineage"):
                continue  # the key and provenance stay: they are needed to find and audit it
            default = next(f for f in dataclasses.fields(CdrV2) if f.name == name)
            if default.default is not dataclasses.MISSING:
                changes[name] = default.default
            elif default.default_factory is not dataclasses.MISSING:
                changes[name] = default.default_factory()
            else:
                changes[name] = "" if isinstance(getattr(cdr, name), str) else None
    if not changes:
        return cdr
    step = "minimized:" + ",".join(sorted(str(d) for d in drop))
    return dataclasses.replace(cdr, **changes, lineage=cdr.lineage.with_step(step))
