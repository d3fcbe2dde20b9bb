"""Overload and recovery of `callward relay --ng`, with rtpengine-daemon as the peer.

A call is set up through ng on each relay; its caller socket then floods the relay's A-leg
port for a second with no pacing (far beyond what one core forwards: the kernel drops the
excess at the socket), stops, and sends 50 packets paced at 20 ms. A relay that recovers
forwards every one of them. callward must recover from every flood (three in a row): it
reads its sockets until they are empty on every wake-up, so an overload only costs what the
kernel dropped. rtpengine is run on the same traffic for the record (printed with -s, not
asserted: it is the peer, not the subject; in earlier runs it stopped reading an overloaded
socket for good in 11 of 12 floods).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from pathlib import Path

import pytest

from callward.rtp.packet import RtpPacket
from peers import free_port, stop
from relay_vs_rtpengine import setup_calls, start_server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


def flood_then_paced(kind: str, work: Path, floods: int) -> list[tuple[int, int]]:
    """(packets the relay forwarded during the flood, paced packets it forwarded after)."""
    ng = free_port()
    proc = start_server(kind, ng, work)
    gen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gen.bind(("127.0.0.1", 0))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sink.setblocking(False)
    results = []
    try:
        ((port, _, _),) = asyncio.run(
            setup_calls(ng, gen.getsockname()[1], sink.getsockname()[1], False, 1)
        )
        dest = ("127.0.0.1", port)
        seq = 0

        def packet() -> bytes:
            nonlocal seq
            seq += 1
            return bytes(RtpPacket(0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, 0x77, b"\xd5" * 160))

        def drain() -> list[int]:
            got = []
            while True:
                try:
                    data = sink.recv(2048)
                except BlockingIOError:
                    return got
                got.append(int.from_bytes(data[2:4], "big"))

        for _ in range(5):  # latch and warm up
            gen.sendto(packet(), dest)
            time.sleep(0.02)
        time.sleep(0.2)
        drain()
        burst = [packet() for _ in range(60000)]
        for _ in range(floods):
            end = time.monotonic() + 1.0
            i = 0
            while time.monotonic() < end:
                try:
                    gen.sendto(burst[i % len(burst)], dest)
                except BlockingIOError:
                    pass
                i += 1
            time.sleep(0.5)  # the relay works through what the kernel kept
            during = len(drain())
            first = (seq + 1) & 0xFFFF
            paced = {(first + k) & 0xFFFF for k in range(50)}
            for _ in range(50):
                gen.sendto(packet(), dest)
                time.sleep(0.02)
            time.sleep(0.3)
            after = len(paced & set(drain()))
            results.append((during, after))
            burst = [packet() for _ in range(60000)]
    finally:
        stop(proc)
        gen.close()
        sink.close()
    return results


def test_callward_relay_recovers_from_every_flood(tmp_path: Path) -> None:
    results = flood_then_paced("callward", tmp_path, floods=3)
    for during, after in results:
        assert during > 0  # it forwarded while flooded
        assert after == 50, results  # and every paced packet after the flood


def test_rtpengine_under_the_same_floods_for_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("rtpengine") is None:
        pytest.skip("why: rtpengine-daemon not installed")
    results = flood_then_paced("rtpengine", tmp_path, floods=3)
    with capsys.disabled():
        recovered = sum(after == 50 for _, after in results)
        print(f"\nrtpengine: recovered from {recovered} of {len(results)} floods: {results}")
    assert len(results) == 3
