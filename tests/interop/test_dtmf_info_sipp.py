"""DTMF over SIP INFO against SIPp (a peer we did not write): SIPp calls our phone and sends
"5" as application/dtmf-relay (we queue it and answer 200) and a text/plain INFO (we answer
415); our phone then sends "#", and SIPp's scenario checks the body and Content-Type of our
INFO before hanging up."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from callward.ua.phone import Phone
from peers import run_sipp_async, sipp_client_cmd, sipp_counts

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]
SCENARIO = Path(__file__).parent / "scenarios" / "uac_dtmf_info.xml"


async def test_sipp_and_our_phone_exchange_dtmf_info(tmp_path: Path) -> None:
    if shutil.which("sipp") is None:
        pytest.skip("why: sipp (Debian sip-tester) not installed")
    bob = await Phone.start("service", auto_answer=True)
    try:
        args = sipp_client_cmd(
            bob.local_addr[1], calls=1, scenario=("-sf", str(SCENARIO)), stats="stats.csv"
        )
        sipp = asyncio.ensure_future(run_sipp_async(args, tmp_path, 40))
        for _ in range(100):
            if bob.calls:
                break
            await asyncio.sleep(0.05)
        (call,) = bob.calls.values()
        assert await asyncio.wait_for(call.dtmf_received.get(), 10) == "5"
        await asyncio.sleep(0.3)  # SIPp's text/plain INFO (415) comes next, then it waits
        assert await call.send_dtmf("#") == [200]
        rc, output = await sipp
        assert await call.wait_ended(5) == "bye"
    finally:
        await bob.close()
    assert rc == 0, output
    assert sipp_counts(tmp_path / "stats.csv") == (1, 0)
    assert call.dtmf_received.empty(), "the text/plain INFO was not taken as a key press"
