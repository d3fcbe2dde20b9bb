"""MediaStats events from an ng ``delete`` (or ``query``) reply of a callward relay.

A relay in another process (``callward serve`` relay workers, a relay on another host without
an event bus) reports each leg's statistics in its replies, as rtpengine does: the edge that
deletes the call turns them into :class:`~callward.events.MediaStats` on its own bus, so the
CDR carries the relay's per-leg packets, loss, jitter, MOS and bytes without the relay
publishing anything. ng has no floats: jitter and RTT come in microseconds, MOS x 10 per
playout model (the headline MOS is the adaptive model's when rated, else the worst).
"""

from __future__ import annotations

from collections.abc import Callable

from callward.events import MediaStats
from callward.ng.bencode import BValue

__all__ = ["media_stats_from_reply"]


def _int(d: dict[str, BValue], key: str) -> int:
    v = d.get(key, 0)
    return v if isinstance(v, int) else 0


def media_stats_from_reply(
    reply: dict[str, BValue], call_id: str, *, ts: float, seq: Callable[[], int]
) -> list[MediaStats]:
    """One MediaStats per leg that carries callward's ``stats`` dictionary (none for replies
    without it, e.g. rtpengine's)."""
    node = reply.get("node")
    tags = reply.get("tags")
    if not isinstance(node, str) or not isinstance(tags, dict):
        return []
    out = []
    for entry in tags.values():
        stats = entry.get("stats") if isinstance(entry, dict) else None
        if not isinstance(stats, dict) or not isinstance(stats.get("leg"), str):
            continue
        mos_d = stats.get("MOS")
        mos = {}
        if isinstance(mos_d, dict):
            mos = {k: v / 10 for k, v in mos_d.items() if isinstance(v, int)}
        headline = mos.get("adaptive", min(mos.values(), default=None))
        codec = stats.get("codec")
        rtt = stats.get("rtt_us")
        out.append(
            MediaStats(
                ts=ts, node=node, seq=seq(), call_id=call_id, leg=str(stats["leg"]),
                ssrc=_int(stats, "ssrc"), codec=codec if isinstance(codec, str) else "",
                packets=_int(stats, "packets"), lost=_int(stats, "lost"),
                jitter_ms=_int(stats, "jitter_us") / 1000,
                rtt_ms=rtt / 1000 if isinstance(rtt, int) else None, mos=headline,
                bytes_sent=_int(stats, "bytes out"), bytes_received=_int(stats, "bytes"),
            )
        )  # fmt: skip
    return out
