"""Bytes on the wire of real phone-to-phone calls (two ``callward phone`` processes, no edge).

Each row: ``phone answer`` and ``phone call --capture`` with the same media flags, SDES-SRTP,
a seeded conversation (the caller is party A, the answerer party B); dumpcap captures the call
and ``usage/wire.py`` counts IP bytes per kind and direction. Printed: RTP bytes/min sent by
the caller against the planner (given the talk mask), both directions with RTCP, SIP bytes,
and the optimiser's predicted MOS when ``--optimise`` chose the setting.

    .venv/bin/python benchmarks/usage_phone.py [--seconds 30] [--parallel 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from peers import free_port, stop

CLI = [sys.executable, "-m", "callward.cli", "phone"]
COMBOS: list[tuple[str, ...]] = [
    ("--optimise", "--loss", "1", "--rtt", "120"),
    ("--codec", "opus", "--bitrate", "12000", "--ptime", "60", "--dtx"),
    ("--codec", "opus", "--bitrate", "14000", "--ptime", "40", "--dtx"),
    ("--codec", "pcmu", "--ptime", "20", "--vad"),
    ("--codec", "pcmu", "--ptime", "20"),
]


def run(args: tuple[str, ...], seconds: float, seed: int) -> dict[str, object]:
    port = free_port((24200, 24299))  # economy16's port block
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "call.pcapng"
        media = (*args, "--seed", str(seed), "--srtp", "sdes")
        answering = subprocess.Popen(
            [*CLI, "answer", "--listen", f"127.0.0.1:{port}", "--user", "bob", "--json",
             "--timeout", str(seconds + 60), *media],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            time.sleep(3)
            proc = subprocess.run(
                [*CLI, "call", f"sip:bob@127.0.0.1:{port}", "--user", "alice", "--seconds",
                 str(seconds), "--capture", str(pcap), "--json", *media],
                capture_output=True, text=True, timeout=seconds + 90, check=False,
            )  # fmt: skip
            answering.communicate(timeout=30)
        finally:
            stop(answering)
    if proc.returncode != 0:
        return {"args": " ".join(args), "error": proc.stderr.strip()[-300:]}
    return {"args": " ".join(args), "doc": json.loads(proc.stdout)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--parallel", type=int, default=3)
    opts = ap.parse_args()
    with ThreadPoolExecutor(opts.parallel) as pool:
        results = list(pool.map(lambda a: run(a[1], opts.seconds, 1 + a[0]), enumerate(COMBOS)))
    print(f"{opts.seconds:g} s phone-to-phone calls on lo, SDES-SRTP, dumpcap")
    print(f"{'flags':40} {'sent':22} {'RTP B/min':>9} {'planner':>9} {'ratio':>7} "
          f"{'both+RTCP B/min':>15} {'SIP B':>6} {'MOS (model)':>11}")  # fmt: skip
    for r in results:
        if "error" in r:
            print(f"{r['args']:40} ERROR {r['error']}")
            continue
        doc = r["doc"]
        assert isinstance(doc, dict)
        w, m = doc["wire"], doc["rtp"]
        sent = (f"{m['codec']} {m['bitrate'] // 1000}k {m['ptime_ms']}ms"
                f"{' FEC' if m['fec'] else ''}{' DTX' if m['dtx'] else ''}")  # fmt: skip
        mos = doc.get("optimised", {}).get("mos", "")
        print(f"{r['args']:40} {sent:22} {w['sent_bytes_per_minute']:>9,} "
              f"{w['planned_bytes_per_minute']:>9,} {w['planner_ratio']:>7.4f} "
              f"{w['media_both_directions_bytes_per_minute']:>15,} {w['sip_bytes']:>6,} "
              f"{mos!s:>11}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
