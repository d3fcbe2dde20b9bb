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
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import peers

# One REGISTER of the scenario; the second carries SIPp's computed digest (``[authentication]``).
_REGISTER = """  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:alice@callward.test>;tag=[call_number]
      To: <sip:alice@callward.test>
      Call-ID: [call_id]
      CSeq: {cseq} REGISTER
      Contact: <sip:alice@[local_ip]:[local_port]>{auth}
      Max-Forwards: 70
      Expires: 3600
      Content-Length: 0

    ]]>
  </send>
"""

SCENARIO = (
    '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
    '<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
    '<scenario name="digest register">\n'
    + _REGISTER.format(cseq=1, auth="")
    + '  <recv response="401" auth="true"/>\n'
    + _REGISTER.format(cseq=2, auth="\n      [authentication username=alice password=s3cret]")
    + '  <recv response="200"/>\n'
    "</scenario>\n"
)


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


def bench(
    name: str, proc: subprocess.Popen, port: int, calls: int, rate: int, work: Path
) -> dict[str, Any]:
    """Drive the server ``proc`` (started in its own process group) with the REGISTER scenario."""
    try:
        time.sleep(1.0)  # both start well under a second
        cpu0 = cpu_seconds(proc.pid)
        stats = work / f"stats-{port}.csv"
        cmd = peers.sipp_client_cmd(
            port, calls=calls, rate=rate, scenario=("-sf", str(work / "register.xml")),
            service=None, timeout="90s", stats=stats, extra=("-l", "200"),
        )  # fmt: skip
        run = peers.run_sipp(cmd, work, stats, calls, timeout=120)
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        peers.stop_group(proc)
    return {
        "server": name,
        "reg_per_s": run.ok / run.elapsed,
        "ok": run.ok,
        "failed": run.failed,
        "cpu_ms_per_reg": 1000 * cpu / max(run.ok, 1),
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
        kport, oport = peers.free_port(), peers.free_port()
        kam = peers.kamailio_registrar(work, kport, realm="callward.test", password="s3cret")
        ours = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(oport)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
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
