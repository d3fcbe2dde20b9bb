"""Interop with SIPp's built-in scenarios (RFC 3261 call flows written by someone else):
our UAC against ``sipp -sn uas`` and our UAS against ``sipp -sn uac``, over UDP and TCP.
SIPp's own statistics (exit code, SuccessfulCall/FailedCall counters) are the judge."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import shutil
import socket
from pathlib import Path

import pytest

from callward.ua.phone import Phone

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

SIPP = shutil.which("sipp")
CALLS = 5


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIPp binds one or the other)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def last_stats(path: Path) -> dict[str, str]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    assert rows, "SIPp wrote no statistics"
    return rows[-1]


async def run_sipp(args: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    """Run SIPp in the foreground as our child; kill it by PID on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, (out + err).decode(errors="replace")[-2000:]


@pytest.fixture(autouse=True)
def _need_sipp() -> None:
    if SIPP is None:
        pytest.skip("why: sipp (Debian sip-tester) not installed")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_our_uac_against_sipp_uas(transport: str, tmp_path: Path) -> None:
    assert SIPP is not None
    port = free_port()
    args = [SIPP, "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-m", str(CALLS)]
    args += ["-nostdin", "-timeout", "60s", "-trace_stat", "-stf", "stats.csv", "-fd", "1"]
    if transport == "tcp":
        args += ["-t", "t1"]
    sipp = asyncio.create_task(run_sipp(args, tmp_path, 80))
    await asyncio.sleep(0.3)  # let SIPp bind (UDP would retransmit anyway; TCP must connect)
    alice = await Phone.start("alice", transport=transport)
    statuses: list[tuple[int, int]] = []
    try:
        for _ in range(CALLS):
            for _attempt in range(20):
                call = await alice.call(f"sip:service@127.0.0.1:{port}")
                if call.status != 503 or transport != "tcp":
                    break
                await asyncio.sleep(0.2)  # SIPp not listening yet
            bye = await call.hangup() if call.status == 200 else 0
            statuses.append((call.status, bye))
        # Keep our connection open until SIPp's scenario (it pauses after the BYE) has ended:
        # SIPp counts a TCP close during its pause as a failed call.
        rc, output = await sipp
    finally:
        if not sipp.done():
            sipp.cancel()  # kills our SIPp child by PID
            with contextlib.suppress(BaseException):
                await sipp
        await alice.close()
    assert statuses == [(200, 200)] * CALLS
    stats = last_stats(tmp_path / "stats.csv")
    assert rc == 0, output
    assert int(stats["SuccessfulCall(C)"]) == CALLS, stats
    assert int(stats["FailedCall(C)"]) == 0, stats


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_our_uas_answers_sipp_uac(transport: str, tmp_path: Path) -> None:
    assert SIPP is not None
    bob = await Phone.start("service", transport=transport, auto_answer=True)
    try:
        args = [SIPP, "-sn", "uac", f"127.0.0.1:{bob.local_addr[1]}", "-i", "127.0.0.1"]
        args += ["-p", str(free_port()), "-s", "service", "-m", str(CALLS), "-r", "10"]
        args += ["-nostdin", "-timeout", "60s", "-trace_stat", "-stf", "stats.csv", "-fd", "1"]
        if transport == "tcp":
            args += ["-t", "t1"]
        rc, output = await run_sipp(args, tmp_path, 80)
    finally:
        await bob.close()
    stats = last_stats(tmp_path / "stats.csv")
    assert rc == 0, output
    assert int(stats["SuccessfulCall(C)"]) == CALLS, stats
    assert int(stats["FailedCall(C)"]) == 0, stats
    ended = [c for c in bob.calls.values() if c.end_reason == "bye"]
    assert len(ended) == CALLS  # every call was torn down by SIPp's BYE, seen by our UAS
