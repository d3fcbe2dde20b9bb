"""Calls/s with media anchoring: `callward serve` against Kamailio 5.6 + rtpengine, same run.

Both stacks proxy SIPp's built-in uac (INVITE with SDP, 180, 200, ACK, BYE) to SIPp's built-in
uas and anchor every call's media in an ng relay: Kamailio's ``rtpengine`` module drives
rtpengine-daemon (``--num-threads=1``, userspace) with ``benchmarks/kamailio/rtpengine.cfg``
(``children=1``); callward serve's edge drives its own relay (in serve's process, or in
``--workers`` relay processes), with its per-source admission limits off (one SIPp source
sends every call; the Kamailio config has no limits either). Each stack gets a warm-up,
then ``--seconds`` of calls offered at each of ``--rates`` calls/s (at most ``--limit`` in
progress). The figure is the sustained rate: the best successful calls per wall second of a
run in which at most 1 % of the calls failed (above it, callward's edge sheds new INVITEs with
503 by design), with the CPU the stack used per call.

    .venv/bin/python benchmarks/serve_cps_vs_kamailio.py [--rates 100,200,300,400,600]
        [--seconds 5] [--limit 100] [--workers 0]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from peers import (
    CALLWARD_CLI,
    kamailio_media_proxy,
    run_sipp,
    sipp_client_cmd,
    sipp_uas,
    stop,
)

TICK = os.sysconf("SC_CLK_TCK")
SIP, UAS, KAM, NG = 22100, 22101, 22102, 22103  # system17's port block
MEDIA = (22200, 22999)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / TICK  # + children
    return total


def tree(pid: int) -> list[int]:
    out = [pid]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out += tree(int(child))
    return out


@contextlib.contextmanager
def callward_serve(work: Path, workers: int) -> Iterator[list[int]]:
    cfg = work / "callward.yaml"
    cfg.write_text(
        f"storage: {{data_dir: {work / 'var'}}}\n"
        f"edge: {{listen: ['udp:127.0.0.1:{SIP}'], auth: false, security_admission: false,"
        f" routes: {{service: 'sip:service@127.0.0.1:{UAS}'}}}}\n"
        f"media: {{ng_listen: '127.0.0.1:{NG}', rtp_port_min: {MEDIA[0]},"
        f" rtp_port_max: {MEDIA[1]}, relay_workers: {workers}}}\n"
    )
    log = (work / "serve.log").open("w")
    proc = subprocess.Popen([*CALLWARD_CLI, "serve", "--config", str(cfg), "--no-web", "--json"],
                            stdout=subprocess.PIPE, stderr=log, text=True, cwd=work)  # fmt: skip
    try:
        assert proc.stdout is not None
        while json.loads(proc.stdout.readline() or '{"event": "serving"}')["event"] != "serving":
            pass
        yield tree(proc.pid)
    finally:
        stop(proc, grace=20)
        log.close()


@contextlib.contextmanager
def kamailio_rtpengine(work: Path) -> Iterator[list[int]]:
    log = (work / "rtpengine.log").open("w")
    rtpe = subprocess.Popen(
        ["rtpengine", "--foreground", "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{NG}",
         "--table=-1", "--num-threads=1", f"--port-min={MEDIA[0]}", f"--port-max={MEDIA[1]}",
         "--log-level=3", "--log-stderr", "--delete-delay=0"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with kamailio_media_proxy(work, KAM, UAS, NG) as kam:
            yield [rtpe.pid, *tree(kam), *_kamailio_children(kam)]
    finally:
        stop(rtpe)
        log.close()


def _kamailio_children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if p.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                    out.append(int(p.name))
    return out


def measure(kind: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    target = SIP if kind == "callward" else KAM
    stack = callward_serve(work, args.workers) if kind == "callward" else kamailio_rtpengine(work)
    best: dict[str, float] = {"cps": 0.0, "rate": 0, "ok": 0, "failed": 0, "cpu_per_call_ms": 0}
    with sipp_uas(work, UAS), stack as pids:
        warm = sipp_client_cmd(target, calls=50, rate=50, stats=work / "warm.csv")
        run_sipp(warm, work, work / "warm.csv", 50, 60)
        for rate in args.rates:
            calls = rate * args.seconds
            stats = work / f"{kind}-{rate}.csv"
            cmd = sipp_client_cmd(target, calls=calls, rate=rate, stats=stats,
                                  extra=["-l", str(args.limit)])  # fmt: skip
            cpu0 = cpu_seconds(pids)
            res = run_sipp(cmd, work, stats, calls, 300)
            cpu = cpu_seconds(pids) - cpu0
            cps = res.ok / res.elapsed
            print(f"  {kind} offered {rate}/s: ok {res.ok} failed {res.failed} -> {cps:.0f}/s")
            if res.failed <= 0.01 * calls and cps > best["cps"]:
                best = {"cps": cps, "rate": rate, "ok": res.ok, "failed": res.failed,
                        "cpu_per_call_ms": 1000 * cpu / max(1, res.ok)}  # fmt: skip
            time.sleep(2)  # calls of the last run end
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", type=lambda t: [int(x) for x in t.split(",")],
                    default=[100, 200, 300, 400, 600])  # fmt: skip
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--workers", type=int, default=0, help="serve's relay processes")
    args = ap.parse_args()
    for tool in ("sipp", "kamailio", "rtpengine"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="serve-cps-") as tmp:
        for kind in ("callward", "kamailio"):
            work = Path(tmp) / kind
            work.mkdir()
            rows[kind] = measure(kind, args, work)
    load = os.getloadavg()[0]
    print(f"rates {args.rates} x {args.seconds} s, limit {args.limit}, "
          f"serve relay workers {args.workers}, load {load:.1f}")  # fmt: skip
    for kind, r in rows.items():
        name = "callward serve" if kind == "callward" else "kamailio+rtpengine"
        print(f"{name:<20} {r['cps']:8.0f} calls/s sustained (offered {r['rate']:.0f}/s, "
              f"ok {r['ok']:.0f} failed {r['failed']:.0f})  CPU {r['cpu_per_call_ms']:.2f} "
              "ms/call")  # fmt: skip
    ratio = rows["callward"]["cps"] / rows["kamailio"]["cps"]
    print(f"ratio callward/kamailio+rtpengine: {ratio:.2f}")


if __name__ == "__main__":
    main()
