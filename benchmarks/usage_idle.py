"""What an idle registered phone costs per hour, measured on the wire for each keep-alive
mechanism and projected onto reachability strategies, against the planner (usage/keepalive.py).

A callward edge (digest auth) and a callward phone on loopback, over UDP and over TCP. dumpcap
captures the edge port while the phone refreshes its registration three times (REGISTER, 401,
REGISTER with credentials, 200 - the phone does not reuse nonces) and, over TCP, sends five
RFC 5626 CRLF keep-alives. Bytes per exchange are IP datagram bytes, TCP ACKs included.

    .venv/bin/python benchmarks/usage_idle.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from callward.cli.demo import Demo, start_edge, start_phones
from callward.ua.loopback_capture import LoopbackCapture
from callward.usage import exchange_bytes, plan_idle
from callward.usage.wire import measure_capture

REFRESHES, PINGS = 3, 5


async def measure(transport: str, tmp: Path) -> dict[str, float]:
    demo = Demo(transport=transport, data_dir=tmp / transport)
    demo.data_dir.mkdir()  # type: ignore[union-attr]
    out: dict[str, float] = {}
    try:
        await start_edge(demo)
        await start_phones(demo)
        phone = demo.phones["alice"]
        port = demo.edge_addr[1]
        for what, n in (("register", REFRESHES), ("crlf", PINGS if transport == "tcp" else 0)):
            if not n:
                continue
            cap = tmp / f"{transport}-{what}.pcapng"
            kind = {"udp": [port]} if transport == "udp" else {"udp": [], "tcp": [port]}
            async with LoopbackCapture(cap, udp=kind["udp"], tcp=kind.get("tcp"), max_seconds=60):
                for _ in range(n):
                    if what == "register":
                        await phone.register(demo.edge_addr, domain="callward.local", expires=300)
                    else:
                        assert await phone.keep_alive()
                    await asyncio.sleep(0.3)
            wire = measure_capture(cap, sip_ports=[port])
            out[what] = (wire.total("sip") + wire.total("tcp")) / n
    finally:
        for p in demo.phones.values():
            await p.close()
        if demo.edge is not None:
            await demo.edge.stop()
        if demo.records is not None:
            demo.records.close()
    return out


async def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        udp = await measure("udp", tmp)
        tcp = await measure("tcp", tmp)
    print("bytes per exchange, both directions, IP datagrams (dumpcap on lo) vs planner")
    rows = [("REGISTER refresh over UDP (4 messages)", udp["register"],
             exchange_bytes("register", "udp")),
            ("REGISTER refresh over TCP (4 messages + ACKs)", tcp["register"],
             exchange_bytes("register", "tcp")),
            ("CRLF keep-alive over TCP (ping, pong, ACK)", tcp["crlf"],
             exchange_bytes("crlf", "tcp"))]  # fmt: skip
    for name, measured, planned in rows:
        print(
            f"  {name:48} {measured:8.0f} B  planner {planned:6d} B  ratio {measured / planned:.3f}"
        )
    reg_udp, reg_tcp, crlf = udp["register"], tcp["register"], tcp["crlf"]
    stun = exchange_bytes("stun", "udp")
    strategies = [
        ("UDP, STUN every 25 s + REGISTER every 600 s", 3600 / 25 * stun + 6 * reg_udp,
         plan_idle("x", keepalive=("stun", 25), transport="udp", register_s=600)),
        ("TCP, CRLF every 120 s + REGISTER every 600 s", 30 * crlf + 6 * reg_tcp,
         plan_idle("x", keepalive=("crlf", 120), transport="tcp", register_s=600)),
        ("TCP, CRLF every 1200 s (probed NAT timeout) + REGISTER every 3600 s",
         3 * crlf + reg_tcp,
         plan_idle("x", keepalive=("crlf", 1200), transport="tcp", register_s=3600)),
        ("push-assisted: no keep-alive, REGISTER over UDP every 3600 s", reg_udp,
         plan_idle("x", keepalive=None, transport="udp", register_s=3600)),
    ]  # fmt: skip
    print("idle registered phone, bytes per hour (measured exchanges x rate; planner)")
    for name, measured, plan in strategies:
        print(
            f"  {name:70} {measured:8.0f} B/h  planner {plan.bytes_per_hour:8.0f} B/h"
            f"{'  <= 5 KB/h' if measured <= 5000 else ''}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
