"""Interop with SIPp's built-in scenarios (RFC 3261 call flows written by someone else):
our UAC against ``sipp -sn uas`` and our UAS against ``sipp -sn uac``, over UDP and TCP.
SIPp's own statistics (exit code, SuccessfulCall/FailedCall counters) are the judge."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import pytest

from callward.ua.phone import Phone
from peers import free_port, run_sipp_async, sipp_client_cmd, sipp_counts, sipp_uas_cmd

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

SIPP = shutil.which("sipp")
CALLS = 5
SIPP_TRANSPORT = {"udp": "u1", "tcp": "t1"}
UAS_EXTRA = ("-m", str(CALLS), "-timeout", "60s", "-trace_stat", "-stf", "stats.csv", "-fd", "1")


@pytest.fixture(autouse=True)
def _need_sipp() -> None:
    if SIPP is None:
        pytest.skip("why: sipp (Debian sip-tester) not installed")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_our_uac_against_sipp_uas(transport: str, tmp_path: Path) -> None:
    assert SIPP is not None
    port = free_port()
    args = sipp_uas_cmd(port, transport=SIPP_TRANSPORT[transport], extra=UAS_EXTRA)
    sipp = asyncio.create_task(run_sipp_async(args, tmp_path, 80))
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
    counts = sipp_counts(tmp_path / "stats.csv")
    assert counts is not None, "SIPp wrote no statistics"
    assert rc == 0, output
    assert counts == (CALLS, 0), counts


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_our_uas_answers_sipp_uac(transport: str, tmp_path: Path) -> None:
    assert SIPP is not None
    bob = await Phone.start("service", transport=transport, auto_answer=True)
    try:
        args = sipp_client_cmd(
            bob.local_addr[1], calls=CALLS, rate=10, transport=SIPP_TRANSPORT[transport],
            stats="stats.csv",
        )  # fmt: skip
        rc, output = await run_sipp_async(args, tmp_path, 80)
    finally:
        await bob.close()
    counts = sipp_counts(tmp_path / "stats.csv")
    assert counts is not None, "SIPp wrote no statistics"
    assert rc == 0, output
    assert counts == (CALLS, 0), counts
    ended = [c for c in bob.calls.values() if c.end_reason == "bye"]
    assert len(ended) == CALLS  # every call was torn down by SIPp's BYE, seen by our UAS
