"""k-anonymous aggregate exports of call quality and usage.

Each CDR becomes one contribution with three quasi-identifiers, generalised together until every
released group has at least ``k`` calls:

=========  ==========================================================================
level      time / place / number prefix of the called party
=========  ==========================================================================
0          hour, tenant region, country code + 2 digits (``+4477``)
1          day, tenant region, country code (``+44``)
2          ISO week, tenant region, first digit (``+4``)
3          ISO week, all regions, no prefix
=========  ==========================================================================

The lowest level at which at least ``min_share`` of calls fall in groups of size >= k is used;
groups still smaller than k at that level are suppressed (counted, never released). Released
values: call count, answered share, total minutes, mean MOS, loss per mille.

Residual risks (docs/privacy.md): a group of k calls between the same two parties still says
that those parties talked in that week; differencing two exports over overlapping periods can
isolate a small group (exports are audited, with their parameters, so this is detectable);
k says nothing about sensitive homogeneity (all k calls may go to one clinic's prefix).
Re-identification needs the identifiers, which the export never contains: only an audited
``callward cdr query`` maps back to subjects.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from callward.errors import PolicyError

__all__ = ["AggregateRow", "k_anonymous"]

_CC3 = ("1", "7")  # NANP and +7 use one-digit country codes; others handled by length 2


@dataclass(frozen=True, slots=True)
class AggregateRow:
    period: str
    region: str
    prefix: str
    calls: int
    answered_share: float
    minutes: float
    mean_mos: float | None
    loss_per_mille: float


def _prefix(number: str, level: int) -> str:
    digits = "".join(c for c in number if c.isdigit())
    if not number.lstrip("<").lower().replace("tel:", "").replace("sip:", "").startswith("+"):
        return "*"
    if not digits:
        return "*"
    cc = 1 if digits[0] in _CC3 else 2
    return {0: "+" + digits[: cc + 2], 1: "+" + digits[:cc], 2: "+" + digits[:1]}.get(level, "*")


def _period(ts: float, level: int) -> str:
    t = dt.datetime.fromtimestamp(ts, dt.UTC)
    if level == 0:
        return t.strftime("%Y-%m-%dT%H")
    if level == 1:
        return t.strftime("%Y-%m-%d")
    iso = t.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def k_anonymous(
    cdrs: Iterable[Any],
    k: int,
    regions: Mapping[str, str] | None = None,
    min_share: float = 0.9,
) -> tuple[list[AggregateRow], dict[str, Any]]:
    """(released rows, report: level used, calls, suppressed calls and groups)."""
    if k < 2 or k > 10_000:
        raise PolicyError("k-anonymity: k must be between 2 and 10000")
    regions = regions or {}
    calls = list(cdrs)
    level, groups = 3, {}
    for lv in range(4):
        groups = _group(calls, lv, regions)
        ok = sum(len(g) for g in groups.values() if len(g) >= k)
        if not calls or ok >= min_share * len(calls):
            level = lv
            break
    rows: list[AggregateRow] = []
    suppressed = 0
    small = 0
    for (period, region, prefix), members in sorted(groups.items()):
        if len(members) < k:
            suppressed += len(members)
            small += 1
            continue
        answered = [c for c in members if c.answer_ts]
        secs = sum(max(0.0, (c.end_ts or c.answer_ts) - c.answer_ts) for c in answered)
        mos = [c.mos_min for c in members if c.mos_min is not None]
        pk = sum(c.packets for c in members)
        lost = sum(c.lost for c in members)
        rows.append(AggregateRow(
            period, region, prefix, len(members), round(len(answered) / len(members), 3),
            round(secs / 60, 1), round(sum(mos) / len(mos), 2) if mos else None,
            round(1000 * lost / (pk + lost), 2) if pk + lost else 0.0,
        ))  # fmt: skip
    report = {"k": k, "level": level, "calls": len(calls), "released_groups": len(rows),
              "suppressed_calls": suppressed, "suppressed_groups": small}  # fmt: skip
    return rows, report


def _group(
    calls: list[Any], level: int, regions: Mapping[str, str]
) -> dict[tuple[str, str, str], list[Any]]:
    groups: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for c in calls:
        region = "*" if level >= 3 else regions.get(c.tenant, c.tenant)
        groups[(_period(c.start_ts, level), region, _prefix(c.callee, level))].append(c)
    return groups
