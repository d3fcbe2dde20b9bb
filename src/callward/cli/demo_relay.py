"""The demo's media relay: what the ng relay that anchored the call measured, per leg.

The demo runs the ``callward serve`` composition (``runtime.Runtime.start_node``): the edge
anchors the call's media in the relay over the ng protocol, so each phone's SRTP goes to the
relay, which decrypts it, counts it (RFC 3550 receiver statistics per leg) and re-encrypts it
with the other leg's keys. Before the hang-up this step asks the relay over ng (``query``,
as an operator's tool would) for its per-leg counters and sets them beside the phones' own:

* relay leg of the sender, RTP in == what the sender's loss shim let through;
* relay leg of the receiver, RTP out == what the receiving phone accepted.

Loopback loses nothing, so any difference is a relay bug. The CDR then carries the relay's
final per-leg statistics (its MediaStats at ``delete``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from callward.errors import CallwardError
from callward.ng.protocol import NgCommand, NgRequest
from callward.ng.transport import NgConnection

if TYPE_CHECKING:
    from callward.cli.demo import Demo

__all__ = ["query_relay"]


def _stats(reply: dict[str, Any], tag: str) -> dict[str, Any] | None:
    entry = reply.get("tags", {}).get(tag)
    if not isinstance(entry, dict):
        return None
    stats = entry.get("stats")
    return stats if isinstance(stats, dict) else None


async def query_relay(demo: Demo) -> None:
    """ng ``query`` for the call, then compare the relay's per-leg counts with the phones'."""
    call = demo.calls.get("alice")
    if call is None or "bob" not in demo.calls or demo.runtime is None:
        return
    daemon = demo.runtime.relay
    if daemon is None:
        return
    await asyncio.sleep(0.05)  # the RTCP BYEs the phones just sent, through the relay
    conn = await NgConnection.open(daemon.bound, timeout_s=0.5, attempts=3)
    try:
        reply = (await conn.request(NgRequest(NgCommand.QUERY, call_id=call.call_id))).body
    except CallwardError as exc:
        demo.fail(f"the relay did not answer an ng query: {exc}")
        return
    finally:
        conn.close()
    if reply.get("result") != "ok":
        demo.fail("the relay holds no session for the call: media was not anchored")
        return
    tags = {"alice": call.leg.local_tag, "bob": demo.calls["bob"].leg.local_tag}
    legs: dict[str, dict[str, Any]] = {}
    for name, tag in tags.items():
        s = _stats(reply, tag)
        if s is None:
            demo.fail(f"the relay reports no statistics for {name}'s leg")
            return
        mos = s.get("MOS", {})
        legs[name] = {
            "rtp_in": int(s["packets"]),
            "rtcp_in": int(s["rtcp packets"]),
            "bytes_in": int(s["bytes"]),
            "rtp_out": int(s["packets out"]) - int(s.get("rtcp packets out", 0)),
            "rtcp_out": int(s.get("rtcp packets out", 0)),
            "bytes_out": int(s["bytes out"]),
            "lost": int(s["lost"]),
            "jitter_ms": round(int(s["jitter_us"]) / 1000, 2),
            "mos": {k: v / 10 for k, v in mos.items()} if isinstance(mos, dict) else {},
        }
    directions = []
    for src, dst in (("alice", "bob"), ("bob", "alice")):
        tx, rx = demo.rtp[src].counters, demo.rtp[dst].counters
        left = tx.packets_sent - tx.dropped
        d = {
            "from": src,
            "to": dst,
            "phone_sent": left,  # what left the sender's loss shim toward the relay
            "relay_in": legs[src]["rtp_in"],
            "relay_out": legs[dst]["rtp_out"],
            "phone_received": rx.packets_received,
        }
        d["match"] = d["phone_sent"] == d["relay_in"] and d["relay_out"] == d["phone_received"]
        directions.append(d)
    demo.relay = {
        "node": daemon.settings.node,
        "ng": "{}:{}".format(*daemon.bound),
        "legs": legs,
        "directions": directions,
    }
    if not all(d["relay_in"] and d["relay_out"] for d in directions):
        demo.fail("the relay forwarded no media on one direction")
