"""Assembly: idempotent, order-independent, consistent (hand-computed expectations)."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from callward.events import CallAnswered, CallEnded, CallStarted, MediaStats, RegistrationChanged
from callward.records.assembly import CallAssembler, Reconciler

A = "sip:+4915112345678@op.example"
B = "sip:+4930123456@op.example"


def forked_call(cid: str = "fork@x") -> list:
    """A → edge-1 forks to b1 (answers at t=3) and b2 (CANCELled, 487); relay reports media."""
    return [
        CallStarted(ts=1.0, node="edge-1", seq=1, call_id=cid, leg="a", caller=A, callee=B,
                    sdp_summary="PCMU/8000 rtp"),
        CallStarted(ts=1.1, node="edge-1", seq=2, call_id=cid, leg="b1", caller=A, callee=B),
        CallStarted(ts=1.1, node="edge-1", seq=3, call_id=cid, leg="b2", caller=A, callee=B),
        CallAnswered(ts=3.0, node="edge-1", seq=4, call_id=cid, leg="b1", sdp_summary="PCMU/8000"),
        CallAnswered(ts=3.0, node="edge-1", seq=5, call_id=cid, leg="a", sdp_summary="PCMU/8000"),
        CallEnded(ts=3.1, node="edge-1", seq=6, call_id=cid, leg="b2", status=487, reason="cancel"),
        # re-INVITE switching codec
        CallAnswered(ts=20.0, node="edge-1", seq=7, call_id=cid, leg="a", sdp_summary="opus/48000"),
        MediaStats(ts=62.0, node="relay-1", seq=1, call_id=cid, leg="a", ssrc=11,
                   codec="opus/48000", packets=2950, lost=50, jitter_ms=12.0, mos=3.9),
        MediaStats(ts=62.0, node="relay-1", seq=2, call_id=cid, leg="b1", ssrc=22,
                   codec="opus/48000", packets=2990, lost=10, jitter_ms=8.0, mos=4.2),
        CallEnded(ts=63.0, node="edge-1", seq=8, call_id=cid, leg="a", status=200, reason="bye"),
        CallEnded(ts=63.0, node="edge-1", seq=9, call_id=cid, leg="b1", status=200, reason="bye"),
        CallEnded(ts=63.4, node="relay-1", seq=3, call_id=cid, leg="a", status=200, reason="bye"),
    ]  # fmt: skip


def test_forked_call_hand_computed() -> None:
    asm = CallAssembler()
    assert asm.add_many(forked_call()) == 12
    cdr = asm.build("fork@x")
    assert cdr.caller == A and cdr.callee == B
    assert cdr.disposition == "answered" and cdr.status == 200
    # a leg ends when the first node reports it (edge at 63.0; relay's 63.4 is within tolerance)
    assert cdr.start_ts == 1.0 and cdr.answer_ts == 3.0 and cdr.end_ts == 63.0
    assert cdr.duration_s == 60.0
    assert [lg.leg for lg in cdr.legs] == ["a", "b1", "b2"]
    b2 = cdr.legs[2]
    assert b2.status == 487 and b2.answered is None
    a = cdr.legs[0]
    assert a.reinvites == 1 and a.codecs == ("PCMU/8000", "opus/48000")
    assert a.ended == 63.0 and a.nodes == ("edge-1", "relay-1")
    assert cdr.packets == 5940 and cdr.lost == 60 and cdr.jitter_ms == 12.0 and cdr.mos_min == 3.9
    assert cdr.flags == ()  # 0.4 s apart is within tolerance
    assert cdr.lineage.nodes == ("edge-1", "relay-1") and cdr.lineage.events == 12


def test_duplicates_ignored_and_non_call_events_skipped() -> None:
    asm = CallAssembler()
    evs = forked_call()
    asm.add_many(evs)
    assert asm.add_many(evs) == 0
    assert not asm.add(RegistrationChanged(ts=1.0, node="e", seq=1, aor=A))


def test_disagreeing_nodes_are_flagged() -> None:
    cid = "dis@x"
    evs = [
        CallStarted(ts=1.0, node="e1", seq=1, call_id=cid, leg="a", caller=A, callee=B),
        CallEnded(ts=5.0, node="e1", seq=2, call_id=cid, leg="a", status=486),
        CallEnded(ts=15.0, node="r1", seq=1, call_id=cid, leg="a", status=503),
    ]
    asm = CallAssembler()
    asm.add_many(evs)
    cdr = asm.build(cid)
    assert "legs-disagree:status:a" in cdr.flags and "legs-disagree:end:a" in cdr.flags
    assert cdr.disposition == "busy"  # first end reported (486)


def test_status_selection_prefers_6xx_rfc3261_16_7() -> None:
    cid = "sel@x"
    evs = [CallStarted(ts=1.0, node="e", seq=1, call_id=cid, leg="a", caller=A, callee=B)]
    for i, (leg, code) in enumerate([("a", 480), ("b1", 404), ("b2", 603)]):
        evs.append(CallEnded(ts=2.0, node="e", seq=10 + i, call_id=cid, leg=leg, status=code))
    asm = CallAssembler()
    asm.add_many(evs)
    cdr = asm.build(cid)
    assert cdr.status == 603 and cdr.disposition == "rejected"


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 12), st.sampled_from(["fork@x", "c@y"]))
def test_any_permutation_with_duplicates_gives_same_cdr(rnd: random.Random, dups: int, cid: str):
    evs = forked_call(cid)
    ref = CallAssembler()
    ref.add_many(evs)
    expected = ref.build(cid)
    shuffled = evs + [rnd.choice(evs) for _ in range(dups)]
    rnd.shuffle(shuffled)
    subset_first = shuffled[: len(shuffled) // 2]
    asm = CallAssembler()
    asm.add_many(subset_first)
    asm.build(cid)  # building mid-way must not change the final outcome
    asm.add_many(shuffled[len(shuffled) // 2 :])
    assert asm.build(cid) == expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["started", "answered", "ended", "media"]),
            st.sampled_from(["a", "b1", "b2"]),
            st.sampled_from(["e1", "e2", "r1"]),
            st.integers(0, 5),
            st.floats(0, 100, allow_nan=False),
            st.sampled_from([200, 404, 486, 487, 503, 603]),
        ),
        min_size=1,
        max_size=25,
    ),
    st.randoms(use_true_random=False),
)
def test_arbitrary_event_sets_are_order_independent(specs, rnd: random.Random) -> None:
    evs = []
    for kind, leg, node, seq, ts, status in specs:
        common = dict(ts=ts, node=node, seq=seq, call_id="p@x", leg=leg)
        if kind == "started":
            evs.append(CallStarted(**common, caller=A, callee=B))
        elif kind == "answered":
            evs.append(CallAnswered(**common, sdp_summary="PCMA/8000"))
        elif kind == "ended":
            evs.append(CallEnded(**common, status=status))
        else:
            evs.append(MediaStats(**common, ssrc=seq, packets=status, mos=status / 200))
    one, two = CallAssembler(), CallAssembler()
    one.add_many(evs)
    shuffled = evs * 2
    rnd.shuffle(shuffled)
    two.add_many(shuffled)
    assert one.build("p@x") == two.build("p@x")


def test_reconciler_grace_timeout_and_late_event() -> None:
    now = [100.0]
    rec = Reconciler(clock=lambda: now[0], timeout_s=60.0, grace_s=5.0, forget_s=30.0)
    for ev in forked_call():
        rec.observe(ev)
    half = CallStarted(ts=1.0, node="e", seq=1, call_id="open@x", leg="a", caller=A, callee=B)
    rec.observe(half)
    now[0] += 4.0
    assert rec.due() == []  # complete but within grace
    now[0] += 1.0
    (done,) = rec.due()
    assert done.call_id == "fork@x" and done.packets == 5940
    assert rec.due() == []  # not emitted twice
    late = MediaStats(ts=64.0, node="relay-1", seq=9, call_id="fork@x", leg="a", ssrc=11,
                      packets=3000, lost=50)  # fmt: skip
    rec.observe(late)  # final RTCP after BYE: cumulative counters replace the earlier report
    now[0] += 5.0
    (again,) = rec.due()
    assert again.packets == 3000 + 2990
    now[0] += 60.0
    (stale,) = rec.due()
    assert stale.call_id == "open@x" and "incomplete:timeout" in stale.flags
    assert stale.disposition == "incomplete"
    now[0] += 31.0
    rec.due()
    assert rec.assembler.call_ids() == []
    # a straggler for a forgotten call must not produce a partial CDR that would overwrite it
    assert not rec.observe(dataclasses.replace(late, seq=10))
    assert rec.due() == [] and rec.late_events == 1


def test_reconciler_holds_at_most_held_max_written_calls() -> None:
    """Memory stays bounded at any call rate: beyond held_max written calls the oldest written
    is forgotten early (its stragglers are then dropped as late, never rebuilt partially); and
    due() only looks at calls whose deadline passed (a call in progress is not rescanned)."""
    now = [0.0]
    rec = Reconciler(clock=lambda: now[0], timeout_s=60.0, grace_s=0.0, forget_s=600.0, held_max=3)
    open_call = CallStarted(ts=0.0, node="e", seq=1, call_id="open@x", leg="a", caller=A, callee=B)
    rec.observe(open_call)
    written = []
    for i in range(10):
        now[0] += 1.0
        for ev in forked_call(f"c{i}@x"):
            rec.observe(ev)
        written += rec.due()
    assert sorted(c.call_id for c in written) == sorted(f"c{i}@x" for i in range(10))
    assert sorted(rec.assembler.call_ids()) == ["c7@x", "c8@x", "c9@x", "open@x"]
    assert rec.forgotten == [f"c{i}@x" for i in range(7)]
    assert not rec.observe(dataclasses.replace(forked_call("c0@x")[-1], seq=99))
    assert rec.late_events == 1
    assert len(rec._heap) <= 4 + 10  # one live deadline per call held, plus superseded ones
    now[0] = 60.0
    (stale,) = rec.due()
    assert stale.call_id == "open@x" and "incomplete:timeout" in stale.flags


def test_blind_transfer_new_leg_to_other_party_is_flagged() -> None:
    """RFC 5589 blind transfer as the edge reports it: after A-B is answered, B REFERs and a new
    leg c towards C starts; B's leg ends. Hand-computed: answered at 2, ends when c ends (50)."""
    cid, c_party = "xfer@x", "sip:+447700900333@op.example"
    evs = [
        CallStarted(ts=0.0, node="e", seq=1, call_id=cid, leg="a", caller=A, callee=B),
        CallAnswered(ts=2.0, node="e", seq=2, call_id=cid, leg="a"),
        CallStarted(ts=10.0, node="e", seq=3, call_id=cid, leg="c", caller=A, callee=c_party),
        CallEnded(ts=10.5, node="e", seq=4, call_id=cid, leg="b", status=200, reason="refer"),
        CallAnswered(ts=12.0, node="e", seq=5, call_id=cid, leg="c"),
        CallEnded(ts=50.0, node="e", seq=6, call_id=cid, leg="c", status=200, reason="bye"),
        CallEnded(ts=50.0, node="e", seq=7, call_id=cid, leg="a", status=200, reason="bye"),
    ]
    asm = CallAssembler()
    asm.add_many(evs)
    cdr = asm.build(cid)
    assert "transferred" in cdr.flags and cdr.callee == B
    assert cdr.answer_ts == 2.0 and cdr.end_ts == 50.0 and cdr.duration_s == 48.0
    assert [lg.leg for lg in cdr.legs] == ["a", "b", "c"]
    assert "missing-start" not in cdr.flags and asm.is_complete(cid)


def test_media_only_legs_do_not_block_completion() -> None:
    """A relay may report media for a leg name the edge never signals (e.g. 'b'): the call is
    still complete when every signaled leg ended, and its media is still counted."""
    cid = "media@x"
    evs = [
        CallStarted(ts=0.0, node="e", seq=1, call_id=cid, leg="a", caller=A, callee=B),
        CallAnswered(ts=1.0, node="e", seq=2, call_id=cid, leg="a"),
        MediaStats(ts=9.0, node="r", seq=1, call_id=cid, leg="b", ssrc=5, packets=400, mos=4.0),
        CallEnded(ts=10.0, node="e", seq=3, call_id=cid, leg="a", status=200),
    ]
    asm = CallAssembler()
    asm.add_many(evs)
    assert asm.is_complete(cid)
    cdr = asm.build(cid)
    assert cdr.disposition == "answered" and cdr.end_ts == 10.0 and cdr.packets == 400
