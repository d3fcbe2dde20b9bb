"""Relay packets per CPU second: `callward relay --ng` against rtpengine-daemon (userspace,
``--num-threads=1 --table=-1``), same run, same traffic, both driven through ng by callward's
own client.

``--calls`` concurrent calls (default 20) are set up with offer/answer on each relay; one
generator socket sends RTP packets of ``--payload`` bytes (160: G.711/20 ms, 480: G.711/60 ms,
~40-120: Opus) as plain RTP or SRTP AES_CM_128_HMAC_SHA1_80 with a different key per call,
round-robin into the calls' A-leg ports with a bounded in-flight window, and one sink socket
(every call's B leg) counts what comes out. The first packet of each call is checked (SRTP:
it decrypts with the key the relay offered to B). The server's CPU time is read from
/proc/PID/stat before and after, so "packets/s per core" = packets out / server CPU seconds,
which stays meaningful on a shared machine. Media ports 22000-22999, one relay at a time.

    .venv/bin/python benchmarks/relay_vs_rtpengine.py [--packets 200000] [--calls 20]
        [--payload 160] [--window 64] [--modes rtp,srtp]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from callward.errors import NgError
from callward.ng import NgCommand, NgFlags, NgRequest
from callward.ng.transport import NgConnection
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.srtp import SrtpContext, SrtpKeying
from callward.sdp import media_crypto, parse_sdp
from peers import CALLWARD_CLI, free_port, stop

SUITE = "AES_CM_128_HMAC_SHA1_80"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def sdp(port: int, key: SrtpKeying | None) -> str:
    proto = "RTP/SAVP" if key else "RTP/AVP"
    crypto = f"a=crypto:1 {SUITE} {key.inline}\r\n" if key else ""
    head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    return f"{head}m=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{crypto}a=sendrecv\r\n"


PORTS = (22000, 22999)  # system17's port block; the two relays run one after the other


def start_server(kind: str, ng: int, work: Path) -> subprocess.Popen[bytes]:
    log = (work / f"{kind}.log").open("w")
    lo, hi = PORTS
    if kind == "rtpengine":
        cmd = ["rtpengine", "--foreground", "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{ng}",
               "--table=-1", "--num-threads=1", f"--port-min={lo}", f"--port-max={hi}",
               "--log-level=3", "--log-stderr", "--delete-delay=0",
               f"--pidfile={work / 'rtpe.pid'}"]  # fmt: skip
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    env = {**os.environ, "CALLWARD_STORAGE__DATA_DIR": str(work / "var"),
           "CALLWARD_MEDIA__RTP_PORT_MIN": str(lo), "CALLWARD_MEDIA__RTP_PORT_MAX": str(hi),
           "CALLWARD_MEDIA__STATS_INTERVAL_S": "3600"}  # fmt: skip
    cmd = [*CALLWARD_CLI, "relay", "--ng", f"127.0.0.1:{ng}"]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)


async def setup_calls(
    ng: int, gen_port: int, sink_port: int, srtp: bool, calls_n: int
) -> list[tuple[int, SrtpKeying | None, SrtpKeying | None]]:
    """(relay A-leg port, our key toward the relay, the relay's key toward B) per call."""
    conn = await NgConnection.open(("127.0.0.1", ng), timeout_s=0.5, attempts=10)
    flags = NgFlags(replace_origin=True, replace_session_connection=True, ice="remove")
    calls = []
    try:
        for _ in range(10):  # the server may still be starting (Python start-up under load)
            try:
                await conn.request(NgRequest(NgCommand.PING))
                break
            except NgError:
                continue
        for n in range(calls_n):
            a_key = SrtpKeying.generate() if srtp else None
            offer = await conn.request(NgRequest(NgCommand.OFFER, call_id=f"bench-{n}",
                                                 from_tag=f"a{n}", sdp=sdp(gen_port, a_key),
                                                 flags=flags))  # fmt: skip
            assert offer.ok, offer.body
            relay_to_b = None
            b_key = None
            if srtp:
                offered = [
                    c for c in media_crypto(parse_sdp(offer.sdp).media[0]) if c.suite == SUITE
                ]
                relay_to_b = SrtpKeying.from_sdes(SUITE, str(offered[0].keys[0]))
                b_key = SrtpKeying.generate()
                ans_sdp = (
                    sdp(sink_port, None)
                    .replace("RTP/AVP", "RTP/SAVP")
                    .replace(
                        "a=sendrecv",
                        f"a=crypto:{offered[0].tag} {SUITE} {b_key.inline}\r\na=sendrecv",
                    )
                )
            else:
                ans_sdp = sdp(sink_port, None)
            answer = await conn.request(NgRequest(NgCommand.ANSWER, call_id=f"bench-{n}",
                                                  from_tag=f"a{n}", to_tag=f"b{n}", sdp=ans_sdp,
                                                  flags=flags))  # fmt: skip
            assert answer.ok, answer.body
            calls.append((parse_sdp(answer.sdp).media[0].port, a_key, relay_to_b))
    finally:
        conn.close()
    return calls


def blast(
    kind: str, srtp: bool, packets: int, window: int, work: Path, calls_n: int, payload: int
) -> dict[str, float]:
    ng = free_port()
    proc = start_server(kind, ng, work)
    gen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gen.bind(("127.0.0.1", 0))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(1.0)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    try:
        calls = asyncio.run(
            setup_calls(ng, gen.getsockname()[1], sink.getsockname()[1], srtp, calls_n)
        )
        per_call = max(1, packets // calls_n)
        wire: list[tuple[bytes, tuple[str, int]]] = []
        ctxs = [None if k is None else SrtpContext(k, inbound=False) for _, k, _ in calls]
        for seq in range(per_call):
            for n, (port, _, _) in enumerate(calls):
                plain = bytes(RtpPacket(0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, 0x1000 + n,
                                        b"\xd5" * payload))  # fmt: skip
                ctx = ctxs[n]
                wire.append((plain if ctx is None else ctx.protect(plain), ("127.0.0.1", port)))
        # first round: one packet per call, checked
        rx = {n: SrtpContext(k, inbound=True) for n, (_, _, k) in enumerate(calls) if k}
        for data, dest in wire[:calls_n]:
            gen.sendto(data, dest)
            out = sink.recv(2048)
            while int.from_bytes(out[8:12], "big") - 0x1000 not in range(calls_n):
                out = sink.recv(2048)  # not one of ours (a late packet of an earlier run)
            if srtp:  # decrypts with the key the relay offered to B
                out = rx[int.from_bytes(out[8:12], "big") - 0x1000].unprotect(out)
            assert parse_rtp(out).sequence_number == 0
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        got = lost = inflight = 0
        i = calls_n
        while i < len(wire) or inflight:
            while inflight < window and i < len(wire):
                gen.sendto(*wire[i])
                i += 1
                inflight += 1
            try:
                sink.recv(2048)
                got += 1
            except TimeoutError:
                lost += inflight
                inflight = 0
                continue
            inflight -= 1
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        stop(proc)
        gen.close()
        sink.close()
    return {"pps_wall": got / wall, "pps_core": got / cpu, "cpu_per_100k": cpu / got * 1e5,
            "lost": lost}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=40000)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--calls", type=int, default=20, help="concurrent calls (1-200)")
    ap.add_argument("--payload", type=int, default=160,
                    help="RTP payload bytes: 160 G.711/20 ms, 480 G.711/60 ms")  # fmt: skip
    ap.add_argument("--modes", default="rtp,srtp")
    args = ap.parse_args()
    if not 1 <= args.calls <= 200:
        sys.exit("--calls: expected 1 to 200")
    if shutil.which("rtpengine") is None:
        sys.exit("rtpengine-daemon is not installed")
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        work = Path(tmp)
        rows = {}
        modes = [m == "srtp" for m in args.modes.split(",")]
        for srtp in modes:
            for kind in ("callward", "rtpengine"):
                rows[(kind, srtp)] = blast(kind, srtp, args.packets, args.window, work,
                                           args.calls, args.payload)  # fmt: skip
    load = os.getloadavg()[0]
    print(f"{args.calls} calls, payload {args.payload} B, {args.packets} packets, "
          f"window {args.window}, load {load:.1f}")  # fmt: skip
    print(f"{'relay':<12} {'mode':<5} {'pkts/s wall':>12} {'pkts/s/core':>12} "
          f"{'CPU s/100k':>11} {'lost':>5}")  # fmt: skip
    for (kind, srtp), r in rows.items():
        print(f"{kind:<12} {'SRTP' if srtp else 'RTP':<5} {r['pps_wall']:>12.0f} "
              f"{r['pps_core']:>12.0f} {r['cpu_per_100k']:>11.2f} {r['lost']:>5.0f}")  # fmt: skip
    for srtp in modes:
        c, e = rows[("callward", srtp)], rows[("rtpengine", srtp)]
        print(f"{'SRTP' if srtp else 'RTP'}: callward/rtpengine per-core "
              f"{c['pps_core'] / e['pps_core']:.2f}x, CPU per packet "
              f"{c['cpu_per_100k'] / e['cpu_per_100k']:.2f}x rtpengine's")  # fmt: skip


if __name__ == "__main__":
    main()
