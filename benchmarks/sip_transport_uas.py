"""Calls/s our asyncio UAS (UDP or TCP transport + transaction layer + call legs) answers for a
SIPp uac, compared with SIPp's own C++ uas answering the same SIPp uac, in the same run.

    .venv/bin/python benchmarks/sip_transport_uas.py [--calls 400] [--rate 400] [--transport udp]
        [--repeat 3]

The uac is the same binary with the same arguments in both runs; only the answering side
changes. Failed calls are reported too: a fast but lossy UAS is not a result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

from callward.ua.phone import Phone
from peers import free_port, run_sipp_async, sipp_client_cmd, sipp_counts, sipp_uas_cmd

SIPP_TRANSPORT = {"udp": "u1", "tcp": "t1"}  # SIPp's -t values, one socket each


async def wait_listening(port: int, transport: str) -> None:
    """SIPp needs a moment to bind; over TCP poll until it accepts."""
    if transport == "udp":
        await asyncio.sleep(0.5)
        return
    for _ in range(100):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        w.close()
        return


async def run_uac(
    port: int, calls: int, rate: int, transport: str, cwd: Path
) -> tuple[float, int, int]:
    cmd = sipp_client_cmd(
        port, calls=calls, rate=rate, transport=SIPP_TRANSPORT[transport], stats="stats.csv",
        extra=("-l", "200"),
    )  # fmt: skip
    start = time.perf_counter()
    with contextlib.suppress(TimeoutError):  # killed by PID: its counters so far still count
        await run_sipp_async(cmd, cwd, 90)
    elapsed = time.perf_counter() - start
    ok, failed = sipp_counts(cwd / "stats.csv") or (0, calls)
    return elapsed, ok, failed


async def ours(calls: int, rate: int, transport: str, cwd: Path) -> tuple[float, int, int]:
    bob = await Phone.start("service", transport=transport, auto_answer=True)
    try:
        return await run_uac(bob.local_addr[1], calls, rate, transport, cwd)
    finally:
        await bob.close()


async def peer(calls: int, rate: int, transport: str, cwd: Path) -> tuple[float, int, int]:
    port = free_port()
    args = sipp_uas_cmd(
        port, transport=SIPP_TRANSPORT[transport], extra=("-timeout", "80s", "-fd", "1")
    )
    uas = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await wait_listening(port, transport)
    try:
        return await run_uac(port, calls, rate, transport, cwd)
    finally:
        uas.kill()  # our own child, by PID
        await uas.wait()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--rate", type=int, default=400, help="offered calls/s")
    ap.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs per side (noise)")
    a = ap.parse_args()
    if shutil.which("sipp") is None:
        print("sipp not installed (Debian sip-tester)", file=sys.stderr)
        return 2
    results: dict[str, tuple[float, int, int]] = {}
    for _ in range(a.repeat):
        for name, fn in (("sipp uas", peer), ("callward uas", ours)):
            with tempfile.TemporaryDirectory() as tmp:
                run = await fn(a.calls, a.rate, a.transport, Path(tmp))
            best = results.get(name)
            if best is None or run[1] / run[0] > best[1] / best[0]:
                results[name] = run
    print(f"{a.calls} calls offered at {a.rate}/s over {a.transport.upper()} by sipp -sn uac")
    for name, (elapsed, ok, failed) in results.items():
        print(
            f"  {name:13s} {ok / elapsed:8.1f} calls/s  ({ok} ok, {failed} failed, {elapsed:.2f} s)"
        )
    ours_rate = results["callward uas"][1] / results["callward uas"][0]
    peer_rate = results["sipp uas"][1] / results["sipp uas"][0]
    if peer_rate == 0:
        print("  sipp uas completed no calls: no ratio", file=sys.stderr)
        return 1
    print(f"  ratio callward/sipp: {ours_rate / peer_rate:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
