"""The media side of ``callward phone``: the codec/ptime/DTX flags, what the phone says on an
answered call (``ua/talk.py``) and ``--capture`` (dumpcap on the call's ports, bytes per kind
and direction against the planner). Split from cli/phone.py, which keeps the commands."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from callward.cli.exits import fail as _fail
from callward.errors import CallwardError

if TYPE_CHECKING:
    from callward.ua import Phone, RtpEndpoint
    from callward.ua.sdp_offer import MediaPrefs
    from callward.ua.talk import Voice

__all__ = [
    "CallCapture",
    "MediaFlags",
    "finish_capture",
    "media_flags",
    "media_report",
    "start_capture",
    "talk",
]

_CODECS = {"opus": ("opus", "pcmu", "pcma"), "pcmu": ("pcmu", "pcma"), "pcma": ("pcma", "pcmu")}


@dataclass(frozen=True, slots=True)
class MediaFlags:
    """The media flags of ``phone call`` / ``phone answer``: what to offer/accept and say."""

    codec: str = "pcmu"
    bitrate: int = 16000
    ptime: int = 20
    dtx: bool = False
    fec: bool = True
    audio: str = "conversation"
    seed: int = 1
    noise_suppression: bool = False
    optimum: dict[str, Any] | None = None  # usage/optimise.py's choice, when --optimise
    metered: bool = False  # the rate controller may lengthen ptime (and re-INVITE for it)
    reoptimise: tuple[float, float] | None = None  # (RTT ms, min MOS): re-run on RTCP loss
    send_loss: float = 0.0  # lab: drop this share of our RTP before it leaves, percent

    def prefs(self) -> MediaPrefs:
        """Offer the chosen codec first, the others as fallbacks (RFC 3264 §5.1 order)."""
        from callward.ua.sdp_offer import MediaPrefs

        return MediaPrefs(codecs=_CODECS[self.codec], ptime=self.ptime, bitrate=self.bitrate,
                          fec=self.fec, dtx=self.dtx)  # fmt: skip

    def voice(self, party: int) -> Voice:
        from callward.ua.talk import Voice

        return Voice(self.audio, party, self.seed)


OPTIMISE_OPT = typer.Option(
    False, "--optimise", help="let usage/optimise.py pick codec/bitrate/ptime/FEC (DTX on)"
)
LOSS_OPT = typer.Option(0.0, "--loss", help="--optimise: expected packet loss, percent")
RTT_OPT = typer.Option(100.0, "--rtt", help="--optimise: expected round-trip time, ms")
MIN_MOS_OPT = typer.Option(4.0, "--min-mos", help="--optimise: MOS the call must reach")
SEND_LOSS_OPT = typer.Option(
    0.0, "--send-loss", help="lab: drop this percent of our RTP before it leaves (lossy uplink)"
)
METERED_OPT = typer.Option(
    False, "--metered", help="bytes are paid for: rate control may move to 40 ms (re-INVITE)"
)


def optimised(loss: float, rtt: float, min_mos: float) -> MediaFlags:
    """The cheapest setting with MOS >= ``min_mos`` on that path (metered link), as flags."""
    from callward.usage.optimise import Network, optimise

    try:
        best = optimise(Network(loss_pct=loss, rtt_ms=rtt), min_mos)
    except CallwardError as exc:
        raise _fail(str(exc)) from None
    s = best.best.setting
    chosen = {**best.best.as_dict(), "meets_target": best.meets_target}
    bitrate = s.bitrate if s.codec == "opus" else 16000
    return MediaFlags(s.codec, bitrate, s.ptime_ms, True, s.fec, optimum=chosen)


def media_flags(
    codec: str,
    bitrate: int,
    ptime: int,
    dtx: bool,
    fec: bool,
    audio: str,
    seed: int,
    ns: bool,
    optimise: tuple[float, float, float] | None = None,
    metered: bool = False,
    send_loss: float = 0.0,
) -> MediaFlags:
    """Validate the media flags: exit 2 with one line on a bad value. ``optimise`` = (loss %,
    RTT ms, minimum MOS): the optimiser's choice replaces codec/bitrate/ptime/FEC/DTX."""
    if codec not in _CODECS:
        raise _fail(f"--codec must be one of {', '.join(_CODECS)}, not {codec!r}")
    if ptime not in (20, 40, 60) and not (codec == "opus" and ptime == 10):
        raise _fail(f"--ptime must be 20, 40 or 60 (10 with opus), not {ptime}")
    if not 6000 <= bitrate <= 64000:
        raise _fail(f"--bitrate must be 6000..64000 bit/s, not {bitrate}")
    if not 0 <= send_loss <= 50:
        raise _fail(f"--send-loss must be 0..50 percent, not {send_loss}")
    flags = MediaFlags(codec, bitrate, ptime, dtx, fec, audio, seed, ns, metered=metered,
                       send_loss=send_loss)  # fmt: skip
    if optimise is not None:
        from dataclasses import replace

        flags = replace(optimised(*optimise), audio=audio, seed=seed, noise_suppression=ns,
                        metered=metered, reoptimise=(optimise[1], optimise[2]),
                        send_loss=send_loss)  # fmt: skip
    try:
        flags.voice(0)
        flags.prefs()
    except CallwardError as exc:
        raise _fail(str(exc)) from None
    return flags


async def talk(
    call: Any,
    rtp: RtpEndpoint,
    flags: MediaFlags,
    party: int,
    seconds: float | None,
    done: asyncio.Future[Any] | None = None,
) -> Any:
    """Say our side of the call on the negotiated stream (``ua/talk.py``); None without one."""
    from callward.ua.talk import talk as say

    stream = call.negotiated()
    if stream is None:
        if seconds:
            await asyncio.sleep(max(0.0, seconds))
        return None
    rtp.metered = flags.metered
    if flags.send_loss > 0:
        from callward.ua.impairment import Impairment, ImpairmentShim

        rtp.impairment = ImpairmentShim.seeded(Impairment(flags.send_loss), flags.seed, "phone")
    return await say(rtp, stream, flags.prefs(), flags.voice(party), seconds,
                      noise_suppression=flags.noise_suppression, done=done,
                      call=call, reoptimise=flags.reoptimise)  # fmt: skip


def media_report(rtp: RtpEndpoint, talked: Any) -> dict[str, Any]:
    c = rtp.counters
    out: dict[str, Any] = {
        "packets_sent": c.packets_sent,
        "packets_received": c.packets_received,
        "bytes_sent": c.bytes_sent,
        "rtcp_sent": c.rtcp_sent,
        "rtcp_received": c.rtcp_received,
    }
    if talked is not None:
        s = rtp.settings or talked.settings  # what we send now (after any renegotiation)
        if talked.changes:
            out["renegotiated"] = talked.changes
        out.update(codec=s.codec, ptime_ms=s.ptime_ms, dtx=s.dtx,
                   bitrate=s.bitrate if s.codec == "opus" else 64000,
                   fec=s.fec if s.codec == "opus" else False)  # fmt: skip
    return out


@dataclass(slots=True)
class CallCapture:
    """A running dumpcap on the call's ports (``ua/loopback_capture.py``) and the SIP ports,
    so TCP/TLS segments between them count as SIP (their ACKs and records included)."""

    capture: Any
    sip_ports: tuple[int, ...]

    async def __aexit__(self, *exc: object) -> None:
        await self.capture.__aexit__(*exc)


async def start_capture(
    path: Path | None, phone: Phone, rtp: RtpEndpoint, target: str, proxy: tuple[str, int] | None
) -> CallCapture | None:
    """dumpcap on lo for this call's ports: our SIP port (and the next hop's, for TCP/TLS
    connections from an ephemeral port) and the RTP/RTCP pair."""
    if path is None:
        return None
    from callward.sip.uri import parse_uri
    from callward.ua.call import next_hop
    from callward.ua.loopback_capture import LoopbackCapture

    hop = proxy or next_hop(parse_uri(target))
    sip = phone.local_addr[1]
    media = [rtp.local_addr[1], rtp.local_addr[1] + 1]
    cap = LoopbackCapture(path, udp=[sip, *media], tcp=[sip, hop[1]])
    await cap.__aenter__()
    return CallCapture(cap, (sip, hop[1]))


async def finish_capture(
    cap: CallCapture, rtp: RtpEndpoint, talked: Any, srtp: bool
) -> dict[str, Any]:
    from callward.ua.talk import wire_report
    from callward.usage.wire import measure_capture

    await cap.__aexit__(None, None, None)
    wire = measure_capture(cap.capture.path, sip_ports=cap.sip_ports)
    report = wire_report(wire, rtp, talked, srtp=srtp)
    report["capture"] = str(cap.capture.path)
    return report
