"""What a phone says on an answered call, and what saying it cost on the wire.

``callward phone`` (call and answer) sends real voice through the one send path
(:class:`~callward.ua.media.RtpEndpoint`: Opus with bitrate/FEC/DTX or G.711 with VAD + RFC 3389
comfort noise, at the negotiated ptime, with RTCP):

- **conversation** (default): one party of the two-party talk-spurt model of
  ``media/talkspurt.py``; the caller is party A and the answerer party B of the same seed, so two
  CLI phones hold a conversation in which each talks a little under half of the time and DTX/VAD
  has real pauses to save. The speech is synthesised in 1 s blocks as it is sent, so a call of
  unknown length (the answerer talks until the BYE) costs no memory up front.
- **silence**: digital silence (what the phone used to send); DTX/VAD then sends almost nothing.
- a **WAV file** (mono, 16-bit PCM; resampled to the codec's rate), repeated for the call.

:func:`planned_for` prices the direction we sent with ``usage/planner.py`` from the settings and
the talk mask's real silences (the planner never sees a byte count), and
:func:`wire_report` sets that against the bytes a capture of the call measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from callward.errors import CallwardError
from callward.media.talkspurt import STEP_MS, conversation, speech_signal
from callward.media.voice import VoiceSettings
from callward.ua.sdp_offer import SRTP_SUITE, MediaPrefs, voice_settings

if TYPE_CHECKING:
    from callward.sdp import NegotiatedStream
    from callward.ua.call_handle import Call
    from callward.ua.media import RtpEndpoint
    from callward.usage.planner import CallPlan
    from callward.usage.wire import WireUsage

__all__ = ["Voice", "planned_for", "silence_gaps", "talk", "wire_report"]

BLOCK_S = 1  # speech synthesised per block: a few ms of work between two packets
MAX_TALK_S = 3600.0  # an answerer's talk mask covers at most an hour
QUIET_ROOM = -65.0  # dBov background noise between words: a quiet room, not digital zero
_MAX_WAV_S = 600  # a WAV source is read whole: bounded


@dataclass(frozen=True, slots=True)
class Voice:
    """A voice source: ``conversation`` (party 0 = caller, 1 = answerer), ``silence`` or a WAV
    file path. Validated here so a bad ``--audio`` is one clear line."""

    source: str = "conversation"
    party: int = 0
    seed: int = 1

    def __post_init__(self) -> None:
        if self.party not in (0, 1):
            raise CallwardError(f"party must be 0 (caller) or 1 (answerer), not {self.party}")
        if self.source not in ("conversation", "silence") and not Path(self.source).is_file():
            raise CallwardError(
                f"--audio {self.source!r}: expected conversation, silence or a WAV file"
            )

    def mask(self, seconds: float) -> npt.NDArray[np.bool_]:
        """Who talks when (one flag per 10 ms) over ``seconds``: the conversation's mask of our
        party; all False for silence; all True for a recording (VAD decides)."""
        n = round(seconds * 1000 / STEP_MS)
        if self.source == "conversation":
            return conversation(seconds, self.seed)[self.party][:n]
        return np.full(n, self.source != "silence", dtype=bool)

    def blocks(self, mask: npt.NDArray[np.bool_], rate: int) -> Iterator[npt.NDArray[np.int16]]:
        """PCM at ``rate`` for ``mask``, in blocks of :data:`BLOCK_S` seconds."""
        step = BLOCK_S * 1000 // STEP_MS
        if self.source == "silence":
            for i in range(0, len(mask), step):
                yield np.zeros(len(mask[i : i + step]) * rate * STEP_MS // 1000, dtype=np.int16)
            return
        if self.source != "conversation":
            yield from _repeat(_read_wav(Path(self.source), rate), len(mask) * rate // 100)
            return
        seed = self.seed * 7919 + self.party * 104729
        for i in range(0, len(mask), step):
            t0 = i * STEP_MS / 1000
            yield speech_signal(mask[i : i + step], rate, seed=seed, noise_dbov=QUIET_ROOM, t0=t0)


def _read_wav(path: Path, rate: int) -> npt.NDArray[np.int16]:
    try:
        with wave.open(str(path), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise CallwardError(f"{path.name}: expected a mono 16-bit PCM WAV file")
            src_rate = w.getframerate()
            if not 8000 <= src_rate <= 48000 or w.getnframes() > _MAX_WAV_S * src_rate:
                raise CallwardError(f"{path.name}: 8-48 kHz and at most {_MAX_WAV_S} s")
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (OSError, EOFError, wave.Error) as exc:
        raise CallwardError(f"{path.name}: not a readable WAV file ({exc})") from None
    if not len(pcm):
        raise CallwardError(f"{path.name}: no audio")
    if src_rate == rate:
        return pcm.astype(np.int16)
    # linear interpolation: enough for a test signal; speech codecs low-pass anyway
    n = max(1, round(len(pcm) * rate / src_rate))
    x = np.linspace(0, len(pcm) - 1, n)
    out: npt.NDArray[np.int16] = np.round(np.interp(x, np.arange(len(pcm)), pcm)).astype(np.int16)
    return out


def _repeat(pcm: npt.NDArray[np.int16], total: int) -> Iterator[npt.NDArray[np.int16]]:
    done = 0
    while done < total:
        part = pcm[: total - done]
        done += len(part)
        yield part


def silence_gaps(mask: npt.NDArray[np.bool_]) -> list[float]:
    """Lengths in seconds of the silences between (and around) talk spurts of a 10 ms mask."""
    gaps: list[float] = []
    run = 0
    for active in mask:
        if active:
            if run:
                gaps.append(run * STEP_MS / 1000)
            run = 0
        else:
            run += 1
    if run:
        gaps.append(run * STEP_MS / 1000)
    return gaps


@dataclass(slots=True)
class Talked:
    """What :func:`talk` did: the settings sent with, the talk mask actually sent (trimmed to
    whole packets) and the packets."""

    settings: VoiceSettings
    mask: npt.NDArray[np.bool_]
    packets: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)  # renegotiations, in order

    @property
    def seconds(self) -> float:
        return len(self.mask) * STEP_MS / 1000


def start_stream(
    rtp: RtpEndpoint,
    stream: NegotiatedStream,
    prefs: MediaPrefs,
    *,
    noise_suppression: bool = False,
) -> VoiceSettings:
    """Start ``rtp`` on the negotiated stream with what we may send on it (codec, ptime,
    bitrate, FEC, DTX/VAD from the offer/answer, ``ua/sdp_offer.py``)."""
    settings = voice_settings(stream, prefs)
    if noise_suppression:
        from dataclasses import replace

        settings = replace(settings, noise_suppression=True)
    rtp.start((stream.remote_address, stream.remote_port), settings, rtcp_mux=stream.rtcp_mux,
              remote_rtcp=(stream.remote_address, stream.remote_rtcp_port))  # fmt: skip
    return settings


async def talk(
    rtp: RtpEndpoint,
    stream: NegotiatedStream,
    prefs: MediaPrefs,
    voice: Voice,
    seconds: float | None,
    *,
    noise_suppression: bool = False,
    done: asyncio.Future[Any] | None = None,
    call: Call | None = None,
    reoptimise: tuple[float, float] | None = None,
) -> Talked:
    """Send ``voice`` on the negotiated stream for ``seconds`` (None: until ``done``
    completes, at most :data:`MAX_TALK_S`), then stop RTCP with a BYE (RFC 3550 §6.6).

    With ``call``, the session follows renegotiation: when the rate controller wants another
    ptime (``RtpEndpoint.on_renegotiate``) the phone re-INVITEs with it, and whenever an
    offer/answer changed the session (ours or the peer's re-INVITE) the sender switches to
    the newly negotiated ptime/codec (``RtpEndpoint.change``). With ``reoptimise`` =
    (RTT floor ms, minimum MOS), the RTCP reports about our stream re-run the optimiser
    (``usage/optimise.py``) on the measured loss; a different codec/ptime/FEC is re-INVITEd."""
    settings = start_stream(rtp, stream, prefs, noise_suppression=noise_suppression)
    follower = None
    if call is not None:
        follower = _Follower(call, rtp, noise_suppression, reoptimise)
    length = MAX_TALK_S if seconds is None else seconds
    mask = voice.mask(length) if length > 0 else np.zeros(0, dtype=bool)
    per_packet = settings.ptime_ms // STEP_MS
    mask = mask[: len(mask) - len(mask) % per_packet]
    talked = Talked(settings, mask)
    if not len(mask):
        await rtp.stop()
        return talked
    before, voice_ms0 = rtp.counters.packets_sent, rtp.voice_ms
    sending = asyncio.ensure_future(rtp.send_voice(voice.blocks(mask, settings.sample_rate)))
    try:
        if done is not None:
            await asyncio.wait({sending, done}, return_when=asyncio.FIRST_COMPLETED)
        if sending.done() or done is None:
            await sending
        else:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
    finally:
        if not sending.done():
            sending.cancel()
        if follower is not None:
            talked.changes = follower.changes
            follower.close()
        # what was really spoken: the mask up to the last packet time encoded
        talked.mask = mask[: (rtp.voice_ms - voice_ms0) // STEP_MS]
        talked.packets = rtp.counters.packets_sent - before
        await rtp.stop()
    return talked


class _Follower:
    """Keeps the sender on what offer/answer agreed (see :func:`talk`)."""

    def __init__(
        self, call: Call, rtp: RtpEndpoint, ns: bool, reoptimise: tuple[float, float] | None
    ) -> None:
        self.call, self.rtp, self.ns = call, rtp, ns
        self.changes: list[dict[str, Any]] = []
        self._raised = False  # we asked for a longer ptime than the call started with
        self._tasks: set[asyncio.Future[Any]] = set()
        self._reoptimise = reoptimise
        self._loss: float | None = None  # EWMA of the reported loss, percent
        self._optimised_for = 0.0  # the loss the current setting was chosen for
        self._fresh = False  # the next answer carries the optimiser's settings: take them
        self._busy = False  # our re-INVITE is in flight
        rtp.on_renegotiate = self._want
        if reoptimise is not None:
            rtp.on_link_report = self._link
        self._tasks.add(asyncio.ensure_future(self._watch()))

    def _link(self, fraction_lost: float, rtt_s: float | None) -> None:
        """An RTCP report about our stream: when the smoothed loss moved by a point or more
        from what the setting was chosen for, ask the optimiser again."""
        from callward.usage.optimise import Network, optimise

        assert self._reoptimise is not None
        pct = 100.0 * fraction_lost
        self._loss = pct if self._loss is None else 0.5 * pct + 0.5 * self._loss
        if abs(self._loss - self._optimised_for) < 1.0 or self._busy:
            return
        rtt_floor, min_mos = self._reoptimise
        rtt = max(rtt_floor, 1000.0 * rtt_s) if rtt_s is not None else rtt_floor
        loss = min(50.0, self._loss)
        best = optimise(Network(loss_pct=loss, rtt_ms=rtt), min_mos).best
        self._optimised_for = self._loss
        s, cur = best.setting, self.rtp.settings
        if cur is None:
            return
        if (s.codec, s.ptime_ms) == (cur.codec, cur.ptime_ms):
            # FEC is the sender's own choice (RFC 7587 §3.3): no new offer needed
            if s.codec == "opus" and s.fec != cur.fec and self.rtp.sender is not None:
                from dataclasses import replace

                self.rtp.settings = replace(cur, fec=s.fec)
                self.rtp.sender.apply(self.rtp.settings)
            return
        from callward.ua.sdp_offer import prefs_for

        self.call.phone.media_prefs = prefs_for(s.codec, s.bitrate, s.ptime_ms, s.fec)
        self.changes.append({"reoptimised_for_loss_pct": round(loss, 1), "codec": s.codec,
                             "bitrate": s.bitrate, "ptime_ms": s.ptime_ms, "fec": s.fec,
                             "mos": round(best.mos, 2)})  # fmt: skip
        self._fresh = True
        self._tasks.add(asyncio.ensure_future(self._reinvite(None)))

    def _want(self, wanted: VoiceSettings) -> None:
        """The rate controller wants another ptime: offer it in a re-INVITE. Only the side
        that lengthened the ptime (metered, or its RTT was high) may shorten it again; the
        other side keeps what its peer asked for, so two controllers cannot ping-pong."""
        cur = self.rtp.settings
        if cur is None:
            return
        if wanted.ptime_ms < cur.ptime_ms and not self._raised:
            self.rtp.change_controller_ptime(cur.ptime_ms)
            return
        self._raised = wanted.ptime_ms > cur.ptime_ms
        self._tasks.add(asyncio.ensure_future(self._reinvite(wanted)))

    async def _reinvite(self, wanted: VoiceSettings | None) -> None:
        from dataclasses import replace

        phone = self.call.phone
        if wanted is not None:
            phone.media_prefs = replace(phone.media_prefs, ptime=wanted.ptime_ms)
        self._busy = True
        try:
            with contextlib.suppress(CallwardError, TimeoutError):
                status = await self.call.reinvite(timeout=10)
                self.changes.append({"reinvite": status, "ptime_ms": phone.media_prefs.ptime})
        finally:
            self._busy = False

    async def _watch(self) -> None:
        from dataclasses import replace

        changed = self.call.media_changed
        while True:
            await changed.wait()
            changed.clear()
            stream, cur = self.call.negotiated(), self.rtp.settings
            if stream is None or cur is None:
                continue
            new = voice_settings(stream, self.call.phone.media_prefs)
            fresh, self._fresh = self._fresh, False
            if (new.codec, new.ptime_ms) == (cur.codec, cur.ptime_ms):
                if fresh and self.rtp.sender is not None:  # bitrate/FEC from the optimiser
                    keep = replace(cur, bitrate=new.bitrate, fec=new.fec)
                    self.rtp.sender.apply(keep)
                    self.rtp.settings = keep
                continue
            if new.codec == cur.codec and not fresh:  # keep what rate control set
                new = replace(new, bitrate=cur.bitrate, fec=cur.fec,
                              expected_loss_pct=cur.expected_loss_pct)  # fmt: skip
            self.rtp.change(replace(new, noise_suppression=self.ns))
            self.changes.append({"sending": new.codec, "ptime_ms": new.ptime_ms})

    def close(self) -> None:
        self.rtp.on_renegotiate = None
        for task in self._tasks:
            task.cancel()


def planned_for(talked: Talked, *, rtcp_mux: bool, srtp: bool) -> CallPlan:
    """The planner's bytes for the direction we sent: the same settings and the talk mask
    (``usage/planner.py`` follows the DTX/VAD sender frame by frame over it)."""
    from callward.usage.planner import MediaChoice, plan_call

    s, mask = talked.settings, talked.mask
    activity = max(0.001, float(mask.mean())) if len(mask) and s.dtx else 1.0
    choice = MediaChoice(
        codec=s.codec, ptime_ms=s.ptime_ms, bitrate=s.bitrate if s.codec == "opus" else None,
        srtp=SRTP_SUITE if srtp else "none", voice_activity=activity, dtx=s.dtx, fec=s.fec,
        cbr=s.cbr, rtcp_mux=rtcp_mux,
    )  # fmt: skip
    return plan_call(choice, duration_s=max(talked.seconds, 0.01),
                     silence_gaps_s=silence_gaps(mask), talk_mask=mask.tolist())  # fmt: skip


def wire_report(
    wire: WireUsage, rtp: RtpEndpoint, talked: Talked | None, *, srtp: bool
) -> dict[str, Any]:
    """Bytes a capture of the call measured, by kind and direction (``sent``/``received``
    from this phone's media port; no addresses in the report), and the direction we sent
    against the planner."""
    port = rtp.local_addr[1]
    ours = {port, port + 1}

    def side(flow: Any) -> str:
        return "sent" if int(flow.src.rsplit(":", 1)[1]) in ours else "received"

    out: dict[str, Any] = {"sip_bytes": wire.total("sip"), "stun_bytes": wire.total("stun")}
    for kind in ("rtp", "rtcp"):
        for d in ("sent", "received"):
            flows = [f for f in wire.of(kind) if side(f) == d]
            out[f"{kind}_{d}"] = {
                "packets": sum(f.packets for f in flows),
                "ip_bytes": sum(f.ip_bytes for f in flows),
            }
    if talked is not None and talked.changes:
        out["renegotiated"] = talked.changes  # one ptime for the whole call: no plan to compare
    elif talked is not None and talked.seconds > 0:
        plan = planned_for(talked, rtcp_mux=rtp.rtcp_mux, srtp=srtp)
        media = out["rtp_sent"]["ip_bytes"]
        planned = plan.media_bytes_per_second * talked.seconds
        out["seconds"] = round(talked.seconds, 2)
        out["voice_activity"] = round(float(talked.mask.mean()), 3)
        out["sent_bytes_per_minute"] = round(media * 60 / talked.seconds)
        out["planned_bytes_per_minute"] = round(plan.media_bytes_per_minute)
        out["planner_ratio"] = round(media / planned, 4) if planned else None
        out["planned_rtcp_bytes"] = round(plan.rtcp_bytes_per_second * talked.seconds)
        both = sum(
            out[f"{k}_{d}"]["ip_bytes"] for k in ("rtp", "rtcp") for d in ("sent", "received")
        )
        out["media_both_directions_bytes_per_minute"] = round(both * 60 / talked.seconds)
    return out
