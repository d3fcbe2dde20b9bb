"""Assemble one CDR per call from the events of many edges and media relays.

Properties that make this safe at carrier scale (and that tests check with hypothesis):

* **Idempotent** — an event is identified by (call_id, leg, node, seq); a redelivered copy (NATS
  redelivery, a node replaying after restart) is ignored.
* **Order-independent** — :meth:`CallAssembler.build` is a pure function of the *set* of events
  of a call: every choice (which end wins, which codec came first) sorts by (ts, node, seq, kind)
  instead of arrival order. Two distinct events sharing one key are a producer bug; the
  canonically smallest wins deterministically and the CDR is flagged.
* **Consistent** — legs reported by several nodes (edge and relay both see a leg) are compared;
  disagreements become ``flags`` on the CDR. :class:`Reconciler` adds a timeout: a call whose
  legs have not all ended ``timeout_s`` after its last event is written flagged incomplete.

Final status selection follows RFC 3261 §16.7 (a 2xx wins; otherwise 6xx beats 4xx/5xx;
lowest code within the chosen class).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from callward.events import (
    CallAnswered,
    CallEnded,
    CallStarted,
    Event,
    MediaStats,
    event_to_dict,
)
from callward.records.schema import Cdr, Leg, Lineage

__all__ = ["EVENT_FORMAT", "CallAssembler", "CallEvent", "Reconciler", "event_key"]

EVENT_FORMAT = 1  # version of callward.events' wire format consumed here (lineage)
CallEvent = CallStarted | CallAnswered | CallEnded | MediaStats
_CALL_EVENTS = (CallStarted, CallAnswered, CallEnded, MediaStats)
_END_TOLERANCE_S = 2.0  # nodes see a BYE at slightly different times; beyond this they disagree


def event_key(ev: CallEvent) -> tuple[str, str, int]:
    """(leg, node, seq) — with the call_id this is the dedup identity of an event."""
    return (ev.leg, ev.node, ev.seq)


def _order(ev: CallEvent) -> tuple[float, str, int, str, str]:
    return (ev.ts, ev.node, ev.seq, ev.kind, _canon(ev))


def _head(ev: CallEvent) -> tuple[float, str, int, str]:
    return (ev.ts, ev.node, ev.seq, ev.kind)


def _in_order(evs: Iterable[CallEvent]) -> list[CallEvent]:
    """Sorted by :func:`_order`; the canonical JSON tie-breaker is only computed when two
    events share (ts, node, seq, kind), a producer reusing a sequence number (it costs more
    than the rest of a CDR's assembly)."""
    out = sorted(evs, key=_head)
    if any(_head(a) == _head(b) for a, b in itertools.pairwise(out)):
        out.sort(key=_order)
    return out


def _canon(ev: CallEvent) -> str:
    return json.dumps(event_to_dict(ev), sort_keys=True, default=str)


def _codec(summary: str) -> str:
    return summary.split()[0] if summary.strip() else ""


def _add_codec(codecs: list[str], c: str) -> None:
    """One codec named twice (the edge's rtpmap "PCMU/8000", a relay's "PCMU") is one."""
    if c and c.split("/")[0].lower() not in {k.split("/")[0].lower() for k in codecs}:
        codecs.append(c)


def _select_status(statuses: list[int]) -> int:
    """RFC 3261 §16.7 step 6: best final response; 6xx preferred over 4xx/5xx."""
    ok = [s for s in statuses if 200 <= s < 300]
    if ok:
        return min(ok)
    six = [s for s in statuses if s >= 600]
    return min(six) if six else min(statuses)


def _disposition(answered: bool, status: int | None, ended: bool) -> str:
    if answered:
        return "answered"
    if status is None or not ended:
        return "incomplete"
    if status == 487:
        return "cancelled"
    if status in (486, 600):
        return "busy"
    if status in (408, 480):
        return "no_answer"
    if 400 <= status < 500 or status >= 600:
        return "rejected"
    return "failed"


@dataclass
class _Call:
    events: dict[tuple[str, str, int], CallEvent] = field(default_factory=dict)
    conflicts: int = 0
    last_change: float = 0.0
    changes: int = 0
    emitted: int = -1
    due_at: float | None = None  # the Reconciler's one live deadline for this call


@dataclass
class CallAssembler:
    """Holds the events of calls in flight; builds a CDR from a call's event set."""

    _calls: dict[str, _Call] = field(default_factory=dict)

    def add(self, event: Event, now: float = 0.0) -> bool:
        """Add an event; False for a duplicate or a non-call event (registrations, alerts)."""
        if not isinstance(event, _CALL_EVENTS) or not event.call_id:
            return False
        call = self._calls.setdefault(event.call_id, _Call())
        key = event_key(event)
        old = call.events.get(key)
        if old is not None:
            if old == event:
                return False
            call.conflicts += 1
            if _order(event) >= _order(old):
                return False
        call.events[key] = event
        call.last_change = now
        call.changes += 1
        return True

    def add_many(self, events: Iterable[Event], now: float = 0.0) -> int:
        return sum(self.add(e, now) for e in events)

    def call_ids(self) -> list[str]:
        return list(self._calls)

    def events_of(self, call_id: str) -> list[CallEvent]:
        return _in_order(self._calls[call_id].events.values())

    def forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def is_complete(self, call_id: str) -> bool:
        """Every signaling leg that appeared has ended, and the call has a start. Legs known
        only from MediaStats (a relay naming its media legs differently) never block it."""
        evs = self._calls[call_id].events.values()
        legs = {e.leg for e in evs if not isinstance(e, MediaStats)}
        ended = {e.leg for e in evs if isinstance(e, CallEnded)}
        started = any(isinstance(e, CallStarted) for e in evs)
        return started and legs <= ended

    def build(self, call_id: str) -> Cdr:
        call = self._calls[call_id]
        evs = _in_order(call.events.values())
        flags: set[str] = set()
        if call.conflicts:
            flags.add("conflicting-duplicate")
        by_leg: dict[str, list[CallEvent]] = {}
        for e in evs:
            by_leg.setdefault(e.leg, []).append(e)
        legs = tuple(_build_leg(name, by_leg[name], flags) for name in sorted(by_leg))

        starts = [e for e in evs if isinstance(e, CallStarted)]
        if not starts:
            flags.add("missing-start")
        a_starts = [e for e in starts if e.leg == "a"] or starts
        first = a_starts[0] if a_starts else evs[0]
        tenant = first.tenant
        caller = a_starts[0].caller if a_starts else ""
        callee = a_starts[0].callee if a_starts else ""
        if len({(e.caller, e.callee) for e in a_starts}) > 1:
            flags.add("legs-disagree:parties")
        if len({e.tenant for e in evs}) > 1:
            flags.add("legs-disagree:tenant")
        answer_ts = min((lg.answered for lg in legs if lg.answered is not None), default=None)
        for s in starts:
            if s.leg != "a" and s.callee != callee and answer_ts is not None and s.ts > answer_ts:
                flags.add("transferred")
        start_ts = min((lg.started for lg in legs if lg.started is not None), default=evs[0].ts)
        signaling = {e.leg for e in evs if not isinstance(e, MediaStats)}
        all_ended = all(lg.ended is not None for lg in legs if lg.leg in signaling)
        end_ts = max((lg.ended for lg in legs if lg.ended is not None), default=None)
        if not all_ended:
            end_ts = None
        statuses = [lg.status for lg in legs if lg.status is not None]
        status = _select_status(statuses) if statuses else 0
        if answer_ts is not None and not 200 <= status < 300:
            status = 200  # an answered leg ended later by BYE still makes the call answered
        disposition = _disposition(answer_ts is not None, status or None, all_ended)
        codecs: list[str] = []
        for lg in legs:
            for c in lg.codecs:
                _add_codec(codecs, c)
        moses = [lg.mos for lg in legs if lg.mos is not None]
        return Cdr(
            call_id=call_id,
            tenant=tenant,
            caller=caller,
            callee=callee,
            start_ts=start_ts,
            answer_ts=answer_ts,
            end_ts=end_ts,
            status=status,
            disposition=disposition,
            legs=legs,
            codecs=tuple(codecs),
            packets=sum(lg.packets for lg in legs),
            lost=sum(lg.lost for lg in legs),
            jitter_ms=max((lg.jitter_ms for lg in legs), default=0.0),
            mos_min=min(moses) if moses else None,
            flags=tuple(sorted(flags)),
            lineage=Lineage(
                nodes=tuple(sorted({e.node for e in evs})),
                events=len(evs),
                source_versions=(EVENT_FORMAT,),
                transformations=("assembled:v2",),
            ),
        )


def _build_leg(name: str, evs: list[CallEvent], flags: set[str]) -> Leg:
    starts = [e for e in evs if isinstance(e, CallStarted)]
    answers = [e for e in evs if isinstance(e, CallAnswered)]
    ends = [e for e in evs if isinstance(e, CallEnded)]
    stats = [e for e in evs if isinstance(e, MediaStats)]
    codecs: list[str] = []
    for e in evs:
        c = e.codec if isinstance(e, MediaStats) else _codec(getattr(e, "sdp_summary", ""))
        _add_codec(codecs, c)
    per_node: dict[str, int] = {}
    for a in answers:
        per_node[a.node] = per_node.get(a.node, 0) + 1
    status = reason = None
    if ends:
        status, reason = ends[0].status, ends[0].reason
        if len({e.status for e in ends}) > 1:
            flags.add(f"legs-disagree:status:{name}")
        if ends[-1].ts - ends[0].ts > _END_TOLERANCE_S:
            flags.add(f"legs-disagree:end:{name}")
    latest: dict[int, MediaStats] = {}
    for s in stats:  # cumulative counters: the latest report per SSRC wins (RFC 3550 §6.4.1)
        latest[s.ssrc] = s
    moses = [s.mos for s in latest.values() if s.mos is not None]
    return Leg(
        leg=name,
        nodes=tuple(sorted({e.node for e in evs})),
        started=starts[0].ts if starts else None,
        answered=answers[0].ts if answers else None,
        ended=ends[0].ts if ends else None,
        status=status,
        reason=reason or "",
        codecs=tuple(codecs),
        reinvites=max(per_node.values(), default=1) - 1,
        packets=sum(s.packets for s in latest.values()),
        lost=sum(s.lost for s in latest.values()),
        jitter_ms=max((s.jitter_ms for s in latest.values()), default=0.0),
        mos=min(moses) if moses else None,
    )


@dataclass
class Reconciler:
    """Decides when a call's CDR is written, using an injected clock.

    * complete (every leg ended) and quiet for ``grace_s`` — late MediaStats usually follow the
      BYE by one RTCP interval (RFC 3550 §6.2), so we wait a little;
    * not complete ``timeout_s`` after the last event — written flagged ``incomplete:timeout``
      so a lost CallEnded (a crashed node) never means a lost CDR.

    A late event for an already written call rebuilds and re-emits it (stores upsert by call_id);
    calls are forgotten ``forget_s`` after they were last written, or earlier when more than
    ``held_max`` written calls are held (oldest written first), so memory stays bounded at any
    call rate.

    Cost: each call has one live deadline in a heap (grace, timeout or forget, from its last
    change), so :meth:`due` only looks at calls whose deadline passed: O(log n) per event, not
    a scan of every call held (which made an edge's CPU per call grow with its call rate).
    """

    clock: Callable[[], float]
    timeout_s: float = 3600.0
    grace_s: float = 5.0
    forget_s: float = 600.0
    assembler: CallAssembler = field(default_factory=CallAssembler)
    forgotten: list[str] = field(default_factory=list)  # drained by journal-backed consumers
    closed_max: int = 200_000
    held_max: int = 20_000
    late_events: int = 0
    _closed: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _heap: list[tuple[float, int, str]] = field(default_factory=list)
    _seq: int = 0
    _written: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def is_closed(self, call_id: str) -> bool:
        return call_id in self._closed

    def observe(self, event: Event) -> bool:
        """Add an event. Events for a call already written and forgotten are dropped (and
        counted in ``late_events``): rebuilt from a lone straggler, the CDR would overwrite the
        complete one in the store with a partial one."""
        call_id = getattr(event, "call_id", "")
        if call_id and call_id in self._closed:
            self.late_events += 1
            return False
        if not self.assembler.add(event, self.clock()):
            return False
        call = self.assembler._calls[call_id]
        self._written.pop(call_id, None)
        # earliest moment anything can happen: complete and quiet for grace_s
        self._schedule(call_id, call, call.last_change + min(self.grace_s, self.timeout_s))
        return True

    def _schedule(self, call_id: str, call: _Call, at: float) -> None:
        if call.due_at is not None and call.due_at <= at:
            return  # the earlier deadline re-evaluates the call and schedules the next
        call.due_at = at
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, call_id))

    def _forget(self, call_id: str) -> None:
        self.assembler.forget(call_id)
        self._written.pop(call_id, None)
        self.forgotten.append(call_id)
        self._closed[call_id] = None
        if len(self._closed) > self.closed_max:
            self._closed.popitem(last=False)

    def due(self) -> list[Cdr]:
        """CDRs to write now (each call at most once per change)."""
        now = self.clock()
        out: list[Cdr] = []
        heap, calls = self._heap, self.assembler._calls
        while heap and heap[0][0] <= now:
            at, _, call_id = heapq.heappop(heap)
            call = calls.get(call_id)
            if call is None or call.due_at != at:
                continue  # forgotten, or superseded by an earlier deadline
            call.due_at = None
            quiet = now - call.last_change
            if call.emitted == call.changes:
                if quiet >= self.forget_s:
                    self._forget(call_id)
                else:
                    self._schedule(call_id, call, call.last_change + self.forget_s)
                continue
            if self.assembler.is_complete(call_id):
                if quiet >= self.grace_s:
                    out.append(self.assembler.build(call_id))
                    call.emitted = call.changes
                    self._written[call_id] = None
                    self._schedule(call_id, call, call.last_change + self.forget_s)
                else:
                    self._schedule(call_id, call, call.last_change + self.grace_s)
            elif quiet >= self.timeout_s:
                cdr = self.assembler.build(call_id)
                out.append(_flag(cdr, "incomplete:timeout"))
                call.emitted = call.changes
                self._written[call_id] = None
                self._schedule(call_id, call, call.last_change + self.forget_s)
            else:
                self._schedule(call_id, call, call.last_change + self.timeout_s)
        while len(self._written) > self.held_max:
            self._forget(next(iter(self._written)))
        return out

    def flush(self) -> list[Cdr]:
        """Everything held, as of now (shutdown): incomplete calls are flagged, not dropped."""
        out = []
        for call_id in self.assembler.call_ids():
            cdr = self.assembler.build(call_id)
            if not self.assembler.is_complete(call_id):
                cdr = _flag(cdr, "incomplete:shutdown")
            out.append(cdr)
        return out


def _flag(cdr: Cdr, flag: str) -> Cdr:
    return dataclasses.replace(cdr, flags=tuple(sorted({*cdr.flags, flag})))
