"""One call leg's offer/answer state across the initial exchange and every re-offer.

Sans-IO and table-driven (style.md §3): the SIP layer feeds it the SDP bodies it sends and
receives; it answers, detects glare, keeps ``o=`` versions right and refuses re-offers that
break RFC 3264 §8. What changed (a handover to a new address, a codec switch, hold/resume)
is reported in :class:`SessionUpdate` so the relay can re-latch or re-key.

States::

    IDLE --send offer--> OFFER_SENT --recv answer--> STABLE
    IDLE --recv offer (we answer at once)--> STABLE
    STABLE --send offer--> OFFER_SENT;  STABLE --recv offer--> STABLE
    OFFER_SENT --recv offer--> glare: SdpError(491) (RFC 3261 §14.2), state unchanged
    OFFER_SENT --rollback (our offer got 4xx/5xx/6xx)--> previous state
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from callward.errors import LocalProtocolError, SdpError
from callward.sdp.model import Direction, MediaDescription, Origin, SessionDescription
from callward.sdp.negotiated import NegotiatedStream, negotiate
from callward.sdp.offer_answer import (
    DEFAULT_CODEC_POLICY,
    CodecPolicy,
    LocalMedia,
    create_answer,
    create_offer,
    effective_direction,
)
from callward.sdp.policy import DEFAULT_SECURITY_POLICY, SecurityPolicy

__all__ = ["OAState", "OfferAnswerSession", "SessionUpdate"]


class OAState(Enum):
    IDLE = "idle"
    OFFER_SENT = "offer-sent"
    STABLE = "stable"


class _Ev(Enum):
    SEND_OFFER = "send-offer"
    RECV_ANSWER = "recv-answer"
    RECV_OFFER = "recv-offer"


_TRANSITIONS: dict[OAState, dict[_Ev, OAState]] = {
    OAState.IDLE: {_Ev.SEND_OFFER: OAState.OFFER_SENT, _Ev.RECV_OFFER: OAState.STABLE},
    OAState.OFFER_SENT: {_Ev.RECV_ANSWER: OAState.STABLE},
    OAState.STABLE: {_Ev.SEND_OFFER: OAState.OFFER_SENT, _Ev.RECV_OFFER: OAState.STABLE},
}


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """What the last completed exchange changed, per the relay's needs."""

    initial: bool
    address_changed: bool = False
    codec_changed: bool = False
    direction_changed: bool = False
    security_changed: bool = False

    @property
    def changed(self) -> bool:
        return self.initial or any(
            (
                self.address_changed,
                self.codec_changed,
                self.direction_changed,
                self.security_changed,
            )
        )


def _conflict(message: str) -> SdpError:
    return SdpError(message, rule="RFC 3264 §8", warn_code=399, status_hint=488)


def check_reoffer(
    previous: SessionDescription,
    offer: SessionDescription,
    ours: SessionDescription | None = None,
) -> None:
    """Refuse a re-offer that RFC 3264 §8 forbids relative to the peer's previous SDP
    (``ours``: our SDP of the same exchange, whose port-0 streams count as rejected)."""
    if offer.origin.identity() != previous.origin.identity():
        raise _conflict("o= line changed other than its version")
    old_v, new_v = previous.origin.session_version, offer.origin.session_version
    if new_v < old_v:
        raise _conflict(f"o= version went back from {old_v} to {new_v}")
    if new_v == old_v and offer != previous:
        raise _conflict(f"SDP changed but o= version stayed {new_v}")
    if len(offer.media) < len(previous.media):
        raise _conflict(
            f"re-offer has {len(offer.media)} m= lines, fewer than {len(previous.media)}"
        )
    for i, (old, new) in enumerate(zip(previous.media, offer.media, strict=False)):
        # A slot's media type may change only after the stream was rejected or disabled
        # (port 0 on either side, §8.2).
        answered = ours.media[i] if ours is not None and i < len(ours.media) else None
        dead = old.rejected or (answered is not None and answered.rejected)
        if not dead and not new.rejected and old.media != new.media:
            raise _conflict(f"m= line {i + 1} changed media type {old.media} -> {new.media}")


def _same_body(a: SessionDescription, b: SessionDescription) -> bool:
    return replace(a, origin=b.origin) == b


class OfferAnswerSession:
    """Offer/answer state for one dialog (one SDP session per RFC 3264 §2)."""

    def __init__(
        self,
        local: LocalMedia,
        *,
        codecs: CodecPolicy = DEFAULT_CODEC_POLICY,
        security: SecurityPolicy = DEFAULT_SECURITY_POLICY,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.local = local
        self.codecs = codecs
        self.security = security
        self._rng = rng
        self.state = OAState.IDLE
        self.local_sdp: SessionDescription | None = None
        self.remote_sdp: SessionDescription | None = None
        self.pending_offer: SessionDescription | None = None
        self.streams: tuple[NegotiatedStream, ...] = ()
        self.local_hold = False
        self.last_update: SessionUpdate | None = None
        self._version = 1
        # Highest o= version handed out, refused offers included: a peer that saw a refused
        # v+1 must never see a different SDP under the same v+1.
        self._max_sent = 1
        # Our o= identity is fixed for the session even if our media address moves.
        self._origin = local.origin(1)
        self._rollback_to: tuple[OAState, Callable[[], None]] | None = None

    # -- transitions -------------------------------------------------------------------------
    def _move(self, ev: _Ev) -> None:
        nxt = _TRANSITIONS[self.state].get(ev)
        if nxt is None:
            raise LocalProtocolError(f"offer/answer: {ev.value} not allowed in {self.state.value}")
        self.state = nxt

    def _origin_for(self, body: SessionDescription) -> Origin:
        """Our o= line: same version when our SDP did not change, else +1 (RFC 3264 §8)."""
        version = self._version
        if self.local_sdp is not None and not _same_body(body, self.local_sdp):
            version = max(self._version, self._max_sent) + 1
        return replace(self._origin, session_version=version)

    # -- our offers -------------------------------------------------------------------------
    def create_offer(
        self, *, local: LocalMedia | None = None, hold: bool = False, legacy_hold: bool = False
    ) -> SessionDescription:
        """Offer (initial or re-offer). ``local`` moves our media (handover to a new
        address/ports); ``hold`` offers sendonly (RFC 3264 §8.4)."""
        if self.state is OAState.OFFER_SENT:
            raise LocalProtocolError("an offer is already pending (RFC 3264 §4)")
        saved = (self.local, self.local_hold)
        if local is not None:
            self.local = replace(
                local, username=self.local.username, session_id=self.local.session_id
            )
        self.local_hold = hold or legacy_hold
        direction = None
        if (hold or legacy_hold) and self.local_sdp is not None:
            # RFC 3264 §8.4: hold stops our receiving; a stream that was recvonly goes inactive.
            audio = [m for m in self.local_sdp.media if m.media == "audio" and not m.rejected]
            if audio:
                was = effective_direction(self.local_sdp, audio[0])
                direction = Direction.of(sends=was.sends, receives=False)
        fresh = create_offer(
            self.local,
            codecs=self.codecs,
            security=self.security,
            hold=hold,
            legacy_hold=legacy_hold,
            rng=self._rng,
            previous=self.local_sdp,
            direction=direction,
        )
        offer = self._keep_slots(fresh)
        offer = replace(offer, origin=self._origin_for(offer))
        prev_state = self.state

        def undo() -> None:
            self.local, self.local_hold = saved

        self._move(_Ev.SEND_OFFER)
        self._rollback_to = (prev_state, undo)
        self.pending_offer = offer
        self._max_sent = max(self._max_sent, offer.origin.session_version)
        return offer

    def _keep_slots(self, fresh: SessionDescription) -> SessionDescription:
        """RFC 3264 §8: a re-offer keeps every m= line of the session in place; streams we no
        longer use stay as port-0 lines."""
        previous = self.local_sdp
        if previous is None:
            return fresh
        audio = list(fresh.media)
        media: list[MediaDescription] = []
        for old in previous.media:
            if old.media == "audio" and not old.rejected and audio:
                media.append(audio.pop(0))
            else:
                media.append(MediaDescription(old.media, 0, old.proto, old.formats))
        media.extend(audio)
        return replace(fresh, media=tuple(media))

    def receive_answer(self, answer: SessionDescription) -> tuple[NegotiatedStream, ...]:
        """The peer's answer to our pending offer. Raises SdpError if it breaks RFC 3264 §6
        (state stays OFFER_SENT so the caller can ``rollback()`` or tear down)."""
        if self.state is not OAState.OFFER_SENT or self.pending_offer is None:
            raise LocalProtocolError("answer received but no offer is pending")
        streams = negotiate(self.pending_offer, answer, we_offered=True, codecs=self.codecs)
        self._move(_Ev.RECV_ANSWER)
        self._commit(self.pending_offer, answer, streams)
        self._version = self.pending_offer.origin.session_version
        self.pending_offer = None
        self._rollback_to = None
        return streams

    def rollback(self) -> None:
        """Our offer was refused (488, 491, ...): the session stays as it was (RFC 3261
        §14.1, RFC 3264 §8: a failed re-offer leaves the old session in place)."""
        if self.state is not OAState.OFFER_SENT or self._rollback_to is None:
            raise LocalProtocolError("no pending offer to roll back")
        state, undo = self._rollback_to
        undo()
        self.state = state
        self.pending_offer = None
        self._rollback_to = None

    # -- their offers -----------------------------------------------------------------------
    def receive_offer(
        self, offer: SessionDescription, *, hold: bool | None = None
    ) -> SessionDescription:
        """Answer an offer or re-offer. Raises SdpError: 491 on glare (our own offer is
        pending, RFC 3261 §14.2), 488 for a conflicting re-offer (RFC 3264 §8) or when
        nothing is acceptable; the session is unchanged after any error."""
        if self.state is OAState.OFFER_SENT:
            raise SdpError(
                "offer received while our own offer is pending (glare)",
                rule="RFC 3261 §14.2",
                status_hint=491,
            )
        if self.remote_sdp is not None:
            check_reoffer(self.remote_sdp, offer, self.local_sdp)
        local_hold = self.local_hold if hold is None else hold
        answer = create_answer(
            offer,
            self.local,
            codecs=self.codecs,
            security=self.security,
            hold=local_hold,
            rng=self._rng,
            previous=self.local_sdp,
        )
        answer = replace(answer, origin=self._origin_for(answer))
        streams = negotiate(offer, answer, we_offered=False, codecs=self.codecs)
        self._move(_Ev.RECV_OFFER)
        self.local_hold = local_hold
        self._version = answer.origin.session_version
        self._max_sent = max(self._max_sent, self._version)
        self._commit(answer, offer, streams)
        return answer

    # -- bookkeeping ------------------------------------------------------------------------
    def _commit(
        self,
        local_sdp: SessionDescription,
        remote_sdp: SessionDescription,
        streams: tuple[NegotiatedStream, ...],
    ) -> None:
        old = {s.index: s for s in self.streams}
        initial = not self.streams and self.local_sdp is None
        update = SessionUpdate(initial=initial)
        for s in streams:
            o = old.get(s.index)
            if o is None:
                continue
            update = SessionUpdate(
                initial=False,
                address_changed=update.address_changed
                or (o.remote_address, o.remote_port) != (s.remote_address, s.remote_port),
                codec_changed=update.codec_changed or o.codec.key != s.codec.key,
                direction_changed=update.direction_changed or o.direction != s.direction,
                security_changed=update.security_changed
                or (o.security, o.remote_crypto, o.local_crypto)
                != (s.security, s.remote_crypto, s.local_crypto),
            )
        if len(old) != len(streams):
            update = replace(update, direction_changed=True)
        self.local_sdp, self.remote_sdp, self.streams = local_sdp, remote_sdp, streams
        self.last_update = update

    @property
    def on_hold(self) -> bool:
        """True when no stream flows both ways (either side put the call on hold)."""
        return bool(self.streams) and all(s.on_hold for s in self.streams)
