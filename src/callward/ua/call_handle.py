"""The asyncio handle on one call: await its outcome, ring, answer, reject, cancel, hang up.

The state lives in the sans-IO :class:`~callward.ua.call.CallLeg`; this class adds waiting and
the two timing duties RFC 3261 gives the UA core rather than the transaction layer: the 2xx
retransmission until ACK over UDP (§13.3.1.4) and the CANCEL that waits for a provisional (§9.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import TYPE_CHECKING

from callward.errors import LocalProtocolError
from callward.sdp import NegotiatedStream
from callward.sip.message import Request, Response, make_response
from callward.sip.transaction import TransactionKey, make_cancel
from callward.sip.transport import Address
from callward.ua.call import ALLOW as ALLOW_HEADER
from callward.ua.call import CallLeg, CallState
from callward.ua.sdp_offer import negotiated_audio
from callward.ua.session_timer import (
    SessionTimer,
    parse_session_expires,
    response_timer,
)

if TYPE_CHECKING:
    from callward.ua.phone import Phone

__all__ = ["Call", "Peer"]

Peer = tuple[Address, str | None]  # where to send: address, and the connection id if any


class Call:
    """Handle on one call: await its outcome, answer, ring, reject or hang up."""

    def __init__(self, phone: Phone, leg: CallLeg, peer: Peer) -> None:
        self.phone = phone
        self.leg = leg
        self.peer = peer
        self.server_key: TransactionKey | None = None
        loop = asyncio.get_running_loop()
        self.started_at = loop.time()
        self.ringing_at: float | None = None  # first 18x (UAC: received, UAS: sent)
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self._acked = asyncio.Event()
        self._ended = asyncio.Event()
        self._provisional = asyncio.Event()
        self._invite_task: asyncio.Task[int] | None = None
        self.acks: dict[int, Request] = {}  # our ACK per re-INVITE CSeq (2xx retransmissions)
        self.media_changed = asyncio.Event()  # set when a re-offer changed the session
        self.dtmf_received: asyncio.Queue[str] = asyncio.Queue()  # key presses (INFO)
        self.reinvites_received = 0
        self.glare = 0  # 491s received for our re-INVITEs
        self._reinvite_pending = False  # our re-INVITE is in flight (glare, §14.2)
        self._preparing = False  # gathering for their re-offer's ICE restart
        self._reinvite_ok: Response | None = None  # our 2xx to their re-INVITE, until ACK
        self._reinvite_acked = asyncio.Event()
        self.session_timer: SessionTimer | None = None
        self.refreshes_sent = 0
        self._refreshed = asyncio.Event()  # the peer refreshed the session
        self._timer_task: asyncio.Task[None] | None = None

    @property
    def call_id(self) -> str:
        return self.leg.call_id

    @property
    def state(self) -> CallState:
        return self.leg.state

    @property
    def status(self) -> int:
        return self.leg.status

    def negotiated(self) -> NegotiatedStream | None:
        """The audio stream agreed by offer/answer (address, codec, SDES keys per direction);
        None until both SDP bodies are known or when they agree on no audio."""
        if not self.leg.local_sdp or not self.leg.remote_sdp:
            return None
        offered = self.leg.outgoing if self.leg.we_offered is None else self.leg.we_offered
        return negotiated_audio(self.leg.local_sdp, self.leg.remote_sdp, we_offered=offered)

    @property
    def setup_time(self) -> float | None:
        """Seconds from INVITE sent/received to 2xx received/ACK received."""
        return None if self.answered_at is None else self.answered_at - self.started_at

    @property
    def end_reason(self) -> str:
        return self.leg.end_reason

    async def wait_ended(self, timeout: float | None = None) -> str:
        await asyncio.wait_for(self._ended.wait(), timeout)
        return self.leg.end_reason

    async def wait_final(self, timeout: float | None = None) -> int:
        """UAC: the INVITE's final status (200 answered, 4xx-6xx, 408 timeout, 487 cancelled)."""
        if self._invite_task is None:
            raise LocalProtocolError("only an outgoing call has an INVITE to wait for")
        return await asyncio.wait_for(asyncio.shield(self._invite_task), timeout)

    async def cancel(self, timeout: float = 32.0) -> int:
        """UAC: CANCEL the pending INVITE (§9.1) once a provisional response has arrived (a
        CANCEL must not overtake the INVITE), then return the INVITE's final status: normally
        487; when the 2xx won the race the call is hung up with BYE instead (§9.1)."""
        if self._invite_task is None or self._invite_task.done():
            raise LocalProtocolError("no pending INVITE to cancel")
        await asyncio.wait_for(self._provisional.wait(), timeout)
        if not self._invite_task.done():
            assert self.leg.invite is not None
            self.leg.end_reason = "cancel"
            cancel = make_cancel(self.leg.invite)
            await asyncio.wait_for(self.phone.request(cancel, self.peer[0]), timeout)
        status = await self.wait_final(timeout)
        if 200 <= status < 300:
            await self.hangup(timeout)
        return status

    async def wait_confirmed(self, timeout: float | None = None) -> None:
        """UAS: until the ACK for our 2xx arrives."""
        await asyncio.wait_for(self._acked.wait(), timeout)

    # -------------------------------------------------------------- UAS side
    async def ring(self) -> None:
        """Send 180 Ringing (LocalProtocolError once the call was cancelled or answered)."""
        if self.leg.state not in (CallState.INCOMING, CallState.RINGING):
            raise LocalProtocolError(f"cannot ring a call in state {self.leg.state.value}")
        if self.ringing_at is None:
            self.ringing_at = asyncio.get_running_loop().time()
        self._respond(self.leg.make_response(180))

    async def answer(self, sdp: bytes | None = None, *, wait_ack: float | None = 32.0) -> None:
        """Send 200 OK (with an SDP answer) and, over UDP, retransmit it until the ACK arrives
        (§13.3.1.4: T1 doubling up to T2, give up after 64*T1 and send BYE)."""
        if sdp is None:
            sdp = self.phone.make_answer(self.leg.remote_sdp)
            if sdp is None:
                await self.reject(488)
                return
        timer = self._uas_timer()
        extra: list[tuple[str, str]] = []
        if timer is not None:
            extra.append(("Session-Expires", f"{timer.interval};refresher={timer.refresher}"))
            if timer.refresher == "uac":
                extra.append(("Require", "timer"))  # §9: the UAC must refresh
        resp = self.leg.make_response(200, sdp, extra)
        self._respond(resp)
        self.phone._publish_answered(self)
        if timer is not None:
            self._start_session_timer(timer)
        if not self.phone.transport.reliable:
            timers = self.phone.layer.timers
            interval, waited = timers.t1, 0.0
            while not self._acked.is_set() and waited < 64 * timers.t1:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._acked.wait(), interval)
                    break
                waited += interval
                interval = min(interval * 2, timers.t2)
                if not self._acked.is_set() and self.leg.state is CallState.ANSWERED:
                    self.phone.layer.send_stateless(resp, self.peer)
                    self.phone._pump()
            if not self._acked.is_set() and self.leg.state is CallState.ANSWERED:
                self.leg.end_reason = "no-ack"
                await self.hangup()
                return
        if wait_ack is not None:
            await self.wait_confirmed(wait_ack)

    async def reject(self, status: int = 486) -> None:
        self._respond(self.leg.make_response(status))
        self.phone._end(self)

    def _respond(self, resp: Response) -> None:
        if self.server_key is None:
            raise LocalProtocolError("only an incoming call can be answered")
        self.phone.layer.send_response(self.server_key, resp, self.phone.now())
        self.phone._pump()

    def _on_ack(self) -> None:
        if self.leg.state in (CallState.ANSWERED, CallState.CONFIRMED):
            first = self.leg.state is CallState.ANSWERED
            self.leg.on_ack()
            if first:
                self.answered_at = asyncio.get_running_loop().time()
            self._acked.set()

    # -------------------------------------------------------------- UAC side
    def _on_provisional(self, resp: Response) -> None:
        self._provisional.set()
        if resp.status > 100 and self.ringing_at is None:
            self.ringing_at = asyncio.get_running_loop().time()
        self.leg.on_response(resp)

    def _on_final(self, resp: Response) -> None:
        if resp.status < 300 and resp.headers:
            self.leg.on_response(resp)
            self.answered_at = asyncio.get_running_loop().time()
            self._send_ack()
            self.phone._publish_answered(self)
            timer = parse_session_expires(resp)
            if timer is not None and self.phone.session_expires:
                self._start_session_timer(timer)
        elif not resp.headers:  # synthesized 408/503
            self.leg.status = resp.status
            self.leg.timed_out("timeout" if resp.status == 408 else "transport-error")
            self.phone._end(self)
        else:
            self.leg.on_response(resp)
            self.phone._end(self)

    def _send_ack(self) -> None:
        ack = self.leg.ack or self.leg.make_ack()
        self.peer = (self.leg.next_hop(), self.peer[1])
        self.phone.layer.send_stateless(ack, self.peer)
        self.phone._pump()

    # -------------------------------------------------------------- re-INVITE (§14)
    # -------------------------------------------------------------- session timer (RFC 4028)
    def _uas_timer(self) -> SessionTimer | None:
        invite = self.leg.invite
        if invite is None:
            return None
        if self.phone.session_expires is None and parse_session_expires(invite) is None:
            return None
        return response_timer(invite, self.phone.session_expires, min_se=self.phone.min_se)

    def _start_session_timer(self, timer: SessionTimer) -> None:
        self.session_timer = timer
        if self._timer_task is None:
            self._timer_task = asyncio.get_running_loop().create_task(self._run_session_timer())

    def _timer_headers(self) -> list[tuple[str, str]]:
        t = self.session_timer
        if t is None:
            return []
        expires = f"{t.interval};refresher={t.refresher}"
        return [("Supported", "timer"), ("Session-Expires", expires)]

    async def _run_session_timer(self) -> None:
        """The refresher refreshes at N/2 (UPDATE when the peer allows it, else re-INVITE); the
        other side hangs up when no refresh arrived by N - min(32, N/3) (§10)."""
        while self.leg.state is CallState.CONFIRMED or self.leg.state is CallState.ANSWERED:
            timer = self.session_timer
            assert timer is not None
            if timer.we_refresh(we_are_uac=self.leg.outgoing):
                await asyncio.sleep(timer.refresh_after)
                if self.leg.state is not CallState.CONFIRMED:
                    return
                status = await self._refresh_session()
                if not 200 <= status < 300 and status != 491:
                    self.leg.end_reason = "session-refresh-failed"
                    with contextlib.suppress(Exception):
                        await self.hangup(timeout=10)
                    return
            else:
                self._refreshed.clear()
                try:
                    await asyncio.wait_for(self._refreshed.wait(), timer.expire_after)
                except TimeoutError:
                    self.leg.end_reason = "session-expired"
                    with contextlib.suppress(Exception):
                        await self.hangup(timeout=10)
                    return

    async def send_dtmf(
        self, digits: str, *, duration_ms: int = 160, gap: float = 0.05
    ) -> list[int]:
        """Send key presses as SIP INFO (``ua/dtmf_info.py``), one transaction per digit, in
        order; returns the statuses (200 when the peer took each)."""
        from callward.ua.dtmf_info import make_info

        statuses = []
        for digit in digits:
            req = make_info(self.leg, digit, duration_ms)
            statuses.append((await self.phone.request(req, self.leg.next_hop())).status)
            await asyncio.sleep(gap)
        return statuses

    async def _refresh_session(self) -> int:
        allow = self.leg.final.headers.get("Allow", "") if self.leg.final is not None else ""
        if not self.leg.outgoing and self.leg.invite is not None:
            allow = self.leg.invite.headers.get("Allow", "")
        self.refreshes_sent += 1
        if "UPDATE" in (allow or "").upper():
            req = self.leg.make_update(self._timer_headers())
            resp = await self.phone.request(req, self.leg.next_hop())
            return resp.status
        return await self.reinvite()

    def _on_update(self, req: Request, key: TransactionKey) -> None:
        """UPDATE (RFC 3311): a session refresh (RFC 4028) or a new offer before/after the
        call is up; answered 200 with our Session-Expires, or a fresh SDP answer."""
        phone, leg = self.phone, self.leg
        extra = [("Contact", leg.local.contact), *self._timer_headers()]
        body = b""
        if req.body:
            answer = phone.make_answer(req.body, version=leg.sdp_version + 1)
            if answer is None:
                phone.layer.send_response(key, make_response(req, 488), phone.now())
                phone._pump()
                return
            leg.sdp_version += 1
            leg.remote_sdp, leg.local_sdp, body = req.body, answer, answer
            leg.we_offered = False
            extra.append(("Content-Type", "application/sdp"))
            self.media_changed.set()
        asked = parse_session_expires(req)
        if asked is not None and self.session_timer is not None:
            self.session_timer = asked
        self._refreshed.set()
        phone.layer.send_response(key, make_response(req, 200, extra=extra, body=body), phone.now())
        phone._pump()

    def _on_reinvite(self, req: Request, key: TransactionKey, *, prepared: bool = False) -> None:
        """Their re-INVITE (§14.2): answer a new offer with a fresh answer (new o= version,
        new keys when they re-keyed, our direction mirroring their hold), follow the new
        remote address, or offer in the 200 when the re-INVITE has no body (answer in ACK).
        491 while our own re-INVITE is pending (glare); 488 keeps the old session."""
        phone, leg = self.phone, self.leg
        extra = [("Contact", leg.local.contact), ("Allow", ALLOW_HEADER)]
        if not prepared and (
            self._reinvite_pending or self._reinvite_ok is not None or self._preparing
        ):
            phone.layer.send_response(key, make_response(req, 491), phone.now())
            phone._pump()
            return
        if req.body and not prepared and phone.needs_preparing(req.body):
            self._preparing = True  # an ICE restart: gather first, answer after (glare: 491)
            phone._spawn(self._prepare_then_answer(req, key))
            return
        self.reinvites_received += 1
        self._refreshed.set()  # a re-INVITE refreshes the session timer too (RFC 4028 §10)
        version = leg.sdp_version + 1
        if req.body:
            answer = phone.make_answer(req.body, version=version)
            if answer is None:
                resp = make_response(req, 488, extra=[("Warning", '304 callward "no media"')])
                phone.layer.send_response(key, resp, phone.now())
                phone._pump()
                return
            leg.remote_sdp, leg.local_sdp, body = req.body, answer, answer
            leg.we_offered = False
        else:
            body = phone.make_offer(version=version)
            leg.local_sdp = body
            leg.we_offered = True
        leg.sdp_version = version
        resp = make_response(
            req, 200, extra=[*extra, ("Content-Type", "application/sdp")], body=body
        )
        self._reinvite_ok = resp
        self._reinvite_acked.clear()
        phone.layer.send_response(key, resp, phone.now())
        phone._pump()
        if req.body:
            self.media_changed.set()
        if not phone.transport.reliable:
            phone._spawn(self._retransmit_reinvite_2xx(resp))

    async def _prepare_then_answer(self, req: Request, key: TransactionKey) -> None:
        try:
            await self.phone.prepare_answer(req.body)
        finally:
            self._preparing = False
        self._on_reinvite(req, key, prepared=True)

    async def _retransmit_reinvite_2xx(self, resp: Response) -> None:
        """§13.3.1.4 for a re-INVITE's 2xx: T1 doubling to T2 until the ACK, 64*T1 at most."""
        timers = self.phone.layer.timers
        interval, waited = timers.t1, 0.0
        while self._reinvite_ok is resp and waited < 64 * timers.t1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reinvite_acked.wait(), interval)
                return
            waited += interval
            interval = min(interval * 2, timers.t2)
            if self._reinvite_ok is resp:
                self.phone.layer.send_stateless(resp, self.peer)
                self.phone._pump()
        if self._reinvite_ok is resp:
            self._reinvite_ok = None

    def _on_reinvite_ack(self, ack: Request) -> None:
        if ack.body:  # the answer to the offer we put in our 2xx
            self.leg.remote_sdp = ack.body
            self.media_changed.set()
        self._reinvite_ok = None
        self._reinvite_acked.set()

    async def reinvite(
        self, sdp: bytes | None = None, *, hold: bool = False, timeout: float = 32.0
    ) -> int:
        """Send a re-INVITE with a new offer (our current media address and keys; ``hold``
        offers sendonly) and ACK its 2xx. On 491 (glare) retry after the RFC 3261 §14.1 wait:
        2.1-4 s when we own the Call-ID (we placed the call), else 0-2 s; at most 3 tries."""
        if self._reinvite_pending:
            raise LocalProtocolError("a re-INVITE is already in progress")
        status = 0
        for _ in range(3):
            version = self.leg.sdp_version + 1
            offer = sdp if sdp is not None else self.phone.make_offer(version=version, hold=hold)
            req = self.leg.make_reinvite(offer)
            self._reinvite_pending = True
            try:
                resp = await asyncio.wait_for(self.phone.request(req, self.leg.next_hop()), timeout)
            finally:
                self._reinvite_pending = False
            status = resp.status
            if status == 491:
                self.glare += 1
                low, high = (2.1, 4.0) if self.leg.outgoing else (0.0, 2.0)
                await asyncio.sleep(random.uniform(low, high))
                continue
            if 200 <= status < 300:
                ack = self.leg.make_in_dialog_ack(req)
                self.acks[req.cseq.seq] = ack
                self.phone.layer.send_stateless(ack, (self.leg.next_hop(), self.peer[1]))
                self.phone._pump()
                self.leg.sdp_version = version
                self.leg.local_sdp, self.leg.remote_sdp = offer, resp.body or self.leg.remote_sdp
                self.leg.we_offered = True
                self.media_changed.set()
            break
        return status

    # -------------------------------------------------------------- both
    async def hangup(self, timeout: float = 32.0) -> int:
        """Send BYE in the dialog (§15.1.1) and wait for its final response; returns its status.
        An unanswered outgoing call is ended with :meth:`cancel` instead."""
        if self.leg.state is CallState.TERMINATED:
            return 0
        if self.leg.state not in (CallState.CONFIRMED, CallState.ANSWERED):
            raise LocalProtocolError(f"cannot hang up a call in state {self.leg.state.value}")
        bye = self.leg.make_bye()
        self.leg.on_bye(self.leg.end_reason or "bye")
        self.phone._end(self)
        resp = await asyncio.wait_for(self.phone.request(bye, self.leg.next_hop()), timeout)
        return resp.status
