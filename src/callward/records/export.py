"""Data-subject exports (GDPR Art. 15 access / Art. 20 portability) in a documented format.

What is in it and why (format ``callward-portability/1``, documented in docs/privacy.md):

* every CDR where the subject is the caller or the callee, found by pseudonym in hot and cold
  storage, with the subject's ``role``;
* the *other* party is third-party personal data (Art. 15(4)): it is masked like an itemized bill
  (ePrivacy Directive Art. 7: all but the last three digits hidden);
* each record's lineage (nodes, schema versions, transformations) plus the export's own lineage
  step, and the field dictionary from the schema registry so the file explains itself.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable
from typing import Any

from callward import __version__
from callward.privacy.pseudonym import normalize_subject
from callward.records.rows import ERASED
from callward.records.schema import FIELDS, Cdr

__all__ = ["CSV_COLUMNS", "FORMAT", "export_csv", "export_json", "export_records", "mask_party"]

FORMAT = "callward-portability/1"
CSV_COLUMNS = (
    "call_id", "role", "other_party", "start_utc", "answer_utc", "end_utc", "duration_s",
    "disposition", "status", "codecs", "mos_min", "legs", "lineage",
)  # fmt: skip


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def mask_party(identifier: str) -> str:
    """Hide all but the last three characters of the subject part of an identifier."""
    if not identifier or identifier == ERASED:
        return identifier
    try:
        core = normalize_subject(identifier)
    except Exception:
        core = identifier
    user = core.split("@", 1)[0]
    keep = user[-3:] if len(user) > 3 else ""
    return "*" * max(3, len(user) - len(keep)) + keep


def export_records(subject: str, cdrs: Iterable[Cdr]) -> list[dict[str, Any]]:
    me = normalize_subject(subject)
    out = []
    for c in cdrs:
        is_caller = bool(c.caller) and c.caller != ERASED and normalize_subject(c.caller) == me
        role = "caller" if is_caller else "callee"
        other = c.callee if is_caller else c.caller
        out.append(
            {
                "call_id": c.call_id,
                "role": role,
                "other_party": mask_party(other),
                "start_utc": _iso(c.start_ts),
                "answer_utc": _iso(c.answer_ts),
                "end_utc": _iso(c.end_ts),
                "duration_s": round(c.duration_s, 3),
                "disposition": c.disposition,
                "status": c.status,
                "codecs": list(c.codecs),
                "mos_min": c.mos_min,
                "legs": [
                    {
                        "leg": lg.leg,
                        "answered_utc": _iso(lg.answered),
                        "ended_utc": _iso(lg.ended),
                        "status": lg.status,
                        "codecs": list(lg.codecs),
                        "mos": lg.mos,
                    }
                    for lg in c.legs
                ],
                "lineage": {
                    "nodes": list(c.lineage.nodes),
                    "source_versions": list(c.lineage.source_versions),
                    "transformations": [*c.lineage.transformations, f"exported:{FORMAT}"],
                },
            }
        )
    return out


def export_json(subject: str, cdrs: Iterable[Cdr], now: float) -> str:
    records = export_records(subject, cdrs)
    doc = {
        "format": FORMAT,
        "generated_utc": _iso(now),
        "generator": f"callward/{__version__}",
        "subject": normalize_subject(subject),
        "record_count": len(records),
        "fields": {
            f.name: {"purpose": f.purpose, "personal_data_class": str(f.data_class)}
            for f in FIELDS
            if f.since <= 2 and f.name != "node"
        },
        "records": records,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def export_csv(subject: str, cdrs: Iterable[Cdr]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in export_records(subject, cdrs):
        w.writerow(
            [
                r["call_id"], r["role"], r["other_party"], r["start_utc"], r["answer_utc"] or "",
                r["end_utc"] or "", r["duration_s"], r["disposition"], r["status"],
                " ".join(r["codecs"]), "" if r["mos_min"] is None else r["mos_min"],
                json.dumps(r["legs"], separators=(",", ":")),
                json.dumps(r["lineage"], separators=(",", ":")),
            ]
        )  # fmt: skip
    return buf.getvalue()
