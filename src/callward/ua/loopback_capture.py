"""Capture our own packets on the loopback interface with ``dumpcap`` (Wireshark's capture
engine), so byte counts come from the wire rather than from the sender's own bookkeeping.

Bounded: the capture filter names only our ports (others use loopback at the same time), and
dumpcap stops by itself after ``max_seconds``. The process is ours and stopped by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from pathlib import Path

from callward.errors import CallwardError

__all__ = ["LoopbackCapture", "capture_available"]

MAX_PORTS = 64


def capture_available() -> bool:
    return shutil.which("dumpcap") is not None


class LoopbackCapture:
    """``async with LoopbackCapture(path, udp=[...], tcp=[...]):`` captures packets to or from
    those ports on ``lo`` into a pcapng file."""

    def __init__(
        self, path: Path, *, udp: list[int], tcp: list[int] | None = None, max_seconds: int = 120
    ) -> None:
        ports = [*udp, *(tcp or [])]
        if not ports or len(ports) > MAX_PORTS or any(not 0 < p < 65536 for p in ports):
            raise CallwardError(f"capture needs 1..{MAX_PORTS} valid ports")
        parts = [f"udp port {p}" for p in udp] + [f"tcp port {p}" for p in tcp or []]
        self.filter = " or ".join(parts)
        self.path = path
        self.max_seconds = max_seconds
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> LoopbackCapture:
        exe = shutil.which("dumpcap")
        if exe is None:
            raise CallwardError("dumpcap is not installed (Debian: wireshark-common / tshark)")
        self._proc = await asyncio.create_subprocess_exec(
            exe, "-i", "lo", "-f", self.filter, "-w", str(self.path), "-q",
            "-a", f"duration:{self.max_seconds}",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self._proc.stderr is not None
        try:
            async with asyncio.timeout(10):
                while True:
                    line = await self._proc.stderr.readline()
                    if not line:
                        raise CallwardError("dumpcap exited before capturing")
                    if b"Capturing on" in line:
                        break
        except (TimeoutError, CallwardError):
            await self._stop()
            raise CallwardError("dumpcap did not start capturing on lo") from None
        await asyncio.sleep(0.2)  # the filter is attached just after the banner
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.3)  # let the last packets reach the capture
        await self._stop()

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
