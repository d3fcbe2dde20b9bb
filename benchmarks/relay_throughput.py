"""Relay throughput and added latency: callward's media relay with SRTP on both legs
(decrypt + re-encrypt with per-leg keys, stats, latching) against a plain asyncio UDP echo
(the floor: the cheapest possible Python packet forwarder), in the same run.

The server under test runs in its own process; its CPU time is measured there, so
"packets/s per core" = packets / server CPU seconds, which stays meaningful on a shared
machine. Wall-clock rates with a bounded in-flight window are printed too.

    .venv/bin/python benchmarks/relay_throughput.py [--packets 20000] [--window 32]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import statistics
import time
from multiprocessing.connection import Connection

from callward.relay.leg import LegConfig
from callward.relay.session import MediaRelay
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.srtp import SrtpContext, SrtpKeying


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


def server(kind: str, conn: Connection, sink_port: int, keys: list[bytes]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        if kind == "echo":
            transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
            conn.send(transport.get_extra_info("sockname")[1])
        else:
            k = [SrtpKeying.from_sdes("AES_CM_128_HMAC_SHA1_80", "inline:" + x.decode())
                 for x in keys]  # fmt: skip
            relay = MediaRelay(rtp_timeout_s=3600)
            s = await relay.create_session(
                "bench",
                LegConfig("a", srtp_rx=k[0], srtp_tx=k[1]),
                LegConfig("b", remote=("127.0.0.1", sink_port), srtp_rx=k[2], srtp_tx=k[3]),
            )
            conn.send(s.local_address("a")[1])
        t0 = time.process_time()
        while not conn.poll():
            await asyncio.sleep(0.05)
        conn.recv()
        conn.send(time.process_time() - t0)

    asyncio.run(main())


def run(kind: str, packets: int, window: int, latency_n: int) -> dict[str, float]:
    keys = [SrtpKeying.generate() for _ in range(4)]
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2)
    gen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gen.bind(("127.0.0.1", 0))
    gen.settimeout(2)
    parent, child = mp.Pipe()
    proc = mp.Process(
        target=server,
        args=(kind, child, sink.getsockname()[1], [k.inline[7:].encode() for k in keys]),
    )
    proc.start()
    port = parent.recv()
    dest = ("127.0.0.1", port)
    rx_sock = gen if kind == "echo" else sink
    tx = SrtpContext(keys[0], inbound=False)
    total = packets + latency_n
    wire = [
        tx.protect(bytes(RtpPacket(0, i % 65536, i * 160, 0x1234, b"\xff" * 160)))
        if kind == "relay"
        else bytes(RtpPacket(0, i % 65536, i * 160, 0x1234, b"\xff" * 182))
        for i in range(total)
    ]  # same 194-byte datagrams on the wire in both cases
    # latency: one packet in flight at a time
    lat = []
    for i in range(latency_n):
        t = time.perf_counter()
        gen.sendto(wire[i], dest)
        data = rx_sock.recv(2048)
        lat.append((time.perf_counter() - t) * 1e6)
        if i == 0 and kind == "relay":  # correctness: b-leg key decrypts it
            assert parse_rtp(SrtpContext(keys[3], inbound=True).unprotect(data)).ssrc == 0x1234
    # throughput with a bounded window
    got = 0
    lost = 0
    t0 = time.perf_counter()
    sent = latency_n
    inflight = 0
    while sent < total or inflight:
        while inflight < window and sent < total:
            gen.sendto(wire[sent], dest)
            sent += 1
            inflight += 1
        try:
            rx_sock.recv(2048)
            got += 1
        except TimeoutError:
            lost += inflight
            inflight = 0
            continue
        inflight -= 1
    wall = time.perf_counter() - t0
    parent.send("stop")
    cpu = parent.recv()
    proc.join(10)
    sink.close()
    gen.close()
    return {
        "pps_wall": got / wall,
        "pps_core": (got + latency_n) / cpu,
        "lat_med_us": statistics.median(lat),
        "lat_p99_us": sorted(lat)[int(0.99 * len(lat))],
        "lost": lost,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=20000)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--latency", type=int, default=2000)
    args = ap.parse_args()
    results = {k: run(k, args.packets, args.window, args.latency) for k in ("echo", "relay")}
    print(f"{'server':<22} {'pkts/s (wall)':>14} {'pkts/s per core':>16} "
          f"{'RTT med':>9} {'RTT p99':>9} {'lost':>5}")  # fmt: skip
    names = {"echo": "python UDP echo", "relay": "relay SRTP<->SRTP"}
    for k, r in results.items():
        print(f"{names[k]:<22} {r['pps_wall']:>14.0f} {r['pps_core']:>16.0f} "
              f"{r['lat_med_us']:>7.0f}us {r['lat_p99_us']:>7.0f}us {r['lost']:>5.0f}")  # fmt: skip
    e, r = results["echo"], results["relay"]
    print(f"\nrelay/echo per-core throughput ratio: {r['pps_core'] / e['pps_core']:.2f}")
    print(f"added latency (median RTT relay - echo): {r['lat_med_us'] - e['lat_med_us']:.0f} us")
    print(f"calls per core at 50 pkt/s each way (G.711 20 ms): {r['pps_core'] / 100:.0f}")


if __name__ == "__main__":
    main()
