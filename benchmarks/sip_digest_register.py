"""Digest-authenticated REGISTERs per second: a minimal callward registrar (UDP adapter +
TransactionLayer + DigestVerifier with HMAC nonces and the nc replay window) vs Kamailio 5.6
(sl + auth ``pv_www_authenticate``, MD5, qop=auth), both single-process, driven by the same
SIPp scenario (REGISTER → 401 → REGISTER with Authorization → 200) in the same run.
The Request-URI is the server's address because SIPp puts that in the digest ``uri`` and our
verifier insists they match (RFC 7616 §3.4.6); Kamailio does not check it.

    .venv/bin/python benchmarks/sip_digest_register.py [--calls 2000] [--rate 1000]

Figures: successful registrations/s (SIPp's SuccessfulCall over wall time), failed calls, and
server CPU seconds per 1,000 registrations (from /proc for the server process).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="digest register">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:alice@callward.test>;tag=[call_number]
      To: <sip:alice@callward.test>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:alice@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 3600
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:alice@callward.test>;tag=[call_number]
      To: <sip:alice@callward.test>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:alice@[local_ip]:[local_port]>
      [authentication username=alice password=s3cret]
      Max-Forwards: 70
      Expires: 3600
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""

KAMAILIO_CFG = """#!KAMAILIO
debug=0
log_stderror=yes
fork=no
children=1
auto_aliases=no
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules"
listen=udp:127.0.0.1:{port}
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "auth.so"
modparam("auth", "secret", "benchmark-secret-0123456789")
request_route {{
    if (method=="REGISTER") {{
        if (!pv_www_authenticate("callward.test", "s3cret", "0")) {{
            www_challenge("callward.test", "1");
            exit;
        }}
        sl_send_reply("200", "OK");
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pgid: int) -> float:
    """utime + stime summed over every live process of the process group ``pgid`` (Kamailio
    forks helpers even with fork=no), from /proc, in seconds."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: pgrp
            ticks += sum(int(x) for x in fields[11:13])
    return ticks / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- our registrar (subprocess)


def serve(port: int) -> None:
    from callward.errors import CallwardError
    from callward.sip import make_response, parse_message
    from callward.sip.auth import AuthOutcome, DigestAlgorithm, DigestVerifier, ha1_set
    from callward.sip.transaction import RequestReceived
    from callward.sip.transaction_layer import TransactionLayer

    store = {"alice": ha1_set("alice", "callward.test", "s3cret")}
    verifier = DigestVerifier(
        "callward.test",
        b"benchmark-secret-0123456789abcd",
        lambda u, r, a: store.get(u, {}).get(a.value),
        algorithms=(DigestAlgorithm.MD5,),
        qop=("auth",),
    )

    class Registrar(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.layer = TransactionLayer(auto_trying=False)
            self.transport: Any = None
            self.timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            loop = asyncio.get_running_loop()
            now = loop.time()
            layer = self.layer
            try:
                layer.receive(parse_message(data, strict=False), now, peer=addr)
            except CallwardError:
                return
            while (ev := layer.next_event()) is not None:
                if isinstance(ev, RequestReceived):
                    req = ev.request
                    res = verifier.verify(req, now)
                    if res.ok:
                        resp = make_response(req, 200, to_tag="r")
                    else:
                        stale = res.outcome is AuthOutcome.STALE
                        resp = verifier.challenge_response(req, now, stale=stale, to_tag="r")
                    layer.send_response(ev.key, resp, now)
            self.flush()
            self.rearm(loop)

        def flush(self) -> None:
            for t in self.layer.datagrams_to_send():
                self.transport.sendto(t.data, t.peer)

        def rearm(self, loop: asyncio.AbstractEventLoop) -> None:
            deadline = self.layer.get_timer()
            if deadline is None or (self.timer is not None and self.timer.when() <= deadline):
                return
            if self.timer is not None:
                self.timer.cancel()
            self.timer = loop.call_at(deadline, self.fire)

        def fire(self) -> None:
            loop = asyncio.get_running_loop()
            self.timer = None
            self.layer.handle_timer(loop.time())
            self.flush()
            self.rearm(loop)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            Registrar, local_addr=("127.0.0.1", port)
        )
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 * 1024 * 1024)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# ---------------------------------------------------------------- driver


def run_sipp(port: int, calls: int, rate: int, work: Path) -> tuple[float, int, int]:
    stats = work / f"stats-{port}.csv"
    args = ["sipp", "-sf", str(work / "register.xml"), f"127.0.0.1:{port}", "-i", "127.0.0.1"]
    args += ["-p", str(free_port()), "-m", str(calls), "-r", str(rate), "-l", "200"]
    args += ["-nostdin", "-timeout", "90s", "-trace_stat", "-stf", str(stats), "-fd", "1"]
    start = time.perf_counter()
    subprocess.run(
        args, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120
    )
    elapsed = time.perf_counter() - start
    with stats.open(newline="") as f:
        row = list(csv.DictReader(f, delimiter=";"))[-1]
    return elapsed, int(row["SuccessfulCall(C)"]), int(row["FailedCall(C)"])


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def bench(
    name: str, cmd: list[str], port: int, calls: int, rate: int, work: Path
) -> dict[str, Any]:
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        time.sleep(1.0)  # both start well under a second
        cpu0 = cpu_seconds(proc.pid)
        elapsed, ok, failed = run_sipp(port, calls, rate, work)
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        stop(proc)
    return {
        "server": name,
        "reg_per_s": ok / elapsed,
        "ok": ok,
        "failed": failed,
        "cpu_ms_per_reg": 1000 * cpu / max(ok, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    for tool in ("sipp", "kamailio"):
        if shutil.which(tool) is None:
            print(f"callward: {tool} not installed", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "register.xml").write_text(SCENARIO)
        kport, oport = free_port(), free_port()
        (work / "k.cfg").write_text(KAMAILIO_CFG.format(port=kport))
        kam = ["kamailio", "-f", str(work / "k.cfg"), "-DD", "-E", "-m", "64", "-M", "8"]
        kam += ["-P", str(work / "k.pid"), "-Y", str(work)]
        ours = [sys.executable, __file__, "--serve", str(oport)]
        results = [
            bench("kamailio 5.6 (1 process)", kam, kport, args.calls, args.rate, work),
            bench("callward (1 process)", ours, oport, args.calls, args.rate, work),
        ]
    for r in results:
        print(
            f"{r['server']:28} {r['reg_per_s']:8.0f} reg/s  ok={r['ok']} failed={r['failed']}"
            f"  server CPU {r['cpu_ms_per_reg']:.3f} ms/registration"
        )
    k, c = results
    print(
        f"ratio callward/kamailio: throughput {c['reg_per_s'] / k['reg_per_s']:.2f}, "
        f"CPU per registration {c['cpu_ms_per_reg'] / max(k['cpu_ms_per_reg'], 1e-9):.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
