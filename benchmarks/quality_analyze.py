"""Packets/s of `callward analyze` (stream statistics) vs `tshark -z rtp,streams`, same capture.

Usage: .venv/bin/python benchmarks/quality_analyze.py [--packets 1000000] [--streams 50]
       [--format pcap|pcapng] [--repeat 3] [--shape g729|g711|opus]
       .venv/bin/python benchmarks/quality_analyze.py --suite [--dir DIR] [--repeat 3]

``--suite`` runs the four captures of docs/benchmarks.md (1,000,000 RTP packets each: 100
G.711 streams of 200 s, 1,000 G.729 calls, 10 long Opus streams with SIP/SDP, and the G.711
one as pcapng), generating them once into ``--dir``, and prints one table row per capture.

Shapes: ``g729`` (20-byte payloads, PT 18), ``g711`` (160-byte payloads, PT 0), ``opus``
(60-byte payloads at 48 kHz, PT 111, each stream announced by a SIP INVITE/200 with SDP so
both tools know the codec and MOS is computed for it). ``--streams`` with few packets per
stream gives many short calls. Each generates an interleaved multi-stream capture with 1 %
random loss and timing jitter,
runs tshark and our analyser on it in the same run (each in its own process so peak RSS is
measured separately), checks that every stream's lost count is identical, and prints the
speed ratio. Both figures are whole processes (start-up, reading the file, output); the capture is
never held in memory. Wall time, CPU time and peak RSS
come from each child's own rusage (os.wait4).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from callward.quality.synth import iter_bulk_rtp, merge, sip_call, write_pcap, write_pcapng

SHAPES = {
    "g729": {"pt": 18, "payload_len": 20, "ts_step": 160},
    "g711": {"pt": 0, "payload_len": 160, "ts_step": 160},
    "opus": {"pt": 111, "payload_len": 60, "ts_step": 960},
}


def frames(shape: str, packets: int, streams: int):  # type: ignore[no-untyped-def]
    bulk = iter_bulk_rtp(packets, streams, **SHAPES[shape])
    if shape != "opus":
        return bulk
    sip = [
        sip_call(f"bench-{s}", 1_700_000_000.0 - 2.0, f"10.1.{s // 200}.{s % 200 + 1}",
                 "10.2.0.1", (f"10.1.{s // 200}.{s % 200 + 1}", 20000 + 2 * s),
                 ("10.2.0.1", 30000 + 2 * s), pt=111, codec="opus", rate=48000,
                 ring_after_s=None, answer_after_s=0.5)
        for s in range(streams)
    ]  # fmt: skip
    return itertools.chain(merge(*sip), bulk)


def _run(cmd: list[str], timeout: float) -> tuple[str, int, float, float, int]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()  # the reports are small; reading first avoids a pipe deadlock
    _pid, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t
    return out, proc.returncode, dt, ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def run_ours(path: Path, mos: bool) -> dict:
    """The default command as a user runs it (`callward analyze --json`, with or without
    --no-mos), timed like tshark: the whole process, wall and CPU (user + sys)."""
    cmd = [str(Path(sys.executable).parent / "callward"), "analyze", "--json", str(path)]
    if not mos:
        cmd.append("--no-mos")
    out, rc, dt, cpu, rss = _run(cmd, 900)
    if rc not in (0, 1):  # 1 = a finding (low MOS), still a full report
        raise RuntimeError(f"callward analyze exited {rc}")
    rep = json.loads(out)
    lost = {}
    for s in rep["streams"]:
        src, sport = s["src"].rsplit(":", 1)
        dst, dport = s["dst"].rsplit(":", 1)
        lost[f"{src}:{sport}>{dst}:{dport}/{int(s['ssrc'], 16)}"] = s["lost"]
    packets = sum(s["packets"] for s in rep["streams"])
    return {"seconds": dt, "cpu": cpu, "lost": lost, "packets": packets, "rss_kb": rss}


def run_tshark(path: Path) -> tuple[float, dict[str, int], int, float]:
    cmd = ["tshark", "-q", "-n", "-r", str(path), "--enable-heuristic", "rtp_udp", "-z",
           "rtp,streams"]  # fmt: skip
    out, rc, dt, cpu, rss = _run(cmd, 1800)
    if rc != 0:
        raise RuntimeError(f"tshark exited {rc}")
    lost: dict[str, int] = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 17 and f[6].startswith("0x"):
            r = f[:-1] if f[-1] == "X" else f
            lost[f"{f[2]}:{f[3]}>{f[4]}:{f[5]}/{int(f[6], 16)}"] = int(r[-8])
    return dt, lost, rss, cpu


SUITE = (
    ("100 x G.711, 200 s each, pcap", "g711", 100, "pcap"),
    ("1,000 G.729 calls, 20 s each, pcap", "g729", 1000, "pcap"),
    ("10 Opus streams (SIP+SDP), 2,000 s each, pcap", "opus", 10, "pcap"),
    ("100 x G.711, 200 s each, pcapng", "g711", 100, "pcapng"),
)


def run_case(path: Path, shape: str, packets: int, streams: int, fmt: str, repeat: int) -> dict:
    if not path.exists():
        writer = write_pcap if fmt == "pcap" else write_pcapng
        writer(path, frames(shape, packets, streams))
    # Best of --repeat runs per tool, interleaved, so a burst of load from other jobs on the
    # shared machine does not decide the ratio.
    ts_runs, our_runs, full_runs = [], [], []
    for _ in range(repeat):
        ts_runs.append(run_tshark(path))
        our_runs.append(run_ours(path, mos=False))
        full_runs.append(run_ours(path, mos=True))
    ts_s, ts_lost, ts_rss, ts_cpu = min(ts_runs, key=lambda r: r[0])
    ts_cpu = min(r[3] for r in ts_runs)
    ours = min(our_runs, key=lambda r: r["seconds"])
    full = min(full_runs, key=lambda r: r["seconds"])
    return {
        "size_mb": os.path.getsize(path) / 1e6, "packets": ours["packets"],
        "streams": len(ts_lost), "ts_s": ts_s, "ts_cpu": ts_cpu, "ts_rss": ts_rss,
        "ours_s": ours["seconds"], "ours_cpu": min(r["cpu"] for r in our_runs),
        "full_s": full["seconds"], "full_cpu": min(r["cpu"] for r in full_runs),
        "full_rss": full["rss_kb"],
        "same": all(r["lost"] == ts_lost for r in our_runs + full_runs),
    }  # fmt: skip


def print_case(name: str, r: dict) -> None:
    print(f"capture: {name}: {r['packets']} RTP packets, {r['streams']} streams, "
          f"{r['size_mb']:.0f} MB; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")  # fmt: skip
    rows = [
        ("tshark -z rtp,streams", r["ts_s"], r["ts_cpu"], r["ts_rss"]),
        ("callward analyze --no-mos", r["ours_s"], r["ours_cpu"], None),
        ("callward analyze (MOS x4)", r["full_s"], r["full_cpu"], r["full_rss"]),
    ]
    for label, sec, cpu, rss in rows:
        mem = f"  peak RSS {rss / 1024:.0f} MB" if rss else ""
        print(f"{label:26s} {sec:7.2f} s wall {cpu:7.2f} s cpu "
              f"{r['packets'] / sec:12,.0f} pkt/s{mem}")  # fmt: skip
    print(f"ratio (tshark/ours), stats: {r['ts_s'] / r['ours_s']:.1f}x wall, "
          f"{r['ts_cpu'] / r['ours_cpu']:.1f}x cpu")  # fmt: skip
    print(f"ratio (tshark/ours), default with MOS: {r['ts_s'] / r['full_s']:.1f}x wall, "
          f"{r['ts_cpu'] / r['full_cpu']:.1f}x cpu")  # fmt: skip
    print(f"peak RSS ours (with MOS) / tshark: {r['full_rss'] / max(r['ts_rss'], 1):.2f}")
    print(f"lost counts identical for all {r['streams']} streams: {r['same']}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--keep", type=Path, default=None, help="reuse/keep the capture here")
    ap.add_argument("--format", choices=["pcap", "pcapng"], default="pcap")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; the best is kept")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="g729")
    ap.add_argument("--suite", action="store_true", help="the four captures of the docs")
    ap.add_argument("--dir", type=Path, default=None, help="--suite: keep the captures here")
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    ok = True
    if a.suite:
        d = a.dir or Path(tmp.name)
        d.mkdir(parents=True, exist_ok=True)
        table = []
        for name, shape, streams, fmt in SUITE:
            path = d / f"{shape}-{streams}-{a.packets}.{fmt}"
            r = run_case(path, shape, a.packets, streams, fmt, a.repeat)
            print_case(name, r)
            ok = ok and r["same"]
            table.append(
                f"| {name}, {r['size_mb']:.0f} MB | {r['ts_cpu']:.2f} s ({r['ts_s']:.2f} s) | "
                f"{r['ours_cpu']:.2f} s ({r['ours_s']:.2f} s) | "
                f"{r['ts_cpu'] / r['ours_cpu']:.1f}x ({r['ts_s'] / r['ours_s']:.1f}x) | "
                f"{r['full_cpu']:.2f} s ({r['full_s']:.2f} s) | "
                f"**{r['ts_cpu'] / r['full_cpu']:.1f}x** ({r['ts_s'] / r['full_s']:.1f}x) | "
                f"{r['full_rss'] / 1024:.0f}/{r['ts_rss'] / 1024:.0f} MB |"
            )
        print()
        print(
            "| capture | tshark CPU (wall) | analyze --no-mos CPU (wall) | ratio CPU (wall) "
            "| analyze default CPU (wall) | ratio CPU (wall) | peak RSS ours/tshark |"
        )
        print("|---|---|---|---|---|---|---|")
        print("\n".join(table))
    else:
        path = a.keep or Path(tmp.name) / f"bulk.{a.format}"
        r = run_case(path, a.shape, a.packets, a.streams, a.format, a.repeat)
        print_case(f"{a.shape}, {a.format}", r)
        ok = r["same"]
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
