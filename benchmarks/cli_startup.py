"""CLI start-up: `callward --help`, `version`, `mos` and `analyze` on a small capture, and
tshark's `-z rtp,streams` on the same capture as the peer of `analyze`.

References measured in the same run, interleaved with our commands: the bare interpreter
(`python -c pass`) and the CLI framework alone (`python -c "import typer"`), so a loaded
machine shows up in the floors too. Wall time and CPU time (user + sys of the child, from
``getrusage``) per run; the figure is the median of ``--runs`` interleaved runs.

    .venv/bin/python benchmarks/cli_startup.py [--runs 15]

For where the time goes: ``.venv/bin/python -X importtime -m callward.cli version``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _small_capture(path: Path) -> None:
    from callward.quality.synth import RtpSpec, merge, rtp_frames, sip_call, write_pcap

    t = 1_700_000_000.0
    sip = sip_call("c1@bench", t - 1.2, "10.0.0.1", "10.0.0.2", ("10.0.0.1", 40000),
                   ("10.0.0.2", 40002), bye_after_s=6.0)  # fmt: skip
    a = rtp_frames(RtpSpec(count=250, loss=0.02, jitter_ms=10))
    b = rtp_frames(RtpSpec(count=250, ssrc=0x2222, src="10.0.0.2", sport=40002,
                           dst="10.0.0.1", dport=40000))  # fmt: skip
    write_pcap(path, merge(sip, a, b))


def _run(cmd: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall * 1000, cpu * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cap = Path(tmp) / "small.pcap"
        _small_capture(cap)
        py = str(BIN / "python")
        cw = str(BIN / "callward")
        cases = {
            "python -c pass (floor)": [py, "-c", "pass"],
            "python -c 'import typer' (framework floor)": [py, "-c", "import typer"],
            "callward --help": [cw, "--help"],
            "callward version": [cw, "version"],
            "callward mos --codec g711 --loss 1": [cw, "mos", "--codec", "g711", "--loss", "1"],
            f"callward analyze --json small.pcap ({cap.stat().st_size // 1024} kB, 500 RTP)": [
                cw, "analyze", "--json", str(cap)],
            "tshark -q -n -z rtp,streams small.pcap (peer)": [
                "tshark", "-q", "-n", "-r", str(cap), "-z", "rtp,streams"],
        }  # fmt: skip
        for cmd in cases.values():  # warm the page cache and .pyc files
            _run(cmd)
        res: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
        for _ in range(args.runs):
            for name, cmd in cases.items():
                res[name].append(_run(cmd))
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores, "
          f"{args.runs} interleaved runs, median (min)")  # fmt: skip
    print(f"{'command':<62} {'wall ms':>16} {'cpu ms':>16}")
    for name, xs in res.items():
        w = [x[0] for x in xs]
        c = [x[1] for x in xs]
        print(f"{name:<62} {statistics.median(w):8.0f} ({min(w):5.0f}) "
              f"{statistics.median(c):8.0f} ({min(c):5.0f})")  # fmt: skip


if __name__ == "__main__":
    main()
