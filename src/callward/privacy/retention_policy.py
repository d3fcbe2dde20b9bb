"""Retention as policy: rule sets per jurisdiction and data class, read from YAML, failing closed.

A rule set (``privacy/rulesets/*.yaml`` ships GDPR, CCPA and a worked national telecom example,
LOCAL-TEL) gives, per *data class* (what callward writes: CDRs, logs, quality captures, HEP
archives, location bindings, subscriber rows, recordings, consent records), the age in days at
which data moves through four stages::

    full --redact_after--> redacted --aggregate_after--> aggregated --purge_after--> purged

A stage a rule leaves out is skipped. ``purge_after`` is mandatory: nothing is kept forever by
omission. ``keep_min_days`` is a legal duty to keep data in full (GDPR Art. 6(1)(c),
Art. 17(3)(b)); it overrides every earlier deadline of any jurisdiction and the schedule names
the conflict.

Failing closed: an unknown jurisdiction (``GDRP``), an unknown data class, a rule set that does
not cover a data class a tenant's data falls in, or a malformed rule is a :class:`ConfigError`
(one line; the CLI exits 2) — never "keep forever".

When a tenant falls under several jurisdictions each stage happens at the earliest deadline any
of them sets for that stage *or a later one* (a rule that purges at 400 d also requires the data
to be redacted by 400 d), but never before the latest ``keep_min_days``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import yaml

from callward.errors import ConfigError

__all__ = [
    "BUILTIN_RULESETS",
    "DATA_CLASSES",
    "RetentionPolicy",
    "RuleSet",
    "Schedule",
    "Stage",
    "StageRule",
    "load_policy",
    "load_ruleset",
]

DAY = 86400.0
RULESET_DIR = Path(__file__).parent / "rulesets"
BUILTIN_RULESETS = ("GDPR", "CCPA", "LOCAL-TEL")
_MAX_RULESET_BYTES = 256 * 1024

#: Every kind of data callward writes, and where it lives (docs/privacy.md has the table).
DATA_CLASSES: Mapping[str, str] = {
    "cdr": "call detail records (hot SQLite/PostgreSQL, cold Parquet)",
    "log": "log files under the logs directory",
    "quality_capture": "pcap/pcapng captures kept for quality analysis",
    "hep_archive": "HEPv3 signalling archives",
    "location": "registrar location bindings (memory or Redis)",
    "subscriber": "subscriber database rows (username = MSISDN/AOR, HA1 hashes)",
    "recording": "call recordings made under consent",
    "consent": "consent registry entries with evidence",
    "phone_state": "phone API presence entries and daily quota counters (callward web)",
    "web_session": "dashboard sessions (callward web)",
}


class Stage(IntEnum):
    FULL = 0
    REDACTED = 1
    AGGREGATED = 2
    PURGED = 3


_STAGE_KEYS = {
    Stage.REDACTED: "redact_after",
    Stage.AGGREGATED: "aggregate_after",
    Stage.PURGED: "purge_after",
}


@dataclass(frozen=True, slots=True)
class StageRule:
    jurisdiction: str
    data_class: str
    redact_after: float | None
    aggregate_after: float | None
    purge_after: float
    keep_min_days: float = 0.0
    basis: str = ""

    def __post_init__(self) -> None:
        where = f"retention rule {self.jurisdiction}/{self.data_class}"
        if self.data_class not in DATA_CLASSES:
            raise ConfigError(
                f"{where}: unknown data class; expected one of {', '.join(DATA_CLASSES)}"
            )
        seq = [
            d for d in (self.redact_after, self.aggregate_after, self.purge_after) if d is not None
        ]
        if any(not math.isfinite(d) or d < 0 for d in seq) or self.keep_min_days < 0:
            raise ConfigError(f"{where}: periods must be finite days >= 0")
        if seq != sorted(seq):
            raise ConfigError(f"{where}: need redact_after <= aggregate_after <= purge_after")
        if self.keep_min_days > self.purge_after:
            raise ConfigError(f"{where}: keep_min_days exceeds purge_after")
        if not self.basis.strip():
            raise ConfigError(f"{where}: state the legal basis (basis:)")

    def deadline(self, stage: Stage) -> float:
        """Days after which this rule wants data at ``stage`` *or later*."""
        for s in Stage:
            if s >= stage and s is not Stage.FULL:
                d = getattr(self, _STAGE_KEYS[s])
                if d is not None:
                    return float(d)
        return self.purge_after


@dataclass(frozen=True)
class RuleSet:
    jurisdiction: str
    title: str
    rules: Mapping[str, StageRule]
    source: str


def _days(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number of days, got {str(value)[:40]!r}")
    return float(value)


def _parse_ruleset(data: Any, source: str) -> RuleSet:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with jurisdiction and rules")
    unknown = set(data) - {"jurisdiction", "title", "rules"}
    if unknown:
        raise ConfigError(f"{source}: unknown key {sorted(unknown)[0]!r}")
    jur = data.get("jurisdiction")
    if not isinstance(jur, str) or not jur.strip() or len(jur) > 64:
        raise ConfigError(f"{source}: jurisdiction: expected a short name such as GDPR")
    rules_in = data.get("rules")
    if not isinstance(rules_in, dict) or not rules_in:
        raise ConfigError(f"{source}: rules: expected a mapping of data class -> stages")
    rules: dict[str, StageRule] = {}
    keys = {"redact_after", "aggregate_after", "purge_after", "keep_min_days", "basis"}
    for dc, body in rules_in.items():
        where = f"{source}: {jur}/{dc}"
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: expected a mapping of stage periods")
        bad = set(body) - keys
        if bad:
            raise ConfigError(f"{where}: unknown key {sorted(bad)[0]!r}; expected {sorted(keys)}")
        purge = _days(body.get("purge_after"), f"{where}.purge_after")
        if purge is None:
            raise ConfigError(f"{where}: purge_after is required (nothing is kept forever)")
        rules[str(dc)] = StageRule(
            jur, str(dc), _days(body.get("redact_after"), f"{where}.redact_after"),
            _days(body.get("aggregate_after"), f"{where}.aggregate_after"), purge,
            _days(body.get("keep_min_days"), f"{where}.keep_min_days") or 0.0,
            str(body.get("basis") or ""),
        )  # fmt: skip
    return RuleSet(jur, str(data.get("title") or jur), rules, source)


def load_ruleset(source: str | Path) -> RuleSet:
    """A rule set from ``builtin:NAME`` (GDPR, CCPA, LOCAL-TEL) or a YAML file path."""
    text_source = str(source)
    if text_source.startswith("builtin:"):
        name = text_source[len("builtin:") :]
        if name not in BUILTIN_RULESETS:
            raise ConfigError(
                f"rule set {text_source!r}: unknown; built-in are {', '.join(BUILTIN_RULESETS)}"
            )
        path = RULESET_DIR / f"{name.lower()}.yaml"
    else:
        path = Path(text_source)
    return _parse_ruleset(read_yaml(path, "rule set", _MAX_RULESET_BYTES), text_source)


def read_yaml(path: Path, what: str, max_bytes: int) -> Any:
    """A bounded YAML file read for the privacy registers; one-line ConfigError on failure."""
    try:
        if path.stat().st_size > max_bytes:
            raise ConfigError(f"{path}: {what} larger than {max_bytes} bytes")
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None


@dataclass(frozen=True, slots=True)
class Schedule:
    """When data of one tenant and data class reaches each stage (days of age)."""

    data_class: str
    redact_at: float
    aggregate_at: float
    purge_at: float
    basis: str
    conflicts: tuple[str, ...] = ()

    def at(self, stage: Stage) -> float:
        return {
            Stage.FULL: 0.0,
            Stage.REDACTED: self.redact_at,
            Stage.AGGREGATED: self.aggregate_at,
            Stage.PURGED: self.purge_at,
        }[stage]

    def stage_for(self, age_days: float) -> Stage:
        """The stage data of this age must be in (ages exactly at a deadline stay)."""
        for stage in (Stage.PURGED, Stage.AGGREGATED, Stage.REDACTED):
            if age_days > self.at(stage):
                return stage
        return Stage.FULL

    def first_deadline(self) -> float:
        return min(self.redact_at, self.aggregate_at, self.purge_at)


@dataclass(frozen=True)
class RetentionPolicy:
    """Rule sets plus which jurisdictions each tenant falls under (``default`` for others)."""

    rulesets: Mapping[str, RuleSet]
    tenants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default: tuple[str, ...] = ("GDPR",)

    def __post_init__(self) -> None:
        for tenant, jurs in [("(default)", self.default), *self.tenants.items()]:
            if not jurs:
                raise ConfigError(
                    f"tenant {tenant}: no jurisdiction (retention would be undefined)"
                )
            for j in jurs:
                if j not in self.rulesets:
                    known = ", ".join(sorted(self.rulesets)) or "none loaded"
                    raise ConfigError(
                        f"tenant {tenant}: unknown jurisdiction {j!r} (rule sets: {known})"
                    )

    def jurisdictions(self, tenant: str) -> tuple[str, ...]:
        return self.tenants.get(tenant, self.default)

    def schedule(self, tenant: str, data_class: str) -> Schedule:
        if data_class not in DATA_CLASSES:
            raise ConfigError(
                f"unknown data class {data_class!r}; expected one of {', '.join(DATA_CLASSES)}"
            )
        rules: list[StageRule] = []
        for j in self.jurisdictions(tenant):
            rule = self.rulesets[j].rules.get(data_class)
            if rule is None:
                raise ConfigError(
                    f"jurisdiction {j}: no retention rule for data class {data_class!r}"
                    f" (tenant {tenant or '(default)'}); refusing to keep it without one"
                )
            rules.append(rule)
        floor = max(r.keep_min_days for r in rules)
        keeper = max(rules, key=lambda r: r.keep_min_days)
        at: dict[Stage, float] = {}
        conflicts: list[str] = []
        bases: list[str] = []
        for stage in (Stage.REDACTED, Stage.AGGREGATED, Stage.PURGED):
            tightest = min(rules, key=lambda r: r.deadline(stage))
            days = tightest.deadline(stage)
            if days < floor:
                conflicts.append(
                    f"{data_class}: {tightest.jurisdiction} {stage.name.lower()} at {days:g} d"
                    f" overridden by {keeper.jurisdiction} keep_min {floor:g} d"
                    " (legal obligation to retain)"
                )
                days = floor
            at[stage] = days
            basis = f"{tightest.jurisdiction}: {tightest.basis}"
            if basis not in bases:
                bases.append(basis)
        return Schedule(
            data_class, at[Stage.REDACTED], at[Stage.AGGREGATED], at[Stage.PURGED],
            "; ".join(bases), tuple(conflicts),
        )  # fmt: skip

    def check(self, data_classes: Iterable[str] = DATA_CLASSES) -> None:
        """Raise ConfigError unless every tenant has a schedule for every data class."""
        for tenant in ["", *self.tenants]:
            for dc in data_classes:
                self.schedule(tenant, dc)


def load_policy(
    sources: Iterable[str | Path],
    tenants: Mapping[str, Iterable[str]] | None = None,
    default: Iterable[str] = ("GDPR",),
) -> RetentionPolicy:
    """Load rule sets and build a checked policy (ConfigError on any gap)."""
    sets: dict[str, RuleSet] = {}
    for src in sources:
        rs = load_ruleset(src)
        if rs.jurisdiction in sets:
            raise ConfigError(f"{src}: jurisdiction {rs.jurisdiction} defined twice")
        sets[rs.jurisdiction] = rs
    policy = RetentionPolicy(
        sets, {t: tuple(j) for t, j in (tenants or {}).items()}, tuple(default)
    )
    policy.check()
    return policy
