"""DPIA and DPA registers checked against the running deployment (``callward privacy dpia
check``; exit 1 on a violation).

A DPIA record (GDPR Art. 35) per processing activity lives in the deployment file::

    dpias:
      - activity: third-party media relay
        components: [relay-us]
        risks: [interception of media by the processor, transfer outside the EEA]
        mitigations:
          excluded_regions: [cn-north]        # the relay must never run there
          consent_rule: true                  # recording only through the consent gate
          max_retention_days: {recording: 30, cdr: 1095}

Checked: a covered component in an excluded region; recording by a component that is not
consent-gated, or ``privacy.record_calls`` with a recording jurisdiction that has no consent
rule; a retention schedule (from the retention rule sets, any tenant) longer than the DPIA states.
The DPA register (Art. 28) is the ``dpa`` of each processor: missing or expired is a violation,
expiring within 60 days a warning, and data classes or regions outside its scope are violations.
Cross-border transfers without a safeguard (Chapter V) are violations.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from callward.errors import CallwardError
from callward.privacy.dataflow import Deployment, transfers

__all__ = ["Finding", "check_deployment"]

_EXPIRY_WARN_DAYS = 60


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str  # "violation" | "warning"
    register: str  # "dpia" | "dpa" | "transfer"
    subject: str
    message: str


def _date(text: str | None) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        return None


def _dpa_findings(dep: Deployment, today: dt.date) -> list[Finding]:
    out: list[Finding] = []
    used: dict[str, tuple[set[str], set[str]]] = {}  # processor -> (data classes, regions)
    by_name = {c.name: c for c in dep.components}
    for c in dep.components:
        if c.operator != "controller":
            dcs, regs = used.setdefault(c.operator, (set(), set()))
            dcs.update(c.stores)
            regs.add(c.region)
        for to, data in c.sends:
            tgt = by_name[to]
            if tgt.operator != "controller":
                dcs, regs = used.setdefault(tgt.operator, (set(), set()))
                dcs.update(data)
                regs.add(tgt.region)
    for name, (dcs, regs) in sorted(used.items()):
        p = dep.processors[name]
        expires = _date(p.dpa_expires)
        if p.dpa_signed is None or expires is None:
            out.append(Finding("violation", "dpa", name, "no DPA on file (GDPR Art. 28(3))"))
            continue
        if expires < today:
            out.append(Finding("violation", "dpa", name, f"DPA expired on {expires}"))
        elif (expires - today).days <= _EXPIRY_WARN_DAYS:
            out.append(Finding("warning", "dpa", name, f"DPA expires on {expires}"))
        if dcs - set(p.dpa_scope):
            out.append(Finding("violation", "dpa", name,
                               f"processes {', '.join(sorted(dcs - set(p.dpa_scope)))} outside "
                               "the DPA's scope"))  # fmt: skip
        if regs - set(p.dpa_regions):
            out.append(Finding("violation", "dpa", name,
                               f"runs in {', '.join(sorted(regs - set(p.dpa_regions)))} outside "
                               "the DPA's regions"))  # fmt: skip
    return out


def _dpia_findings(dep: Deployment, config: Any, policy: Any) -> list[Finding]:
    out: list[Finding] = []
    by_name = {c.name: c for c in dep.components}
    covered: set[str] = set()
    for rec in dep.dpias:
        act = str(rec.get("activity", "?"))
        comps = [by_name[n] for n in rec.get("components") or [] if n in by_name]
        covered.update(c.name for c in comps)
        if not rec.get("risks"):
            out.append(Finding("violation", "dpia", act, "no risks assessed (GDPR Art. 35(7)(c))"))
        m = rec.get("mitigations") or {}
        excluded = set(m.get("excluded_regions") or ())
        for c in comps:
            if c.region in excluded:
                out.append(Finding("violation", "dpia", act,
                                   f"{c.name} runs in excluded region {c.region}"))  # fmt: skip
        if m.get("consent_rule"):
            for c in comps:
                if "recording" in c.stores and not c.consent_gated:
                    out.append(Finding("violation", "dpia", act,
                                       f"{c.name} records without the consent gate"))  # fmt: skip
            p = config.privacy
            if p.record_calls:
                from callward.privacy.consent import BUILTIN_CONSENT_RULES

                for j in {p.recording_jurisdiction, *p.tenant_recording_jurisdictions.values()}:
                    if j not in BUILTIN_CONSENT_RULES:
                        out.append(Finding("violation", "dpia", act,
                                           f"recording under {j!r}: no consent rule"))  # fmt: skip
        for dc, days in (m.get("max_retention_days") or {}).items():
            for tenant in ["", *policy.tenants]:
                try:
                    sched = policy.schedule(tenant, str(dc))
                except CallwardError as exc:
                    out.append(Finding("violation", "dpia", act, str(exc)))
                    break
                if sched.purge_at > float(days):
                    out.append(Finding(
                        "violation", "dpia", act,
                        f"{dc} kept {sched.purge_at:g} d for tenant {tenant or '(default)'}, "
                        f"DPIA allows {float(days):g} d"))  # fmt: skip
    for c in dep.components:
        if c.operator != "controller" and c.name not in covered:
            msg = f"processor {c.operator} operates it; no DPIA record covers it"
            out.append(Finding("warning", "dpia", c.name, msg))
    return out


def check_deployment(
    dep: Deployment, config: Any, policy: Any, today: dt.date | None = None
) -> list[Finding]:
    """All findings, violations first."""
    day = today or dt.datetime.now(dt.UTC).date()
    found = [
        Finding("violation", "transfer", f"{t.source} -> {t.target}",
                f"{', '.join(t.data)} from {t.from_country} to {t.to_country} without a "
                "safeguard (no adequacy decision, SCCs or other Art. 46 safeguard)")
        for t in transfers(dep) if t.needs_safeguard and not t.safeguard
    ]  # fmt: skip
    found += _dpa_findings(dep, day) + _dpia_findings(dep, config, policy)
    return sorted(found, key=lambda f: (f.severity != "violation", f.register, f.subject))
