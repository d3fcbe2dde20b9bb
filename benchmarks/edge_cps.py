"""Edge throughput: calls/s and REGISTER/s with zero failed and zero unfinished calls,
callward edge vs Kamailio 5.6 (benchmarks/kamailio/proxy.cfg, an equivalent stateful proxy +
in-memory registrar), both pinned to one core, in the same run; then callward at 2x its
capacity (answered / shed with 503 / failed / hung), the edge's RSS over a long run of calls,
and memory per registered contact.

Method: SIPp uac (built-in INVITE/180/200/ACK/BYE) -> proxy -> SIPp uas, offered rate stepped up
every 250 calls/s (bounded count per step: rate x --seconds calls); a step passes when SIPp
reports zero failed calls and no call left unfinished; the figure is the highest achieved rate
among passing steps. Same for a REGISTER scenario (one new user per call). Overload: the
benchmarks/edge_uac_shed.xml scenario (a 503 is ACKed and ends the call) at twice the best
passing rate; SIPp's message counters tell answered from shed. Every SIPp run is bounded by -m
and -timeout.

Run: ``.venv/bin/python benchmarks/edge_cps.py`` (see --help).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import peers

HERE = Path(__file__).resolve().parent
REG_XML = HERE / "kamailio" / "register.xml"
SHED_XML = HERE / "edge_uac_shed.xml"
PORTS = (21000, 21999)  # the edge area's port block (listening sockets of this benchmark)


def _pin(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if shutil.which("taskset") and os.cpu_count() else []


def sipp_uas(work: Path, port: int) -> contextlib.AbstractContextManager[subprocess.Popen]:
    return peers.sipp_uas(work, port, prefix=_pin("1"))


def callward_edge(work: Path, port: int, uas: int) -> contextlib.AbstractContextManager[object]:
    return peers.callward_edge(
        work,
        "--listen", f"udp:127.0.0.1:{port}", "--no-auth",
        "--route", f"service=sip:service@127.0.0.1:{uas}",
        # Kamailio's proxy.cfg has no rate limiting: the security area's admission buckets
        # (a single SIPp source counts as one account: 50 INVITE/s) are off for the comparison.
        # Timer C 20 s instead of 180 s, so that a call whose callee never answers ends (408)
        # within the run: "every call ends" is then observable.
        config="edge:\n  security_admission: false\n  timer_c: 20\n",
        prefix=_pin("0"),
    )  # fmt: skip


def kamailio(work: Path, port: int, uas: int) -> contextlib.AbstractContextManager[int]:
    return peers.kamailio_proxy(work, port, uas, memory=(256, 16), prefix=_pin("0"), settle=0.5)


def _last_row(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    rows = list(csv.DictReader(path.read_text().splitlines(), delimiter=";"))
    return rows[-1] if rows else {}


def run_sipp(
    work: Path, target: int, rate: int, calls: int, scenario: list[str], counts: bool = False
) -> dict:
    stats = work / f"stats-{target}-{rate}-{time.monotonic_ns()}.csv"
    extra = ["-l", str(max(rate * 4, 100))]
    if counts:
        extra.append("-trace_counts")
    # SIPp may fall behind the offered rate on a busy machine: a call counts as hung only if it
    # is still open well after the edge's own bound on a call's life (Timer B/H: 64*T1, Timer
    # C 20 s), hence twice the nominal duration plus 100 s before SIPp gives up.
    cmd = peers.sipp_client_cmd(
        target, calls=calls, rate=rate, scenario=scenario, timeout=f"{2 * calls // rate + 100}s",
        stats=stats, extra=extra,
    )  # fmt: skip
    started = set(work.glob("*_counts.csv"))
    r = peers.run_sipp([*_pin("1"), *cmd], work, stats, calls, timeout=2 * calls / rate + 130)
    row = _last_row(stats)
    created = int(row.get("OutgoingCall(C)", calls) or calls)
    ok = int(row.get("SuccessfulCall(C)", r.ok) or 0)
    failed = int(row.get("FailedCall(C)", r.failed) or 0)
    # A call SIPp started and neither completed nor failed when it stopped is hung.
    hung = max(0, created - ok - failed)
    out = {"rate": rate, "calls": calls, "ok": ok, "failed": failed, "hung": hung}
    out |= {"rc": r.rc, "elapsed": r.elapsed}
    if counts:
        new = sorted(set(work.glob("*_counts.csv")) - started)
        c = _last_row(new[-1]) if new else {}
        out["answered"] = int(c.get("4_200_Recv", 0) or 0)
        out["shed"] = int(c.get("3_503_Recv", 0) or 0)
    return out


def ramp(work: Path, target: int, rates: list[int], seconds: float, scenario: list[str]) -> dict:
    best: dict = {"rate": 0, "achieved": 0.0}
    steps = []
    for rate in rates:
        calls = int(rate * seconds)
        r = run_sipp(work, target, rate, calls, scenario)
        steps.append(r)
        if r["failed"] or r["hung"] or r["ok"] < calls:
            break
        # A step can pass while falling behind the offered rate (retransmissions stretch it):
        # the figure is the best *achieved* rate among zero-failure steps.
        achieved = round(r["ok"] / r["elapsed"], 1)
        if achieved > best["achieved"]:
            best = {"rate": rate, "achieved": achieved}
    return {"best": best, "steps": steps}


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_curve(work: Path, target: int, pid: int, rate: int, calls: int) -> dict:
    """Run ``calls`` calls at ``rate`` and sample the edge's RSS against calls completed."""
    stats = work / f"rss-{time.monotonic_ns()}.csv"
    cmd = peers.sipp_client_cmd(
        target, calls=calls, rate=rate, timeout=f"{calls // rate + 60}s", stats=stats,
        extra=["-l", str(rate * 4)],
    )  # fmt: skip
    proc = subprocess.Popen(
        [*_pin("1"), *cmd], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    samples: list[tuple[int, int]] = []
    deadline = time.monotonic() + calls / rate + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(1.0)
            row = _last_row(stats)
            done = int(row.get("SuccessfulCall(C)", 0) or 0) + int(row.get("FailedCall(C)", 0) or 0)
            samples.append((done, _rss(pid)))
    finally:
        peers.stop(proc)
    row = _last_row(stats)
    ok, failed = int(row.get("SuccessfulCall(C)", 0) or 0), int(row.get("FailedCall(C)", 0) or 0)
    samples.append((ok + failed, _rss(pid)))

    def at(n: int) -> int:
        return next((r for done, r in samples if done >= n), samples[-1][1])

    tenth, end = at(max(1, calls // 10)), samples[-1][1]
    mb = 2**20
    curve = [(done, round(r / mb, 1)) for done, r in samples[:: max(1, len(samples) // 12)]]
    return {
        "rate": rate, "calls": calls, "ok": ok, "failed": failed,
        "rss_at_10pct_mb": round(tenth / mb, 1), "rss_end_mb": round(end / mb, 1),
        "ratio_end_vs_10pct": round(end / tenth, 2), "curve": curve,
    }  # fmt: skip


def register_memory(n: int) -> dict:
    """Bytes of RSS per contact binding after n REGISTERs through the real core (memory store)."""
    sys.path.insert(0, str(HERE.parent / "src"))
    from callward.edge.answers import StoreAnswers
    from callward.edge.location import MemoryLocation
    from callward.edge.proxy import EdgeCore
    from callward.edge.settings import EdgeSettings
    from callward.sip.peer import Peer

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def fill(loc: MemoryLocation) -> float:
        core = EdgeCore(EdgeSettings(auth=False, domains=("callward.local",)))
        answers = StoreAnswers(loc, None)
        now = time.time()
        t0 = time.perf_counter()
        for i in range(n):
            ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            msg = (
                f"REGISTER sip:callward.local SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {ip}:5060;branch=z9hG4bK{i}\r\n"
                f"From: <sip:u{i}@callward.local>;tag={i}\r\nTo: <sip:u{i}@callward.local>\r\n"
                f"Call-ID: r{i}\r\nCSeq: 1 REGISTER\r\nContact: <sip:u{i}@{ip}:5060>\r\n"
                f"Expires: 3600\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            now += 0.001  # 1000 REGISTER/s of simulated time: within the admission buckets
            core.receive_datagram(msg, Peer("udp", ip, 5060), now)
            while (q := core.next_request()) is not None:  # the adapter's job, inline here
                core.resolve(q.id, answers.answer(q.query, now), now)
            core.datagrams_to_send()
        elapsed = time.perf_counter() - t0
        del core  # finished transactions go with it (in a server, their timers reap them)
        gc.collect()
        return elapsed

    gc.collect()
    before = rss()
    loc = MemoryLocation()
    elapsed = fill(loc)
    after = rss()
    assert loc.count() == n
    # Retained Python heap per binding, measured exactly (tracemalloc), on a second store.
    loc2 = MemoryLocation()
    tracemalloc.start()
    fill(loc2)
    retained = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "contacts": n,
        "heap_bytes_per_contact": round(retained / n),
        "rss_bytes_per_contact": round((after - before) / n),
        "in_process_registers_per_s": round(n / elapsed),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default=",".join(str(r) for r in range(250, 3001, 250)))
    ap.add_argument("--reg-rates", default="500,1000,1500,2000,2500,3000,4000")
    ap.add_argument("--seconds", type=float, default=3.0, help="per step")
    ap.add_argument("--overload-seconds", type=float, default=8.0)
    ap.add_argument("--rss-calls", type=int, default=100_000, help="0: skip the RSS curve")
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for tool in ("sipp", "kamailio"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not installed")
    rates = [int(x) for x in args.rates.split(",")]
    reg_rates = [int(x) for x in args.reg_rates.split(",")]
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, proxy in (("kamailio", kamailio), ("callward", callward_edge)):
            uas, port = peers.free_port(PORTS), peers.free_port(PORTS)
            with sipp_uas(work, uas), proxy(work, port, uas):
                calls = ramp(work, port, rates, args.seconds, ["-sn", "uac"])
                regs = ramp(work, port, reg_rates, args.seconds, ["-sf", str(REG_XML)])
            out[name] = {"calls": calls, "registers": regs}
            print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
        capacity = out["callward"]["calls"]["best"]["rate"] or rates[0]
        uas, port = peers.free_port(PORTS), peers.free_port(PORTS)
        with sipp_uas(work, uas), callward_edge(work, port, uas) as edge:
            rate = 2 * capacity
            over = run_sipp(
                work, port, rate, int(rate * args.overload_seconds), ["-sf", str(SHED_XML)], True
            )
            out["overload"] = over
            print("overload", json.dumps(over), file=sys.stderr, flush=True)
            if args.rss_calls:
                time.sleep(2.0)
                out["rss"] = rss_curve(
                    work, port, edge.pid, max(100, capacity * 3 // 4), args.rss_calls
                )
    out["memory"] = register_memory(args.contacts)
    kc, cc = out["kamailio"]["calls"]["best"], out["callward"]["calls"]["best"]
    kr, cr = out["kamailio"]["registers"]["best"], out["callward"]["registers"]["best"]
    out["ratio_cps"] = round(cc["achieved"] / kc["achieved"], 2) if kc["achieved"] else None
    out["ratio_reg"] = round(cr["achieved"] / kr["achieved"], 2) if kr["achieved"] else None
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print("| proxy | calls/s (0 failed, 0 hung) | offered | REGISTER/s (0 failed) | offered |")
    print("|---|---|---|---|---|")
    for name in ("kamailio", "callward"):
        c, r = out[name]["calls"]["best"], out[name]["registers"]["best"]
        print(f"| {name} | {c['achieved']} | {c['rate']} | {r['achieved']} | {r['rate']} |")
    print(f"ratio callward/kamailio: calls {out['ratio_cps']}, registers {out['ratio_reg']}")
    for name in ("kamailio", "callward"):
        steps = out[name]["calls"]["steps"]
        print(name, "steps:", [(s["rate"], s["ok"], s["failed"], s["hung"]) for s in steps])
    o = out["overload"]
    total = max(1, o["calls"])
    print(
        f"overload at {o['rate']} calls/s offered ({o['calls']} calls): "
        f"{100 * o['answered'] / total:.1f}% answered, {100 * o['shed'] / total:.1f}% shed (503), "
        f"{o['failed']} failed, {o['hung']} hung"
    )
    if "rss" in out:
        r = out["rss"]
        print(
            f"RSS over {r['calls']} calls at {r['rate']}/s ({r['ok']} ok, {r['failed']} failed): "
            f"{r['rss_at_10pct_mb']} MB after 10% -> {r['rss_end_mb']} MB at the end "
            f"(x{r['ratio_end_vs_10pct']}); curve (calls, MB): {r['curve']}"
        )
    m = out["memory"]
    print(
        f"memory at {m['contacts']} contacts (in-memory store): {m['heap_bytes_per_contact']} "
        f"bytes/contact retained heap, {m['rss_bytes_per_contact']} bytes/contact RSS growth; "
        f"{m['in_process_registers_per_s']} REGISTER/s through the core in-process"
    )


if __name__ == "__main__":
    main()
