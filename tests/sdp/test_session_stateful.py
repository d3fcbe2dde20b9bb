"""Two OfferAnswerSessions talking to each other under random re-offers, holds, handovers,
refusals and glare (hypothesis stateful). After every step both sides must agree on the
session, and what each side ever sent must be consistent with RFC 3264 §8 versioning."""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from callward.errors import SdpError
from callward.sdp import (
    Direction,
    LocalMedia,
    OAState,
    OfferAnswerSession,
    SessionDescription,
)

EXAMPLES = int(os.environ.get("CALLWARD_FUZZ_EXAMPLES", "150"))


def _body(sd: SessionDescription) -> str:
    return str(sd).split("\r\n", 2)[2]  # everything after v= and o=


class TwoPhones(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.a = OfferAnswerSession(LocalMedia("192.0.2.1", (40000,), session_id="11"))
        self.b = OfferAnswerSession(LocalMedia("192.0.2.2", (50000,), session_id="22"))
        self.sent: dict[str, list[SessionDescription]] = {"a": [], "b": []}
        self.hold = {"a": False, "b": False}
        offer = self.a.create_offer()
        self._record("a", offer)
        self._record("b", self.b.receive_offer(offer))
        self.a.receive_answer(self.b.local_sdp)  # type: ignore[arg-type]

    def _record(self, who: str, sd: SessionDescription) -> None:
        self.sent[who].append(sd)

    def _pair(self, who: str) -> tuple[OfferAnswerSession, OfferAnswerSession, str]:
        return (self.a, self.b, "b") if who == "a" else (self.b, self.a, "a")

    @rule(who=st.sampled_from("ab"), hold=st.booleans(), move=st.booleans())
    def reoffer(self, who: str, hold: bool, move: bool) -> None:
        me, peer, other = self._pair(who)
        local = None
        if move:  # handover: new address and port
            n = len(self.sent[who]) % 200
            local = LocalMedia(f"198.51.100.{n + 1}", (42000 + 2 * n,))
        offer = me.create_offer(local=local, hold=hold)
        self._record(who, offer)
        answer = peer.receive_offer(offer)
        self._record(other, answer)
        me.receive_answer(answer)
        self.hold[who] = hold

    @rule(who=st.sampled_from("ab"))
    def refused(self, who: str) -> None:
        me, _, _ = self._pair(who)
        before = (me.local_sdp, me.streams, me.local_hold)
        self._record(who, me.create_offer(hold=not me.local_hold))
        me.rollback()  # e.g. 488 from the peer
        assert (me.local_sdp, me.streams, me.local_hold) == before

    @rule()
    def glare(self) -> None:
        offer_a = self.a.create_offer(hold=not self.a.local_hold)
        offer_b = self.b.create_offer(hold=not self.b.local_hold)
        self._record("a", offer_a)
        self._record("b", offer_b)
        for me, offer in ((self.a, offer_b), (self.b, offer_a)):
            try:
                me.receive_offer(offer)
            except SdpError as exc:
                assert exc.status_hint == 491
            else:
                raise AssertionError("glare not detected")
        self.a.rollback()
        self.b.rollback()

    @invariant()
    def both_sides_agree(self) -> None:
        assert self.a.state is OAState.STABLE and self.b.state is OAState.STABLE
        (sa,) = self.a.streams
        (sb,) = self.b.streams
        assert sa.codec.key == sb.codec.key
        assert sa.local_crypto == sb.remote_crypto and sa.remote_crypto == sb.local_crypto
        assert self.a.local_sdp is not None and self.b.local_sdp is not None
        assert (sa.remote_address, sa.remote_port) == (
            self.b.local_sdp.connection.address if self.b.local_sdp.connection else "",
            self.b.local_sdp.media[0].port,
        )
        # What one side sends, the other receives (RFC 3264 §6.1 direction mirroring).
        assert sa.direction.sends == sb.direction.receives
        assert sb.direction.sends == sa.direction.receives
        if self.a.local_hold or self.b.local_hold:
            assert sa.direction is not Direction.SENDRECV

    @invariant()
    def versions_are_honest(self) -> None:
        for sdps in self.sent.values():
            assert len({sd.origin.identity() for sd in sdps}) == 1  # §8: o= identity fixed
            by_version: dict[int, str] = {}
            for sd in sdps:
                body = _body(sd)
                v = sd.origin.session_version
                assert by_version.setdefault(v, body) == body  # same version => same SDP


TwoPhones.TestCase.settings = settings(
    max_examples=max(20, EXAMPLES // 5), stateful_step_count=12, deadline=None
)
test_two_phones = TwoPhones.TestCase
