"""Packets/s of `callward analyze` (stream statistics) vs `tshark -z rtp,streams`, same capture.

Usage: .venv/bin/python benchmarks/quality_analyze.py [--packets 1000000] [--streams 50]
       [--format pcap|pcapng] [--repeat 3]

Generates an interleaved multi-stream G.729 capture with 1 % random loss and timing jitter,
runs tshark and our analyser on it in the same run (each in its own process so peak RSS is
measured separately), checks that every stream's lost count is identical, and prints the
speed ratio. Our figure includes reading the file; the capture is never held in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from callward.quality.synth import iter_bulk_rtp, write_pcap, write_pcapng

OURS = r"""
import json, resource, sys, time
from callward.quality.report import analyze_capture
t = time.perf_counter()
rep = analyze_capture(sys.argv[1], mos=sys.argv[2] == "mos")
dt = time.perf_counter() - t
lost = {f"{s.src}:{s.sport}>{s.dst}:{s.dport}/{s.ssrc}": s.stats.lost for s in rep.streams}
pk = sum(s.stats.packets for s in rep.streams)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": dt, "lost": lost, "packets": pk, "rss_kb": rss}))
"""


def run_ours(path: Path, mos: bool) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", OURS, str(path), "mos" if mos else "stats"],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    return json.loads(out.stdout)


def run_tshark(path: Path) -> tuple[float, dict[str, int], int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    out = subprocess.run(
        ["tshark", "-q", "-n", "-r", str(path), "--enable-heuristic", "rtp_udp", "-z",
         "rtp,streams"],
        capture_output=True, text=True, check=True, timeout=1800,
    ).stdout  # fmt: skip
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    lost: dict[str, int] = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 17 and f[6].startswith("0x"):
            r = f[:-1] if f[-1] == "X" else f
            lost[f"{f[2]}:{f[3]}>{f[4]}:{f[5]}/{int(f[6], 16)}"] = int(r[-8])
    return dt, lost, max(rss, before)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--keep", type=Path, default=None, help="reuse/keep the capture here")
    ap.add_argument("--format", choices=["pcap", "pcapng"], default="pcap")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; the best is kept")
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    path = a.keep or Path(tmp.name) / f"bulk.{a.format}"
    if not path.exists():
        writer = write_pcap if a.format == "pcap" else write_pcapng
        writer(path, iter_bulk_rtp(a.packets, a.streams))
    size_mb = os.path.getsize(path) / 1e6
    # Best of --repeat runs per tool, interleaved, so a burst of load from other jobs on the
    # shared machine does not decide the ratio.
    ts_runs, our_runs, full_runs = [], [], []
    for _ in range(a.repeat):
        ts_runs.append(run_tshark(path))
        our_runs.append(run_ours(path, mos=False))
        full_runs.append(run_ours(path, mos=True))
    ts_s, ts_lost, ts_rss = min(ts_runs, key=lambda r: r[0])
    ours = min(our_runs, key=lambda r: r["seconds"])
    full = min(full_runs, key=lambda r: r["seconds"])
    n = ours["packets"]
    same = all(r["lost"] == ts_lost for r in our_runs + full_runs)
    print(f"capture: {a.format}, {n} RTP packets, {a.streams} streams, {size_mb:.0f} MB")
    rows = [
        ("tshark -z rtp,streams", ts_s, ts_rss),
        ("callward analyze (stats)", ours["seconds"], ours["rss_kb"]),
        ("callward analyze + MOS x4", full["seconds"], full["rss_kb"]),
    ]
    for name, sec, rss in rows:
        print(f"{name:26s} {sec:7.2f} s {n / sec:12,.0f} pkt/s  peak RSS {rss / 1024:.0f} MB")
    print(f"speed ratio (ours/tshark, stats): {ts_s / ours['seconds']:.1f}x")
    print(f"speed ratio (ours/tshark, with MOS): {ts_s / full['seconds']:.1f}x")
    print(f"lost counts identical for all {len(ts_lost)} streams: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
