"""Bytes on the wire of real callward calls against the data-usage planner.

Each row is one ``callward demo --json`` call (edge, two phones, SDES-SRTP, RTCP, a seeded
loss/jitter shim, conversational speech from the talk model) captured with dumpcap on lo; the
"peer" is the capture, the planner is told only the settings and the talk model's silences.
Printed per combination: measured and planned RTP bytes/min per direction, their ratio, RTCP,
both directions with RTCP, and the MOS the demo computed (G.107.1/G.107).

    .venv/bin/python benchmarks/usage_wire.py [--seconds 60] [--parallel 4] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CALLWARD = str(Path(sys.executable).with_name("callward"))

COMBOS: list[tuple[str, ...]] = [
    ("--codec", "opus", "--ptime", "60", "--dtx", "--bitrate", "12000"),
    ("--codec", "opus", "--ptime", "60", "--dtx", "--bitrate", "13000"),
    ("--codec", "opus", "--ptime", "40", "--dtx", "--bitrate", "14000"),
    ("--codec", "opus", "--ptime", "20", "--dtx", "--bitrate", "16000"),
    ("--codec", "opus", "--ptime", "20", "--bitrate", "24000", "--no-fec"),
    ("--codec", "opus", "--ptime", "60", "--bitrate", "8000"),
    ("--codec", "pcmu", "--ptime", "20"),
    ("--codec", "pcmu", "--ptime", "20", "--dtx"),
    ("--codec", "pcma", "--ptime", "40", "--dtx"),
    ("--codec", "pcmu", "--ptime", "60", "--dtx"),
    ("--optimise",),
]


def run(args: tuple[str, ...], seconds: float, seed: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [CALLWARD, "demo", "--json", "--data-dir", tmp, "--seconds", str(seconds),
               "--loss", "1", "--jitter", "20", "--seed", str(seed), *args]  # fmt: skip
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=3 * seconds + 60)
        except subprocess.TimeoutExpired:
            return {"args": " ".join(args), "error": "timed out (host overloaded?)"}
    doc = json.loads(out.stdout) if out.stdout.startswith("{") else {}
    if out.returncode != 0 or not doc.get("ok"):
        why = doc.get("failure") or out.stderr.strip()[-300:]
        return {"args": " ".join(args), "error": why}
    return {"args": " ".join(args), "doc": doc}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="10 s calls (a smoke run)")
    ap.add_argument("--only", type=int, nargs="*", help="indexes into COMBOS")
    opts = ap.parse_args()
    seconds = 10.0 if opts.quick else opts.seconds
    chosen = [(i, c) for i, c in enumerate(COMBOS) if not opts.only or i in opts.only]
    with ThreadPoolExecutor(opts.parallel) as pool:
        results = list(pool.map(lambda a: run(a[1], seconds, 1 + a[0]), chosen))
    print(f"{seconds:g} s calls, loss 1 %, jitter U(0, 20 ms), captured with dumpcap on lo")
    print(f"{'setting':48} {'dir':5} {'RTP B/min':>9} {'planner':>9} {'ratio':>7} "
          f"{'RTCP':>6} {'plan':>6} {'both+RTCP':>10} {'MOS':>5}")  # fmt: skip
    worst = 0.0
    for r in results:
        if "error" in r:
            print(f"{r['args']:48} ERROR {r['error']}")
            continue
        doc = r["doc"]
        assert isinstance(doc, dict)
        media = doc["media"]
        name = (f"{media['codec'].split('/')[0]} {media.get('bitrate', 0) // 1000}k "
                f"{media['ptime_ms']}ms{' FEC' if media['fec'] else ''}"
                f"{' DTX' if media['dtx'] else ''}")  # fmt: skip
        both = doc["usage"]["both_directions_with_rtcp_bytes_per_minute"]
        for p, leg in zip(doc["usage"]["per_phone"], doc["legs"], strict=True):
            worst = max(worst, abs(p["ratio"] - 1))
            print(f"{name:48} {p['phone']:5} {p['bytes_per_minute']:>9,} "
                  f"{p['planned_bytes_per_minute']:>9,} {p['ratio']:>7.4f} "
                  f"{p['rtcp_bytes_per_minute']:>6,} {p['planned_rtcp_bytes_per_minute']:>6,} "
                  f"{both:>10,} {leg['mos'] if leg['mos'] is not None else 'n/a':>5}")  # fmt: skip
    print(f"worst |measured/planned - 1| over all directions: {worst:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
