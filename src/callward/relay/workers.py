"""``callward serve``'s relay processes (``media.relay_workers``): media off the edge's loop.

Each worker is ``callward relay --ng HOST:0 --worker``: an ng daemon in its own process with
its own slice of the media port range and node id ``<relay_node_id>-w<k>``. serve's edge
drives the workers over ng like any relays (weights, ping health checks, one relay per call)
and turns each ``delete`` reply's per-leg statistics into MediaStats on serve's bus
(``edge/relays.py``), so the CDR is written once, in serve, with the relay's measurements.

A worker learns its settings from ``CALLWARD_…`` environment variables (no file to share),
prints its ng address as one JSON line, and stops on SIGTERM or when its stdin closes, which
is when serve exits, however it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field

from callward.config import CallwardConfig
from callward.errors import ConfigError, TransportError

__all__ = ["RelayWorkers", "port_slices"]

START_TIMEOUT_S = 30.0  # a Python start-up on a loaded host


def port_slices(lo: int, hi: int, n: int) -> list[tuple[int, int]]:
    """``n`` disjoint ranges of [lo, hi], each starting on an even port with room for at
    least one RTP/RTCP pair per leg of a call (4 ports)."""
    size = (hi - lo + 1) // n
    size -= size % 2
    if size < 4:
        raise ConfigError(f"media.rtp_port_min/max {lo}-{hi}: too few ports for {n} relay workers")
    start = lo + lo % 2
    out = []
    for k in range(n):
        a = start + k * size
        out.append((a, min(hi, a + size - 1)))
    if out[-1][0] + 3 > hi:
        raise ConfigError(f"media.rtp_port_min/max {lo}-{hi}: too few ports for {n} workers")
    return out


def _env(cfg: CallwardConfig, k: int, ports: tuple[int, int]) -> dict[str, str]:
    m = cfg.media
    env = {key: v for key, v in os.environ.items() if not key.startswith("CALLWARD_MEDIA__")}
    values = {
        "RTP_PORT_MIN": ports[0], "RTP_PORT_MAX": ports[1],
        "RELAY_NODE_ID": f"{m.relay_node_id}-w{k + 1}", "RELAY_ADDRESS": m.relay_address,
        "DSCP_MEDIA": m.dscp_media, "RTP_TIMEOUT_S": m.rtp_timeout_s,
        "HOLD_TIMEOUT_S": m.hold_timeout_s, "STATS_INTERVAL_S": m.stats_interval_s,
        "MAX_CALLS": m.max_calls,
    }  # fmt: skip
    env.update({f"CALLWARD_MEDIA__{key}": str(v) for key, v in values.items()})
    env["CALLWARD_QUALITY__BASE_DELAY_MS"] = str(cfg.quality.base_delay_ms)
    env["CALLWARD_STORAGE__DATA_DIR"] = str(cfg.storage.data_dir)
    return env


@dataclass
class RelayWorkers:
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)

    @classmethod
    async def spawn(cls, cfg: CallwardConfig) -> RelayWorkers:
        m = cfg.media
        host = m.ng_listen.rpartition(":")[0] or "127.0.0.1"
        workers = cls()
        try:
            for k, ports in enumerate(port_slices(m.rtp_port_min, m.rtp_port_max, m.relay_workers)):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "callward.cli", "relay", "--ng", f"{host}:0",
                    "--json", "--worker",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    env=_env(cfg, k, ports),
                )  # fmt: skip
                workers.procs.append(proc)
            for proc in workers.procs:
                workers.addresses.append(await _listening(proc))
        except BaseException:
            await workers.stop()
            raise
        return workers

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self.procs.clear()


async def _listening(proc: asyncio.subprocess.Process) -> str:
    """The worker's ng address from its ``relay_listening`` line (log lines may come first)."""
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while True:
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), deadline - loop.time())
        except TimeoutError:
            line = b""
        if not line:
            raise TransportError("a relay worker did not start (see its error above)")
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("event") == "relay_listening":
            return str(msg["ng"])
