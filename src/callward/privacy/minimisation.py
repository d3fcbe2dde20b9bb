"""Data minimisation report (GDPR Art. 5(1)(c)): every field callward collects, per schema,
against its declared purpose, with personal fields that nothing reads flagged.

Schemas: the CDR field registry (``records/schema/registry.py``: purpose and data class per
field), the bus events (``events.py``; personal fields in ``PERSONAL_FIELDS``), log events (the
keyword arguments of every ``log.<level>(...)`` call in the source, checked against the
redaction processor's personal keys), and the stores that keep whole SIP messages.

"Used" is found statically: a field counts as read when some module other than its definition
accesses an attribute or key of that name. This over-approximates use (a same-named attribute
of another type counts), so a flagged field is certainly unused by name; an unflagged one may
still deserve review.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FieldReport", "minimisation_report"]

SRC = Path(__file__).resolve().parents[1]
_LOG_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical"})


@dataclass(frozen=True, slots=True)
class FieldReport:
    schema: str
    field: str
    personal: bool
    data_class: str
    purpose: str
    readers: int  # modules reading it (outside its definition)
    flag: str  # "" | "unused personal field" | "no declared purpose" | "logged then masked"


def _scan(src: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(attribute/key name -> modules reading it, log keyword -> modules logging it)."""
    reads: dict[str, set[str]] = {}
    logged: dict[str, set[str]] = {}
    for path in sorted(src.rglob("*.py")):
        mod = str(path.relative_to(src))
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                reads.setdefault(node.attr, set()).add(mod)
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                if isinstance(node.slice.value, str):
                    reads.setdefault(node.slice.value, set()).add(mod)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _LOG_METHODS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in ("log", "logger", "_log", "LOG")
            ):
                for kw in node.keywords:
                    if kw.arg:
                        logged.setdefault(kw.arg, set()).add(mod)
    return reads, logged


def minimisation_report(src: Path = SRC) -> list[FieldReport]:
    from callward import events
    from callward.privacy.redact import PERSONAL_KEYS
    from callward.records.schema.registry import FIELDS, DataClass

    reads, logged = _scan(src)
    out: list[FieldReport] = []

    def readers(name: str, *definitions: str) -> int:
        return len(reads.get(name, set()) - set(definitions))

    for f in FIELDS:
        personal = f.data_class in (DataClass.DIRECT_IDENTIFIER, DataClass.NETWORK_IDENTIFIER)
        n = readers(f.name, "records/schema/registry.py", "records/schema/v1.py",
                    "records/schema/v2.py")  # fmt: skip
        flag = ""
        if not f.purpose.strip():
            flag = "no declared purpose"
        elif personal and n == 0:
            flag = "unused personal field"
        out.append(FieldReport("cdr", f.name, personal, f.data_class.value, f.purpose, n, flag))
    for cls in sorted(events._KINDS.values(), key=lambda c: c.kind):
        for fld in dataclasses.fields(cls):
            personal = fld.name in events.PERSONAL_FIELDS
            n = readers(fld.name, "events.py")
            flag = "unused personal field" if personal and n == 0 else ""
            purpose = "event metadata" if fld.name in ("ts", "node", "seq", "tenant") else cls.kind
            dc = "personal" if personal else "none"
            out.append(FieldReport(f"event:{cls.kind}", fld.name, personal, dc, purpose, n, flag))
    for key, mods in sorted(logged.items()):
        personal = key.lower() in PERSONAL_KEYS
        out.append(FieldReport("log", key, personal, "personal" if personal else "none",
                               f"log field in {', '.join(sorted(mods))[:120]}", len(mods),
                               "logged then masked" if personal else ""))  # fmt: skip
    for store, what in (
        ("quality_capture", "whole SIP messages and RTP headers of sampled calls"),
        ("hep_archive", "whole SIP messages (HEPv3 payload)"),
    ):
        out.append(FieldReport(f"sip:{store}", "*", True, "SIP headers", what, 1, ""))
    return out


def summary(rows: list[FieldReport]) -> dict[str, Any]:
    flagged = [r for r in rows if r.flag]
    return {
        "fields": len(rows),
        "personal": sum(r.personal for r in rows),
        "flagged": [dataclasses.asdict(r) for r in flagged],
    }
