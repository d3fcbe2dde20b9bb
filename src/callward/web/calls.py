"""What the web shows of CDRs: newest-first pages, pseudonymized rows, details and quality.

Paging uses only the store protocol every CDR store implements (``query``/``count`` with a
time window; see :class:`callward.records.rows.CdrStore`), so the same code pages SQLite,
PostgreSQL or hot+cold. Stores return calls oldest first; "the newest N before a cursor" is
found by widening a time window back from the cursor until it holds N calls (then narrowing it
by bisection so a burst never makes us fetch far more than a page). The cursor is the
(start_ts, call_id) of the last row shown, which stays stable while new calls arrive (keyset
paging: an offset would shift under a live store).

Subjects are shown by keyed pseudonym (HMAC-SHA-256, :mod:`callward.privacy.pseudonym`): the
same subject gets the same pseudonym on every row, so support can follow a subject across calls
without ever seeing the number.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from callward.config import QualityConfig
from callward.errors import CallwardError, PolicyError
from callward.quality import emodel_wb
from callward.quality.alerts import dominant_cause, thresholds_for
from callward.quality.playout import codec_for
from callward.records.rows import COLUMNS, ERASED, CdrQuery
from callward.records.schema import Cdr, Leg

__all__ = [
    "MOS_BINS",
    "Page",
    "assess",
    "call_detail",
    "call_row",
    "decode_cursor",
    "encode_cursor",
    "loss_pct",
    "mos_distribution",
    "recent_calls",
]

MOS_BINS: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5)  # G.107 MOS-CQE 1..4.5
_MAX_CURSOR = 1024
_TS, _ID = COLUMNS.index("start_ts"), COLUMNS.index("call_id")


@dataclass(frozen=True, slots=True)
class Page:
    calls: list[Cdr]
    next_cursor: str | None


def encode_cursor(cdr: Cdr) -> str:
    raw = f"{cdr.start_ts!r}|{cdr.call_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[float, str]:
    """(start_ts, call_id) from a cursor; PolicyError naming what was expected."""
    bad = PolicyError("cursor: expected the next_cursor value of a previous page")
    if not text or len(text) > _MAX_CURSOR:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        ts_text, sep, call_id = raw.partition("|")
        ts = float(ts_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    if not sep or not call_id or not math.isfinite(ts):
        raise bad
    return ts, call_id


def _window_start(
    store: Any, tenant: str | None, end: float | None, ref: float, floor: float, want: int
) -> float:
    """Latest ``from`` such that [from, end) holds at least ``want`` calls (or ``floor``)."""

    def n(frm: float) -> int:
        return int(store.count(CdrQuery(tenant=tenant, start_from=frm, start_to=end)))

    span, too_few = 300.0, None
    while True:
        frm = max(floor, ref - span)
        got = n(frm)
        if got >= want or frm <= floor:
            break
        too_few, span = frm, span * 4
    if got > 2 * want:  # a burst (or a dense first window): bisect back towards ~want rows
        lo, hi = frm, too_few if too_few is not None else ref
        for _ in range(40):
            mid = (lo + hi) / 2
            m = n(mid)
            if m >= want:
                lo, got = mid, m
                if m <= 2 * want:
                    break
            else:
                hi = mid
        frm = lo
    return frm


def recent_calls(
    store: Any, *, limit: int, now: float, cursor: str | None = None, tenant: str | None = None
) -> Page:
    """The ``limit`` newest calls strictly before ``cursor`` (newest first) and the next cursor."""
    before = decode_cursor(cursor) if cursor is not None else None
    end = math.nextafter(before[0], math.inf) if before else None
    oldest = store.rows(CdrQuery(tenant=tenant, start_to=end, limit=1))
    if not oldest:
        return Page([], None)
    floor = float(oldest[0][_TS])
    ties = 0
    if before is not None:
        ties = int(store.count(CdrQuery(tenant=tenant, start_from=before[0], start_to=end)))
    ref = before[0] if before is not None else max(now, floor)
    frm = _window_start(store, tenant, end, ref, floor, limit + 1 + ties)
    # Select on raw rows and decode only the page: decoding opens sealed identifiers.
    found = store.rows(CdrQuery(tenant=tenant, start_from=frm, start_to=end))
    keyed = [((float(r[_TS]), str(r[_ID])), r) for r in found]
    if before is not None:
        keyed = [kr for kr in keyed if kr[0] < before]
    keyed.sort(key=lambda kr: kr[0], reverse=True)
    page = [store.codec.decode(r, store.name) for _, r in keyed[:limit]]
    more = len(keyed) > limit or (frm > floor and len(page) == limit)
    return Page(page, encode_cursor(page[-1]) if more and page else None)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def loss_pct(packets: int, lost: int) -> float:
    """Lost / expected in percent (RFC 3550 §6.4.1 fraction lost, over the whole call)."""
    expected = packets + max(lost, 0)
    return round(100.0 * max(lost, 0) / expected, 3) if expected > 0 else 0.0


def party(identifier: str, pseudonym: Callable[[str], str], reveal: bool) -> str:
    """What a reader sees of a caller/callee: a pseudonym unless revealing is allowed."""
    if not identifier or identifier == ERASED:
        return identifier
    if reveal:
        return identifier
    try:
        return "pn:" + pseudonym(identifier)
    except CallwardError:
        return "pn:unlinkable"  # an identifier that does not normalize is still not shown


def call_row(cdr: Cdr, pseudonym: Callable[[str], str], reveal: bool = False) -> dict[str, Any]:
    return {
        "call_id": cdr.call_id,
        "tenant": cdr.tenant,
        "caller": party(cdr.caller, pseudonym, reveal),
        "callee": party(cdr.callee, pseudonym, reveal),
        "start_ts": cdr.start_ts,
        "start_utc": _iso(cdr.start_ts),
        "duration_s": round(cdr.duration_s, 3),
        "disposition": cdr.disposition,
        "status": cdr.status,
        "codecs": list(cdr.codecs),
        "packets": cdr.packets,
        "lost": cdr.lost,
        "loss_pct": loss_pct(cdr.packets, cdr.lost),
        "jitter_ms": round(cdr.jitter_ms, 3),
        "mos": cdr.mos_min,
        "flags": list(cdr.flags),
    }


def _leg(lg: Leg) -> dict[str, Any]:
    return {
        "leg": lg.leg,
        "nodes": list(lg.nodes),
        "started_utc": _iso(lg.started),
        "answered_utc": _iso(lg.answered),
        "ended_utc": _iso(lg.ended),
        "status": lg.status,
        "reason": lg.reason,
        "codecs": list(lg.codecs),
        "reinvites": lg.reinvites,
        "packets": lg.packets,
        "lost": lg.lost,
        "loss_pct": loss_pct(lg.packets, lg.lost),
        "jitter_ms": round(lg.jitter_ms, 3),
        "mos": lg.mos,
    }


def call_detail(
    cdr: Cdr, pseudonym: Callable[[str], str], cfg: QualityConfig, reveal: bool = False
) -> dict[str, Any]:
    out = call_row(cdr, pseudonym, reveal)
    out.update(
        answer_utc=_iso(cdr.answer_ts),
        end_utc=_iso(cdr.end_ts),
        legs=[_leg(lg) for lg in cdr.legs],
        lineage={
            "nodes": list(cdr.lineage.nodes),
            "events": cdr.lineage.events,
            "source_versions": list(cdr.lineage.source_versions),
            "transformations": [*cdr.lineage.transformations, "served:web"],
        },
        quality=assess(cdr, cfg),
        revealed=reveal,
    )
    return out


def _cause(cdr: Cdr, cfg: QualityConfig) -> str:
    """The G.107 term that cost the most R, judged like the live QualityMonitor does: network
    loss into Ie,eff, jitter as the delay of a ~2x jitter playout buffer into Id."""
    key = None
    for name in cdr.codecs:
        key = codec_for(-1, name.split("/", 1)[0])
        if key:
            break
    if key is None:
        return "unknown"
    loss = min(loss_pct(cdr.packets, cdr.lost), 100.0)
    delay = min(cfg.base_delay_ms + emodel_wb.frame_ms(key) + 2 * max(cdr.jitter_ms, 0.0), 10_000.0)
    r = emodel_wb.mos_for(key, loss=loss, delay_ms=delay)
    terms = {"network": {"mos": r.mos, "ie_eff": r.ie_eff, "id": r.id}}
    return dominant_cause(terms, "network", emodel_wb.codec_ie(key))


def assess(cdr: Cdr, cfg: QualityConfig) -> dict[str, Any]:
    """Level (None/warn/critical) of the call's worst MOS against its tenant's thresholds."""
    th = thresholds_for(cfg, cdr.tenant)
    level = th.level(cdr.mos_min) if cdr.mos_min is not None else None
    return {
        "level": level,
        "cause": _cause(cdr, cfg) if level else None,
        "mos_warn": th.warn,
        "mos_critical": th.critical,
    }


def mos_distribution(values: list[float]) -> dict[str, Any]:
    """Histogram over MOS_BINS (last bin closed), count, mean and nearest-rank percentiles."""
    counts = [0] * (len(MOS_BINS) - 1)
    for v in values:
        i = min(max(int((v - MOS_BINS[0]) / 0.5), 0), len(counts) - 1)
        counts[i] += 1
    ordered = sorted(values)

    def pct(p: float) -> float | None:
        if not ordered:
            return None
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {
        "bins": [
            {"from": lo, "to": hi, "count": n}
            for lo, hi, n in zip(MOS_BINS[:-1], MOS_BINS[1:], counts, strict=True)
        ],
        "count": len(values),
        "mean": round(sum(values) / len(values), 3) if values else None,
        "p5": pct(5),
        "median": pct(50),
    }
