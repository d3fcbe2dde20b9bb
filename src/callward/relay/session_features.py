"""The relay session's DTMF interworking and Opus rate-control entry points, kept apart
from the packet path in ``session.py`` (which mixes this class in).

DTMF: the per-direction converters live in ``relay.dtmf_path``; here they are built from the
legs' negotiated modes, fed digits received by SIP INFO (:meth:`inject_digit`), and report
digits that must leave by INFO through :attr:`on_dtmf`.

Rate control: the peer's RTCP reception reports (or phone telemetry) feed one
:class:`OpusRateController` per ``rate_control`` leg; a change of bitrate, FEC or ptime is
published as a :class:`~callward.events.MediaAdaptation` (the FEC expected-loss knob alone
moves with every report and is not worth an event).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from callward.errors import MediaError
from callward.events import EventBus, MediaAdaptation
from callward.media.rate_control import LinkReport, OpusRateController
from callward.relay.dtmf_path import DtmfDirection
from callward.relay.leg import LegCounters
from callward.rtp.dtmf import TelephoneEvent

if TYPE_CHECKING:
    from callward.relay.media_core import CoreLeg

__all__ = ["DtmfAndRateMixin"]


class DtmfAndRateMixin:
    # provided by RelaySession
    call_id: str
    node: str
    tenant: str
    bus: EventBus | None
    legs: tuple[CoreLeg, CoreLeg]
    counters: tuple[LegCounters, LegCounters]
    clock: Callable[[], float]
    _seq: Callable[[], int]
    _loop_time: Callable[[], float]
    ended: asyncio.Event
    on_dtmf: Callable[[str, str, float], None] | None
    _dtmf: list[DtmfDirection | None]
    _sent_at: list[float | None]
    _last_rtp: list[bytes | None]
    rate: list[OpusRateController | None]
    _pending: set[asyncio.Task[None]]

    @staticmethod
    def _index(leg: str) -> int:
        if leg not in ("a", "b"):
            raise MediaError(f"leg must be 'a' or 'b', not {leg!r}")
        return 0 if leg == "a" else 1

    def _send_plain(self, j: int, plain: bytes) -> None:
        raise NotImplementedError

    def _build_dtmf(self, force: tuple[bool, bool] = (False, False)) -> None:
        for i in (0, 1):
            src, dst = self.legs[i].config, self.legs[1 - i].config
            if src.dtmf == dst.dtmf and not force[i] and self._dtmf[i] is None:
                continue
            hook = None
            if dst.dtmf == "info":
                hook = functools.partial(self._digit_for_info, dst.name)
            old = self._dtmf[i]
            d = DtmfDirection(
                src.dtmf,
                dst.dtmf,
                src_event_pt=src.dtmf_pt,
                dst_event_pt=dst.dtmf_pt,
                clock_rate=dst.clock_rate,
                on_digit=hook,
            )
            if old is not None:  # keep the destination's numbering and position
                d.seq, d.ssrc, d.last_ts = old.seq, old.ssrc, old.last_ts
            elif self._last_rtp[1 - i] is not None:
                # packets went through unconverted so far: continue their numbering
                seq, ts, ssrc = struct.unpack("!HII", self._last_rtp[1 - i] or b"")
                d.seq.last, d.ssrc, d.last_ts = seq, ssrc, ts
            self._dtmf[i] = d

    def _digit_for_info(self, leg: str, digit: str, duration_ms: float) -> None:
        if self.on_dtmf is not None:
            self.on_dtmf(leg, digit, duration_ms)

    def set_dtmf_mode(self, leg: str, mode: str, event_pt: int | None = None) -> None:
        """Signalling (re-)negotiated how this leg carries DTMF."""
        target = self.legs[self._index(leg)]
        pt = target.config.dtmf_pt if event_pt is None else event_pt
        target.config = dataclasses.replace(target.config, dtmf=mode, dtmf_pt=pt)
        self._build_dtmf()

    def dtmf_direction(self, toward: str) -> DtmfDirection | None:
        """The converter for packets flowing toward leg ``toward`` (None: no conversion)."""
        return self._dtmf[1 - self._index(toward)]

    def inject_digit(self, leg: str, digit: str, duration_ms: float = 160.0) -> None:
        """Play a digit that the *other* leg sent by SIP INFO into media leg ``leg``: as
        RFC 4733 events (paced as a phone would send them) or as a tone replacing the next
        audio frames, per ``leg``'s DTMF mode."""
        j = self._index(leg)
        if self._dtmf[1 - j] is None:
            self._build_dtmf(force=(j == 1, j == 0))
        d = self._dtmf[1 - j]
        assert d is not None
        rate = self.legs[j].config.clock_rate
        now = self._loop_time()
        sent = self._sent_at[j]
        ts = 0 if d.last_ts is None else d.last_ts
        if sent is not None:
            ts += round((now - sent) * rate)
        scheduled = d.inject(digit, duration_ms, ts & 0xFFFFFFFF)
        loop = asyncio.get_running_loop()
        for p in scheduled:
            loop.call_later(p.at_ms / 1000, self._send_event, j, d, p.timestamp, p.event, p.marker)

    def _send_event(
        self, j: int, d: DtmfDirection, ts: int, ev: TelephoneEvent, marker: bool
    ) -> None:
        if not self.ended.is_set():
            self._send_plain(j, bytes(d.event_packet(ts, ev, marker)))

    def _decide(self, i: int, report: LinkReport) -> MediaAdaptation | None:
        """One report into leg i's controller; an event when bitrate/FEC/ptime changed (the
        FEC expected-loss knob alone moves with every report and is not worth an event)."""
        ctrl = self.rate[i]
        if ctrl is None:
            raise MediaError(f"leg {self.legs[i].config.name} has no rate control")
        before = ctrl.current
        d = ctrl.on_report(report)
        if (d.bitrate, d.fec, d.ptime_ms) == (before.bitrate, before.fec, before.ptime_ms):
            return None
        return MediaAdaptation(
            ts=self.clock(),
            node=self.node,
            seq=self._seq(),
            tenant=self.tenant,
            call_id=self.call_id,
            leg=self.legs[i].config.name,
            bitrate=d.bitrate,
            fec=d.fec,
            ptime_ms=d.ptime_ms,
            reason=d.cause or "loss-level",
        )

    def _adapt(self, i: int, fraction_lost: int) -> None:
        rtt = self.counters[i].rtt_ms
        ev = self._decide(
            i, LinkReport.from_rtcp(fraction_lost, None if rtt is None else rtt / 1e3)
        )
        if ev is None or self.bus is None:
            return
        task = asyncio.get_running_loop().create_task(self.bus.publish(ev))
        self._pending.add(task)  # keep a reference until published
        task.add_done_callback(self._pending.discard)

    async def on_link_report(self, leg: str, report: LinkReport) -> MediaAdaptation | None:
        """Feed one link report to the leg's rate controller directly (e.g. from a phone's
        telemetry rather than RTCP); publishes and returns the event if the decision changed."""
        ev = self._decide(self._index(leg), report)
        if ev is not None and self.bus is not None:
            await self.bus.publish(ev)
        return ev
